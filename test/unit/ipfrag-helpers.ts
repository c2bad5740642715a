/**
 * Builders for the fragmentation tests: a whole UDP datagram, and hand-made pieces of one.
 */
import { Ipv4Packet, IP_PROTO_UDP, writeIpv4Header } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { UdpRepr } from '../../src/wire/udp.js';
import { internetChecksum, setU16 } from '../../src/wire/checksum.js';
import { fragmentIpv4 } from '../../src/wire/ipv4-fragment.js';

export const SRC = ipToU32('198.18.0.1')!;
export const DST = ipToU32('10.66.1.7')!;

/** Deterministic payload bytes. */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** A whole IPv4/UDP datagram with DF clear (so it may be fragmented). */
export function udpDatagram(payload: Uint8Array, ident = 0x4242, dontFrag = false): Uint8Array {
  const repr = { srcPort: 40000, dstPort: 9, payload };
  const udpLen = UdpRepr.bufferLen(repr);
  const p = new Uint8Array(20 + udpLen);
  UdpRepr.emit(repr, p, 20, SRC, DST);
  writeIpv4Header(p, 0, SRC, DST, IP_PROTO_UDP, udpLen, 64, 0, ident, dontFrag);
  return p;
}

/** The datagram cut into pieces of at most `mtu` bytes, each a separate array. */
export function fragments(datagram: Uint8Array, mtu: number): Uint8Array[] {
  const out = new Uint8Array(datagram.length * 2 + 1024);
  const lengths: number[] = [];
  const r = fragmentIpv4(datagram, mtu, out, 0, lengths);
  if (typeof r !== 'number') throw new Error(`fragmentIpv4 refused: ${r}`);
  const pieces: Uint8Array[] = [];
  let o = 0;
  for (const l of lengths) {
    pieces.push(out.slice(o, o + l));
    o += l;
  }
  return pieces;
}

/**
 * One hand-made piece: `data` at byte offset `off` (a multiple of 8), MF as given, of a
 * datagram with identification `ident` (protocol UDP; the data is whatever the test wants).
 */
export function piece(off: number, data: Uint8Array, more: boolean, ident = 7, src = SRC): Uint8Array {
  const p = new Uint8Array(20 + data.length);
  writeIpv4Header(p, 0, src, DST, IP_PROTO_UDP, data.length, 64, 0, ident, false);
  setU16(p, 6, (more ? 0x2000 : 0) | (off >>> 3));
  p[10] = 0;
  p[11] = 0;
  setU16(p, 10, internetChecksum(p, 0, 20));
  p.set(data, 20);
  return p;
}

/** Wrap a packet in a fresh, validated view (throws in the test if it is not valid). */
export function view(p: Uint8Array): Ipv4Packet {
  const ip = new Ipv4Packet();
  const bad = ip.wrap(p, 0, p.length);
  if (bad !== undefined) throw new Error(`invalid test packet: ${bad}`);
  return ip;
}

/** Fisher–Yates with a seeded LCG. */
export function shuffle<T>(a: T[], seed: number): T[] {
  const r = [...a];
  let x = seed >>> 0;
  for (let i = r.length - 1; i > 0; i--) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const j = x % (i + 1);
    [r[i], r[j]] = [r[j], r[i]];
  }
  return r;
}
