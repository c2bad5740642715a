#!/usr/bin/env bash
# Installs everything tunroute and its lab need on a fresh Debian 12 machine (as root), then
# builds the native addon and the TypeScript. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run this as root (sudo bash scripts/install.sh): it installs Debian packages." >&2
  exit 1
fi

# The runtime: Node 20 or newer (Debian 12's own nodejs is 18, too old).
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "install.sh: tunroute needs Node.js 20 or newer on PATH (found: $(node --version 2>/dev/null || echo none)); install it, then run this again." >&2
  exit 1
fi

# iproute2 (ip, netns), build tools and OpenSSL's headers for the addon (the tunnel's
# ChaCha20-Poly1305 runs in C against the libcrypto Node itself links), and the lab's real programs: a SOCKS5
# server (dante, microsocks; OpenSSH's ssh -D and shadowsocks-libev's ss-local for the SOCKS5
# client's tests), traffic tools (ping, curl, iperf3, dig), a resolver (dnsmasq),
# a WireGuard peer (wireguard-go, wg), tcpdump, sockperf for the benchmark, an HTTP CONNECT proxy
# (tinyproxy) for the HTTP outbound's tests, Chromium for the dashboard's browser test, and tmux for
# the `status --watch` test.
pkgs=(iproute2 python3 make g++ libssl-dev iputils-ping curl iperf3 dante-server microsocks dnsutils dnsmasq-base
      wireguard-go wireguard-tools tcpdump procps sockperf openssh-server openssh-client shadowsocks-libev
      tinyproxy chromium tmux nftables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian enables dante's (and shadowsocks-libev's) service on install; the tests start their own.
for svc in danted shadowsocks-libev tinyproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

# systemd-resolved for the lab's resolved test (test/e2e/resolved.test.ts), unpacked, NOT installed:
# installing it would rewrite this host's /etc/resolv.conf. The test runs this copy inside a lab
# namespace, with a private mount namespace and a D-Bus of its own.
RESOLVED_DIR=/var/cache/tunroute-lab/systemd-resolved
if [ ! -x "$RESOLVED_DIR/lib/systemd/systemd-resolved" ] && dpkg -s systemd >/dev/null 2>&1; then
  dl=$(mktemp -d)
  chmod 755 "$dl"
  if (cd "$dl" && apt-get download -qq systemd-resolved 2>/dev/null || { apt-get update -qq && apt-get download -qq systemd-resolved; }); then
    mkdir -p "$RESOLVED_DIR"
    dpkg -x "$dl"/systemd-resolved_*.deb "$RESOLVED_DIR"
  else
    echo "install.sh: could not download systemd-resolved: the lab's resolved test will be skipped." >&2
  fi
  rm -rf "$dl"
fi

# The user `tunroute up` becomes once the device is open and the routes are applied (it keeps
# CAP_NET_ADMIN only; see src/privileges.ts). A system user of its own, shared with no other daemon.
if ! id -u tunroute >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tunroute
fi

npm ci --no-audit --no-fund
npm run build
echo "install.sh: done."
