#!/usr/bin/env python3
"""Send a deterministic burst of malformed IPv4 packets toward a TUN device (lab use only).

Run it inside a lab network namespace where --dst is routed into the TUN device that tunroute
reads. Every packet is wrong in exactly one way (the kind), with everything else valid, so the
daemon's drop counters can be compared with the JSON summary printed at the end. Kinds are
named after tunroute's drop reasons (src/wire/drop.ts), plus random_bytes.

Two ways to inject:
  --mode ip      (default) a raw socket with IP_HDRINCL, sendto(--dst): the kernel routes the
                 packet into the TUN. Linux rewrites part of the header on this path
                 (net/ipv4/raw.c raw_send_hdrinc). Measured with --verify on kernel 6.18: it
                 always sets the total length to the real length and recomputes the header
                 checksum (it would also fill id and source if they were 0; we never send 0),
                 and refuses with EINVAL packets shorter than 20 bytes, with IHL < 5 or with
                 IHL*4 beyond their length. So bad_total_length and bad_header_checksum arrive
                 repaired (listed under kernel_rewrites), too_short and bad_ihl never arrive
                 (counted as refused_by_kernel), and about a third of random_bytes is refused
                 while the rest arrives with a repaired length and checksum.
  --mode packet  an AF_PACKET socket bound to --dev (the TUN device): the bytes reach the
                 TUN reader exactly as built, nothing rewritten or refused.

To keep the outcome predictable even when the kernel repairs a header, every IP-level kind
carries an ICMP echo request with a wrong checksum: a repaired packet is still dropped, as
bad_icmp_checksum. TCP kinds are SYNs (a stack that skipped a check would try to open a flow,
which a test can see).

--verify checks all this on this kernel: it creates its own TUN device (only inside a named
network namespace, as `ip netns identify` reports; it refuses to run in the host's), routes --dst into it, sends the
burst, reads the device and reports per kind how many packets arrived unchanged, rewritten
(and which header fields) or not at all.

usage: malformed-burst.py --dst 10.66.1.7 --count 2000 --seed 1 [--mode ip|packet] [--dev tun0]
                          [--src IP] [--pps 20000] [--kinds k1,k2] [--list-kinds] [--verify]
"""
import argparse
import errno
import fcntl
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time

MAX_COUNT = 1_000_000
MAX_PPS = 1_000_000

KINDS = [
    "random_bytes",
    "too_short",
    "bad_version",
    "bad_ihl",
    "bad_total_length",
    "bad_header_checksum",
    "fragment",
    "bad_tcp_offset",
    "bad_tcp_options",
    "bad_tcp_checksum",
    "bad_udp_length",
    "bad_udp_checksum",
    "bad_icmp_checksum",
]

# What the kernel does to each kind on the --mode ip path (see the module docstring).
KERNEL_REWRITES_IP = {
    "bad_total_length": "total length is set to the real packet length",
    "bad_header_checksum": "the header checksum is recomputed",
}

PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17


def csum(data: bytes) -> int:
    """RFC 1071 internet checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def wrong(good: int, rng: random.Random) -> int:
    """A checksum that is neither the right one nor 0 (0 means 'none' for UDP)."""
    while True:
        v = rng.randrange(1, 0x10000)
        if v != good and not (good == 0 and v == 0xFFFF) and not (good == 0xFFFF and v == 0):
            return v


class Builder:
    def __init__(self, src: str, dst: str, rng: random.Random):
        self.src = socket.inet_aton(src)
        self.dst = socket.inet_aton(dst)
        self.rng = rng

    def ip(self, proto: int, payload: bytes, *, version=4, ihl=5, tot_len=None, flags_frag=0x4000,
           check=None, options=b"") -> bytes:
        r = self.rng
        header_len = 20 + len(options)
        if tot_len is None:
            tot_len = header_len + len(payload)
        ident = r.randrange(1, 0x10000)  # non-zero, so the kernel keeps it
        hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tot_len, ident, flags_frag, 64, proto, 0,
                          self.src, self.dst) + options
        good = csum(hdr)
        c = good if check is None else check(good)
        hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
        return hdr + payload

    def pseudo(self, proto: int, length: int) -> bytes:
        return self.src + self.dst + struct.pack("!BBH", 0, proto, length)

    def icmp_echo(self, bad_checksum: bool, size=None) -> bytes:
        r = self.rng
        data = bytes(r.randrange(256) for _ in range(size if size is not None else r.randrange(0, 64)))
        body = struct.pack("!BBHHH", 8, 0, 0, r.randrange(1, 0x10000), r.randrange(0x10000)) + data
        good = csum(body)
        c = wrong(good, r) if bad_checksum else good
        return body[:2] + struct.pack("!H", c) + body[4:]

    def tcp(self, *, doff=5, options=b"", bad_checksum=False, fix_doff_field=None) -> bytes:
        r = self.rng
        field = doff if fix_doff_field is None else fix_doff_field
        hdr = struct.pack("!HHIIBBHHH", r.randrange(1024, 65536), r.choice([80, 443, 8080]), r.randrange(2**32), 0,
                          (field & 0xF) << 4, 0x02, 64240, 0, 0) + options
        seg = hdr
        good = csum(self.pseudo(PROTO_TCP, len(seg)) + seg)
        c = wrong(good, r) if bad_checksum else good
        return seg[:16] + struct.pack("!H", c) + seg[18:]

    def udp(self, *, bad_checksum=False, length_field=None) -> bytes:
        r = self.rng
        data = bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))
        length = 8 + len(data)
        field = length if length_field is None else length_field
        dgram = struct.pack("!HHHH", r.randrange(1024, 65536), 9, field, 0) + data
        good = csum(self.pseudo(PROTO_UDP, field) + dgram)  # as a receiver would compute it
        if good == 0:
            good = 0xFFFF
        c = wrong(good, r) if bad_checksum else good
        return dgram[:6] + struct.pack("!H", c) + dgram[8:]

    # One builder per kind: wrong in exactly that way.
    def build(self, kind: str) -> bytes:
        r = self.rng
        bad_icmp = lambda: self.icmp_echo(bad_checksum=True)  # noqa: E731
        if kind == "random_bytes":
            return bytes(r.randrange(256) for _ in range(r.randrange(1, 1401)))
        if kind == "too_short":
            return self.ip(PROTO_ICMP, bad_icmp())[: r.randrange(1, 20)]
        if kind == "bad_version":
            return self.ip(PROTO_ICMP, bad_icmp(), version=r.choice([0, 1, 2, 3, 5, 6, 7, 15]))
        if kind == "bad_ihl":
            if r.random() < 0.5:
                return self.ip(PROTO_ICMP, bad_icmp(), ihl=r.randrange(0, 5))
            # IHL pointing past the end of the packet (the kernel refuses this in --mode ip).
            p = self.ip(PROTO_ICMP, self.icmp_echo(True, size=0))
            return self.ip(PROTO_ICMP, self.icmp_echo(True, size=0), ihl=15, tot_len=len(p))
        if kind == "bad_total_length":
            payload = bad_icmp()
            if r.random() < 0.5:
                tot = 20 + len(payload) + r.randrange(1, 1000)  # claims more than arrived
            else:
                tot = r.randrange(0, 20)  # shorter than its own header
            return self.ip(PROTO_ICMP, payload, tot_len=tot)
        if kind == "bad_header_checksum":
            return self.ip(PROTO_ICMP, bad_icmp(), check=lambda good: wrong(good, r))
        if kind == "fragment":
            if r.random() < 0.5:
                ff = 0x2000  # MF, offset 0: a first fragment
            else:
                ff = r.randrange(1, 0x2000) | (0x2000 if r.random() < 0.5 else 0)  # later fragment
            return self.ip(PROTO_ICMP, bad_icmp(), flags_frag=ff)
        if kind == "bad_tcp_offset":
            if r.random() < 0.5:
                seg = self.tcp(fix_doff_field=r.randrange(0, 5))  # shorter than the fixed header
            else:
                seg = self.tcp(fix_doff_field=15)  # 60 bytes claimed, 20 present
            return self.ip(PROTO_TCP, seg)
        if kind == "bad_tcp_options":
            # MSS option whose length runs past the header (kind 2, len 10 in a 4-byte option area).
            return self.ip(PROTO_TCP, self.tcp(doff=6, options=bytes([2, 10, 5, 0xB4])))
        if kind == "bad_tcp_checksum":
            return self.ip(PROTO_TCP, self.tcp(bad_checksum=True))
        if kind == "bad_udp_length":
            if r.random() < 0.5:
                return self.ip(PROTO_UDP, self.udp(length_field=r.randrange(0, 8)))
            return self.ip(PROTO_UDP, self.udp(length_field=r.randrange(200, 2000)))
        if kind == "bad_udp_checksum":
            return self.ip(PROTO_UDP, self.udp(bad_checksum=True))
        if kind == "bad_icmp_checksum":
            return self.ip(PROTO_ICMP, bad_icmp())
        raise ValueError(kind)


def default_src(dst: str) -> str:
    """The address the kernel would use toward dst (a UDP connect sends nothing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return s.getsockname()[0]
    finally:
        s.close()


# --- --verify: a private TUN device in a throwaway namespace -------------------------------

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
VERIFY_DEV = "mbverify0"
VERIFY_ADDR = "10.253.0.1"
HEADER_FIELDS = [(0, 1, "version/ihl"), (2, 4, "total_length"), (4, 6, "id"), (6, 8, "flags/fragment"),
                 (10, 12, "header_checksum"), (12, 16, "source")]


def current_netns_name() -> str:
    """The name of the named namespace we run in (ip netns identify), or '' (e.g. the host's)."""
    try:
        r = subprocess.run(["ip", "netns", "identify", str(os.getpid())], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class VerifyTun:
    """A TUN device of our own, with dst routed into it; reads everything the kernel writes."""

    def __init__(self, dst: str, mode: str):
        if not current_netns_name():
            raise SystemExit("malformed-burst: --verify adds a device and a route; it runs only inside a named "
                             "lab network namespace (ip netns exec NAME ...), never in the host's")
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", VERIFY_DEV.encode(), IFF_TUN | IFF_NO_PI))
        for cmd in (["ip", "link", "set", VERIFY_DEV, "up", "txqueuelen", "10000"],
                    ["ip", "addr", "add", VERIFY_ADDR + "/32", "dev", VERIFY_DEV],
                    ["ip", "route", "replace", dst + "/32", "dev", VERIFY_DEV, "src", VERIFY_ADDR]):
            subprocess.run(cmd, check=True, timeout=10)
        self.received = []
        self.mode = mode

    def drain(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return
            while True:
                try:
                    self.received.append(os.read(self.fd, 65536))
                except BlockingIOError:
                    break

    def close(self) -> None:
        os.close(self.fd)  # the device (not persistent) and its routes go with the fd


def compare(sent_log, received):
    """Match packets in order; report per kind unchanged / rewritten (fields) / missing."""
    out = {}
    j = 0
    for kind, pkt in sent_log:
        row = out.setdefault(kind, {"unchanged": 0, "rewritten": 0, "missing": 0, "fields_rewritten": []})
        # The kernel may interleave its own packets: look a little ahead for a match.
        match = None
        for k in range(j, min(j + 8, len(received))):
            got = received[k]
            if got == pkt or (len(got) == len(pkt) and got[20:] == pkt[20:] and got[8:10] == pkt[8:10]
                              and got[16:20] == pkt[16:20]):
                match = k
                break
        if match is None:
            row["missing"] += 1
            continue
        got = received[match]
        j = match + 1
        if got == pkt:
            row["unchanged"] += 1
            continue
        row["rewritten"] += 1
        for a, b, name in HEADER_FIELDS:
            if got[a:b] != pkt[a:b] and name not in row["fields_rewritten"]:
                row["fields_rewritten"].append(name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dst", help="destination address (routed into the TUN)")
    ap.add_argument("--src", help="source address in the headers (default: the route's source)")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=["ip", "packet"], default="ip")
    ap.add_argument("--dev", help="TUN device for --mode packet")
    ap.add_argument("--pps", type=int, default=20000, help="packets per second (0: no pacing)")
    ap.add_argument("--kinds", help="comma-separated subset of kinds (default: all)")
    ap.add_argument("--list-kinds", action="store_true")
    ap.add_argument("--verify", action="store_true", help="send into a TUN of our own and report what arrives")
    a = ap.parse_args()

    if a.list_kinds:
        print("\n".join(KINDS))
        return 0
    if not a.dst:
        ap.error("--dst is required")
    if not 1 <= a.count <= MAX_COUNT:
        ap.error(f"--count must be 1..{MAX_COUNT}")
    if not 0 <= a.pps <= MAX_PPS:
        ap.error(f"--pps must be 0..{MAX_PPS}")
    kinds = KINDS if not a.kinds else a.kinds.split(",")
    for k in kinds:
        if k not in KINDS:
            ap.error(f"unknown kind {k} (see --list-kinds)")
    verify = VerifyTun(a.dst, a.mode) if a.verify else None
    if verify and a.mode == "packet":
        a.dev = VERIFY_DEV
    if a.mode == "packet" and not a.dev:
        ap.error("--mode packet needs --dev (the TUN device)")

    try:
        src = a.src or default_src(a.dst)
    except OSError as e:
        print(f"malformed-burst: cannot find a source address toward {a.dst} ({e}); pass --src", file=sys.stderr)
        return 2

    rng = random.Random(a.seed)
    builder = Builder(src, a.dst, rng)
    plan = [kinds[i % len(kinds)] for i in range(a.count)]
    rng.shuffle(plan)

    if a.mode == "ip":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # implies IP_HDRINCL
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        target = (a.dst, 0)
    else:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        sock.bind((a.dev, 0x0800))
        target = (a.dev, 0x0800)

    sent = {k: 0 for k in kinds}
    refused = {k: 0 for k in kinds}
    errors = {}
    sent_log = []
    start = time.perf_counter()
    for i, kind in enumerate(plan):
        pkt = builder.build(kind)
        if a.pps and i % 32 == 0:
            due = start + i / a.pps
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        for attempt in range(50):  # bounded retry when the queue is full
            try:
                sock.sendto(pkt, target)
                sent[kind] += 1
                if verify:
                    sent_log.append((kind, pkt))
                break
            except OSError as e:
                name = errno.errorcode.get(e.errno, str(e.errno))
                if e.errno in (errno.ENOBUFS, errno.EAGAIN) and attempt < 49:
                    time.sleep(0.001)
                    continue
                errors[name] = errors.get(name, 0) + 1
                refused[kind] += 1
                break
        if verify and i % 64 == 63:
            verify.drain()
    sock.close()
    elapsed = time.perf_counter() - start

    rewrites = KERNEL_REWRITES_IP if a.mode == "ip" else {}
    expected = {}
    for k, n in sent.items():
        if k == "random_bytes" or n == 0:
            continue
        reason = "bad_icmp_checksum" if k in rewrites else k
        expected[reason] = expected.get(reason, 0) + n
    summary = {
        "mode": a.mode,
        "dst": a.dst,
        "src": src,
        "seed": a.seed,
        "count": a.count,
        "sent": sent,
        "refused_by_kernel": refused,
        "errors": errors,
        "total_sent": sum(sent.values()),
        "total_refused_by_kernel": sum(refused.values()),
        "kernel_rewrites": {k: v for k, v in rewrites.items() if k in kinds},
        "expected_drops": expected,
        "unpredictable": sent.get("random_bytes", 0),
        "seconds": round(elapsed, 3),
    }
    if verify:
        verify.drain(0.3)
        summary["verify"] = compare(sent_log, verify.received)
        summary["verify_received"] = len(verify.received)
        verify.close()
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
