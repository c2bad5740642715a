/**
 * Shared pieces of the WireGuard unit tests: repeatable randomness, two peers on a fake
 * network driven by a ManualClock, and an ICMP echo builder.
 */
import { createHash } from 'node:crypto';
import { ManualClock } from '../../src/clock.js';
import type { Datagram, Endpoint } from '../../src/wireguard/endpoint.js';
import { StaticIdentity } from '../../src/wireguard/handshake.js';
import { generatePrivateKey, type RandomSource } from '../../src/wireguard/keys.js';
import { Peer, type PeerOptions } from '../../src/wireguard/peer.js';
import { ICMP_ECHO_REQUEST, IcmpRepr } from '../../src/wire/icmp.js';
import { IP_PROTO_ICMP, writeIpv4Header } from '../../src/wire/ipv4.js';

export function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}
export function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** A deterministic RandomSource: SHA-256 of (seed, counter) blocks. */
export function seededRandom(seed: string): RandomSource {
  let n = 0;
  return (len: number) => {
    const out = new Uint8Array(len);
    for (let off = 0; off < len; off += 32) {
      const block = createHash('sha256').update(`${seed}/${n++}`).digest();
      out.set(block.subarray(0, Math.min(32, len - off)), off);
    }
    return out;
  };
}

/** An IPv4 ICMP echo request of `dataLen` bytes of payload. */
export function icmpEcho(src: number, dst: number, seq: number, dataLen = 56, type: 0 | 8 = ICMP_ECHO_REQUEST): Uint8Array {
  const data = new Uint8Array(dataLen);
  for (let i = 0; i < dataLen; i++) data[i] = (i + seq) & 0xff;
  const icmpLen = 8 + dataLen;
  const pkt = new Uint8Array(20 + icmpLen);
  IcmpRepr.emit({ type, ident: 0x1234, seq, data }, pkt, 20);
  writeIpv4Header(pkt, 0, src, dst, IP_PROTO_ICMP, icmpLen, 64, 0, seq, true);
  return pkt;
}

export const IP_A = 0x0a630001; // 10.99.0.1 inside the tunnel
export const IP_B = 0x0a630002;
export const EP_A: Endpoint = { address: '192.0.2.1', port: 51820 };
export const EP_B: Endpoint = { address: '192.0.2.2', port: 51821 };

export interface Pair {
  clock: ManualClock;
  wall: { ms: number };
  a: Peer;
  b: Peer;
  keys: { a: Uint8Array; b: Uint8Array; psk: Uint8Array | undefined };
  /** Where each peer "is" on the fake network (roaming tests move them). */
  where: Map<Peer, Endpoint>;
}

/** A (initiator, knows B's endpoint) and B (responder, learns A's endpoint). */
export function makePair(opts: {
  seed?: string;
  psk?: boolean;
  a?: Partial<PeerOptions>;
  b?: Partial<PeerOptions>;
} = {}): Pair {
  const seed = opts.seed ?? 'pair';
  const clock = new ManualClock(1_000_000);
  const wall = { ms: Date.UTC(2026, 10, 21, 12, 0, 0) };
  const ka = generatePrivateKey(seededRandom(`${seed}/key-a`));
  const kb = generatePrivateKey(seededRandom(`${seed}/key-b`));
  const psk = opts.psk ? seededRandom(`${seed}/psk`)(32) : undefined;
  const ida = new StaticIdentity(ka);
  const idb = new StaticIdentity(kb);
  const a = new Peer({
    local: ida,
    publicKey: idb.publicKey,
    presharedKey: psk,
    endpoint: EP_B,
    random: seededRandom(`${seed}/rand-a`),
    wallClock: () => wall.ms,
    ...opts.a,
  });
  const b = new Peer({
    local: idb,
    publicKey: ida.publicKey,
    presharedKey: psk,
    random: seededRandom(`${seed}/rand-b`),
    wallClock: () => wall.ms,
    ...opts.b,
  });
  const where = new Map<Peer, Endpoint>([
    [a, EP_A],
    [b, EP_B],
  ]);
  return { clock, wall, a, b, keys: { a: ka, b: kb, psk }, where };
}

export interface Delivery {
  /** IP packets each peer delivered. */
  toA: Uint8Array[];
  toB: Uint8Array[];
  /** Every datagram that crossed the fake network, in order, with its sender. */
  trace: { from: 'a' | 'b'; data: Uint8Array }[];
}

/**
 * Deliver `datagrams` sent by `sender` and everything the receivers answer, until quiet.
 * `drop` can lose datagrams on purpose.
 */
export function deliver(
  p: Pair,
  sender: Peer,
  datagrams: Datagram[],
  drop: (d: Datagram, from: 'a' | 'b') => boolean = () => false,
): Delivery {
  const res: Delivery = { toA: [], toB: [], trace: [] };
  const queue: { from: Peer; d: Datagram }[] = datagrams.map((d) => ({ from: sender, d }));
  for (let guard = 0; queue.length > 0 && guard < 10_000; guard++) {
    const { from, d } = queue.shift() as { from: Peer; d: Datagram };
    const fromName = from === p.a ? 'a' : 'b';
    res.trace.push({ from: fromName, data: d.data });
    if (drop(d, fromName)) continue;
    const to = from === p.a ? p.b : p.a;
    const toEp = p.where.get(to) as Endpoint;
    if (d.to.address !== toEp.address || d.to.port !== toEp.port) continue; // sent to where nobody is
    const r = to.receive(p.clock.now(), d.data, p.where.get(from) as Endpoint);
    (to === p.a ? res.toA : res.toB).push(...r.packets);
    for (const out of r.datagrams) queue.push({ from: to, d: out });
  }
  return res;
}

/** Advance the clock to `until`, running both peers' timers at each deadline on the way. */
export function runUntil(p: Pair, until: number, drop?: (d: Datagram, from: 'a' | 'b') => boolean): Delivery {
  const all: Delivery = { toA: [], toB: [], trace: [] };
  for (let guard = 0; guard < 100_000; guard++) {
    const next = Math.min(p.a.pollAt() ?? Infinity, p.b.pollAt() ?? Infinity);
    if (next > until) break;
    if (next > p.clock.now()) {
      p.wall.ms += next - p.clock.now();
      p.clock.set(next);
    }
    for (const peer of [p.a, p.b]) {
      const d = deliver(p, peer, peer.poll(p.clock.now()), drop);
      all.toA.push(...d.toA);
      all.toB.push(...d.toB);
      all.trace.push(...d.trace);
    }
  }
  if (until > p.clock.now()) {
    p.wall.ms += until - p.clock.now();
    p.clock.set(until);
  }
  return all;
}

/** Move both the monotonic clock and the wall clock forward. */
export function advance(p: Pair, ms: number): void {
  p.clock.advance(ms);
  p.wall.ms += ms;
}

export function typeOf(d: Uint8Array): number {
  return d[0];
}
