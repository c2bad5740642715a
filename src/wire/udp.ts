/**
 * UDP header (RFC 768).
 *
 *      0      7 8     15 16    23 24    31
 *     +--------+--------+--------+--------+
 *     |     Source      |   Destination   |
 *     |      Port       |      Port       |
 *     +--------+--------+--------+--------+
 *     |                 |                 |
 *     |     Length      |    Checksum     |
 *     +--------+--------+--------+--------+
 *     |
 *     |          data octets ...
 *     +---------------- ...
 *
 * Length counts header + data. The checksum covers the pseudo-header (see `pseudoHeaderSum`),
 * the header and the data; over IPv4 a transmitted 0 means "no checksum", so a computed 0 is
 * sent as 0xffff (its ones'-complement twin).
 */
import { ByteView } from './view.js';
import {
  checksumAdjust,
  checksumAdjust32,
  getU16 as rd16,
  pseudoHeaderSum,
  setU16 as wr16,
  sum16,
} from './checksum.js';
import type { DropReason } from './drop.js';
import { IP_PROTO_UDP, IPV4_HEADER_LEN, writeIpv4Header } from './ipv4.js';

const SRC_PORT = 0; // 0..2
const DST_PORT = 2; // 2..4
const LENGTH = 4; //   4..6
const CHECKSUM = 6; // 6..8

export const UDP_HEADER_LEN = 8;

/**
 * A re-pointable view of one UDP datagram. `wrap()` validates the length field; the view's
 * length is the Length field (bytes beyond it are ignored). Setters keep a present checksum
 * valid by incremental update and leave an absent one (0) absent. A failed wrap leaves an
 * empty view whose getters read 0.
 */
export class UdpPacket extends ByteView {

  /**
   * `len` is the IP payload length. The Length field must be at least 8 and no more than the
   * bytes present; fewer bytes claimed than present is accepted (RFC 768 lets IP carry slack).
   * Never throws. The checksum is checked separately (`verifyChecksum`).
   */
  wrap(buf: Uint8Array, off: number, len: number): DropReason | undefined {
    this.clear();
    const avail = Math.min(len, buf.length - off);
    if (!(off >= 0) || !(avail >= UDP_HEADER_LEN)) return 'too_short';
    const l = rd16(buf, off + LENGTH);
    if (l < UDP_HEADER_LEN || l > avail) return 'bad_udp_length';
    this.wrapUnchecked(buf, off, l);
    return undefined;
  }

  get srcPort(): number { return rd16(this.b, this.o + SRC_PORT); }
  get dstPort(): number { return rd16(this.b, this.o + DST_PORT); }
  /** The Length field (header + data). */
  get lengthField(): number { return rd16(this.b, this.o + LENGTH); }
  get checksum(): number { return rd16(this.b, this.o + CHECKSUM); }
  get payloadOffset(): number { return this.o + UDP_HEADER_LEN; }
  get payloadLen(): number { return this.n - UDP_HEADER_LEN; }

  /** The data as a subarray (allocates a view object; hot paths use the offsets). */
  payload(): Uint8Array {
    return this.b.subarray(this.o + UDP_HEADER_LEN, this.o + this.n);
  }

  /** True when intact, or when the sender sent no checksum (0, allowed over IPv4). */
  verifyChecksum(srcIp: number, dstIp: number): boolean {
    if (this.checksum === 0) return true;
    return sum16(this.b, this.o, this.n, pseudoHeaderSum(srcIp, dstIp, IP_PROTO_UDP, this.n)) === 0xffff;
  }

  /** Compute and store the checksum (0 is stored as 0xffff). */
  fillChecksum(srcIp: number, dstIp: number): void {
    const c = this.o + CHECKSUM;
    this.b[c] = 0;
    this.b[c + 1] = 0;
    const v = ~sum16(this.b, this.o, this.n, pseudoHeaderSum(srcIp, dstIp, IP_PROTO_UDP, this.n)) & 0xffff;
    wr16(this.b, c, v === 0 ? 0xffff : v);
  }

  setChecksum(v: number): void {
    wr16(this.b, this.o + CHECKSUM, v);
  }

  /** After an address in the pseudo-header changed (NAT-style rewrite of the IP header). */
  adjustChecksumForAddress(oldAddr: number, newAddr: number): void {
    const c = this.o + CHECKSUM;
    const cs = rd16(this.b, c);
    if (cs === 0) return;
    const v = checksumAdjust32(cs, oldAddr, newAddr >>> 0);
    wr16(this.b, c, v === 0 ? 0xffff : v);
  }

  private setWord(at: number, v: number): void {
    const i = this.o + at;
    const old = rd16(this.b, i);
    wr16(this.b, i, v);
    const c = this.o + CHECKSUM;
    const cs = rd16(this.b, c);
    if (cs === 0) return;
    const nv = checksumAdjust(cs, old, v & 0xffff);
    wr16(this.b, c, nv === 0 ? 0xffff : nv);
  }

  setSrcPort(v: number): void { this.setWord(SRC_PORT, v); }
  setDstPort(v: number): void { this.setWord(DST_PORT, v); }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

function emitUdp(repr: UdpRepr, buf: Uint8Array, off: number, srcIp: number, dstIp: number): number {
  const total = UDP_HEADER_LEN + repr.payload.length;
  wr16(buf, off + SRC_PORT, repr.srcPort);
  wr16(buf, off + DST_PORT, repr.dstPort);
  wr16(buf, off + LENGTH, total);
  buf[off + CHECKSUM] = 0;
  buf[off + CHECKSUM + 1] = 0;
  if (repr.payload.length > 0) buf.set(repr.payload, off + UDP_HEADER_LEN);
  const v = ~sum16(buf, off, total, pseudoHeaderSum(srcIp, dstIp, IP_PROTO_UDP, total)) & 0xffff;
  wr16(buf, off + CHECKSUM, v === 0 ? 0xffff : v);
  return total;
}

export const UdpRepr = {
  /** Read a datagram that `wrap()` accepted; the payload is a subarray (no copy). */
  parse(p: UdpPacket): UdpRepr {
    return { srcPort: p.srcPort, dstPort: p.dstPort, payload: p.payload() };
  },

  /** Header + payload bytes that `emit` writes. */
  bufferLen(repr: UdpRepr): number {
    return UDP_HEADER_LEN + repr.payload.length;
  },

  /**
   * Write the datagram at `buf[off]` with its checksum (always sent); returns the length
   * (`bufferLen`; `buf` must have that much room).
   */
  emit(repr: UdpRepr, buf: Uint8Array, off: number, srcIp: number, dstIp: number): number {
    return emitUdp(repr, buf, off, srcIp, dstIp);
  },
};

/**
 * Write a whole IPv4 + UDP packet at `buf[off]` (20-byte IP header, DF set, both checksums) and
 * return its length. The caller keeps the payload within 65,507 bytes.
 */
export function emitUdpIpv4(
  repr: UdpRepr,
  buf: Uint8Array,
  off: number,
  srcIp: number,
  dstIp: number,
  ttl = 64,
  ident = 0,
): number {
  const l = emitUdp(repr, buf, off + IPV4_HEADER_LEN, srcIp, dstIp);
  writeIpv4Header(buf, off, srcIp, dstIp, IP_PROTO_UDP, l, ttl, 0, ident, true);
  return IPV4_HEADER_LEN + l;
}
