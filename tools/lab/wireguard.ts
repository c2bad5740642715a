/**
 * wireguard-go (Debian's userspace WireGuard) as a lab peer: the reference `tunroute up
 * --tunnel` is tested and benchmarked against. Needs `wireguard-go` and `wg` (wireguard-tools).
 *
 * wireguard-go runs in the foreground (`-f`) as a tracked LabProcess, so the lab waits for it
 * and stops it on destroy (it removes its interface and UAPI socket on SIGTERM; deleting the
 * namespace removes the interface in any case). Its UAPI socket,
 * /var/run/wireguard/<ifname>.sock, lives in the host's file system and not in the namespace:
 * two instances, in any namespaces, need different interface names.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Namespace } from './netns.js';
import { LabError, type LabProcess } from './process.js';
import { readyOrDie, requireBinary } from './servers.js';

export interface WireguardGoPeer {
  /** The peer's public key, 32 bytes. */
  publicKey: Uint8Array;
  /** wg(8) AllowedIPs, e.g. '10.8.0.2/32' or ['10.8.0.0/16', '10.9.0.0/16']. */
  allowedIPs: string | readonly string[];
  /** 'HOST:PORT'; without it, wireguard-go learns the endpoint from the peer's first handshake. */
  endpoint?: string;
  persistentKeepalive?: number;
}

export interface WireguardGoOptions {
  /** This end's private key, 32 bytes. */
  privateKey: Uint8Array;
  listenPort: number;
  /** The interface's address with prefix, e.g. '10.8.0.1/16'. */
  address: string;
  peers: readonly WireguardGoPeer[];
  /** Interface MTU; default: wireguard-go's own (1420, as wg-quick's). */
  mtu?: number;
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const READY_TIMEOUT_MS = 10_000;

function keyText(key: Uint8Array, what: string): string {
  if (key.length !== 32) throw new LabError(`startWireguardGo: ${what} must be 32 bytes, got ${key.length}`);
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The wg(8) setconf file for `opts` (keys in base64). */
function setconf(opts: WireguardGoOptions): string {
  const lines = ['[Interface]', `PrivateKey = ${keyText(opts.privateKey, 'privateKey')}`, `ListenPort = ${opts.listenPort}`];
  for (const p of opts.peers) {
    const allowed = typeof p.allowedIPs === 'string' ? [p.allowedIPs] : p.allowedIPs;
    lines.push('', '[Peer]', `PublicKey = ${keyText(p.publicKey, 'peer publicKey')}`, `AllowedIPs = ${allowed.join(', ')}`);
    if (p.endpoint !== undefined) lines.push(`Endpoint = ${p.endpoint}`);
    if (p.persistentKeepalive !== undefined) lines.push(`PersistentKeepalive = ${p.persistentKeepalive}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * wireguard-go on `ifname` in `ns`, configured with `wg setconf`, addressed and up. Resolves
 * once its UAPI socket answers and the interface is configured; if it exits first or the setup
 * fails, it is stopped and the error carries its output.
 */
export async function startWireguardGo(ns: Namespace, ifname: string, opts: WireguardGoOptions): Promise<LabProcess> {
  const bin = requireBinary('wireguard-go', 'wireguard-go');
  const wg = requireBinary('wg', 'wireguard-tools');
  if (!IFNAME_RE.test(ifname)) throw new LabError(`startWireguardGo: bad interface name ${JSON.stringify(ifname)}: 1-15 of [A-Za-z0-9_.-]`);
  if (!Number.isInteger(opts.listenPort) || opts.listenPort < 1 || opts.listenPort > 65535) throw new LabError(`startWireguardGo: bad port ${opts.listenPort}`);
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 576 || opts.mtu > 65535)) throw new LabError(`startWireguardGo: bad MTU ${opts.mtu}`);
  const confFile = join(ns.lab.tmpDir, `${ifname}.setconf`);
  writeFileSync(confFile, setconf(opts), { mode: 0o600 });
  const sock = `/var/run/wireguard/${ifname}.sock`;
  const proc = ns.spawn([bin, '-f', ifname], { name: `wireguard-go-${ifname}` });
  const configure = async (): Promise<void> => {
    // A stale socket of an earlier instance may still be there until wireguard-go replaces it:
    // ready is when `wg show` gets an answer.
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (proc.exited) throw new LabError(`exited (${proc.exitStatus?.signal ?? `code ${proc.exitStatus?.code}`})`);
      if (existsSync(sock) && (await ns.exec([wg, 'show', ifname], { allowFail: true, timeoutMs: 5000 })).code === 0) break;
      if (Date.now() >= deadline) throw new LabError(`no answer on ${sock} within ${READY_TIMEOUT_MS} ms`);
      await sleep(50);
    }
    await ns.exec([wg, 'setconf', ifname, confFile], { timeoutMs: 10_000 });
    await ns.exec(['ip', 'addr', 'add', opts.address, 'dev', ifname], { timeoutMs: 10_000 });
    if (opts.mtu !== undefined) await ns.exec(['ip', 'link', 'set', ifname, 'mtu', String(opts.mtu)], { timeoutMs: 10_000 });
    await ns.exec(['ip', 'link', 'set', ifname, 'up'], { timeoutMs: 10_000 });
  };
  return readyOrDie(proc, configure(), `wireguard-go on ${ifname} in ${ns.name}`);
}
