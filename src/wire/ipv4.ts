/**
 * IPv4 header (RFC 791 §3.1), a view over bytes plus a small Repr for building headers.
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |Version|  IHL  |Type of Service|          Total Length         |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |         Identification        |Flags|      Fragment Offset    |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  Time to Live |    Protocol   |         Header Checksum       |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                       Source Address                          |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Destination Address                        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Options                    |    Padding    |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Flags: bit 0 reserved (must be zero), bit 1 DF (don't fragment), bit 2 MF (more fragments).
 * Type of Service is DSCP (6 bits) + ECN (2 bits) since RFC 2474 / RFC 3168.
 * Addresses are handled as uint32 numbers (`>>> 0`), network order: 10.0.0.1 = 0x0a000001;
 * their text forms (dotted quads, CIDRs) are parsed and printed by net/ipv4.ts.
 */
import { ByteView } from './view.js';
import {
  checksumAdjust,
  checksumAdjust32,
  getU16 as rd16,
  getU32 as rd32,
  internetChecksum,
  setU16 as wr16,
  setU32 as wr32,
  sum16,
} from './checksum.js';
import type { DropReason } from './drop.js';

// Byte offsets of the fields (ranges in comments are [start, end)).
const VER_IHL = 0; //    0..1
const TOS = 1; //        1..2
const LENGTH = 2; //     2..4
const IDENT = 4; //      4..6
const FLG_OFF = 6; //    6..8   3 bits flags, 13 bits offset in 8-byte units
const TTL = 8; //        8..9
const PROTOCOL = 9; //   9..10
const CHECKSUM = 10; //  10..12
const SRC_ADDR = 12; //  12..16
const DST_ADDR = 16; //  16..20

/** Length of a header without options. */
export const IPV4_HEADER_LEN = 20;
/** Largest header: IHL 15. */
export const IPV4_MAX_HEADER_LEN = 60;

export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const IP_PROTO_UDP = 17;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const OFFSET_MASK = 0x1fff;

/**
 * A re-pointable view of one IPv4 packet. `wrap()` validates; after it returns `undefined`
 * every accessor is in bounds. Setters write in place and keep the header checksum valid by
 * incremental update (RFC 1624), so a checksum that was right stays right. A failed wrap
 * leaves an empty view whose getters read 0 (never the previous packet, never a throw).
 */
export class Ipv4Packet extends ByteView {

  /**
   * Point the view at `len` bytes of `buf` from `off` and validate the header. A buffer longer
   * than Total Length is accepted (link padding, batch slack): the view is trimmed to Total
   * Length. Returns why the packet must be dropped, or `undefined`; never throws.
   * Fragments are accepted: `isFragment` tells the caller, whose decision it is.
   * `checkChecksum = false` skips only the header-checksum test.
   */
  wrap(buf: Uint8Array, off: number, len: number, checkChecksum = true): DropReason | undefined {
    this.clear(); // a failed wrap leaves an empty view, never the previous packet
    const avail = Math.min(len, buf.length - off);
    if (!(off >= 0) || !(avail >= IPV4_HEADER_LEN)) return 'too_short';
    const vi = buf[off + VER_IHL];
    if (vi >>> 4 !== 4) return 'bad_version';
    const hl = (vi & 0x0f) << 2;
    if (hl < IPV4_HEADER_LEN || hl > avail) return 'bad_ihl';
    const total = rd16(buf, off + LENGTH);
    if (total < hl || total > avail) return 'bad_total_length';
    if (checkChecksum && sum16(buf, off, hl) !== 0xffff) return 'bad_header_checksum';
    this.wrapUnchecked(buf, off, total);
    return undefined;
  }

  /**
   * For the packet quoted inside an ICMP error (RFC 792: header + first 8 bytes): the header
   * must be whole and sane, the payload may be cut short. The view's length is the smaller of
   * Total Length and the bytes present. The header checksum is not checked: NATs on the way
   * rewrite quoted addresses without always fixing it, and the quote is information to match
   * against a flow, not a packet to process.
   */
  wrapTruncated(buf: Uint8Array, off: number, len: number): DropReason | undefined {
    this.clear();
    const avail = Math.min(len, buf.length - off);
    if (!(off >= 0) || !(avail >= IPV4_HEADER_LEN)) return 'too_short';
    const vi = buf[off + VER_IHL];
    if (vi >>> 4 !== 4) return 'bad_version';
    const hl = (vi & 0x0f) << 2;
    if (hl < IPV4_HEADER_LEN || hl > avail) return 'bad_ihl';
    const total = rd16(buf, off + LENGTH);
    if (total < hl) return 'bad_total_length';
    this.wrapUnchecked(buf, off, Math.min(total, avail));
    return undefined;
  }

  get version(): number { return this.b[this.o + VER_IHL] >>> 4; }
  /** Header length in bytes (IHL × 4), options included. */
  get headerLen(): number { return (this.b[this.o + VER_IHL] & 0x0f) << 2; }
  get tos(): number { return this.b[this.o + TOS] | 0; }
  get dscp(): number { return this.b[this.o + TOS] >>> 2; }
  get ecn(): number { return this.b[this.o + TOS] & 0x03; }
  get totalLen(): number { return rd16(this.b, this.o + LENGTH); }
  get ident(): number { return rd16(this.b, this.o + IDENT); }
  /** The 3 flag bits (reserved, DF, MF) as a number 0..7. */
  get flags(): number { return this.b[this.o + FLG_OFF] >>> 5; }
  get dontFrag(): boolean { return (rd16(this.b, this.o + FLG_OFF) & FLAG_DF) !== 0; }
  get moreFrags(): boolean { return (rd16(this.b, this.o + FLG_OFF) & FLAG_MF) !== 0; }
  /** Fragment offset in bytes (the field counts 8-byte units). */
  get fragOffset(): number { return (rd16(this.b, this.o + FLG_OFF) & OFFSET_MASK) << 3; }
  /** MF set or a non-zero offset: this packet is one piece of a larger datagram. */
  get isFragment(): boolean { return (rd16(this.b, this.o + FLG_OFF) & (FLAG_MF | OFFSET_MASK)) !== 0; }
  get ttl(): number { return this.b[this.o + TTL] | 0; }
  get protocol(): number { return this.b[this.o + PROTOCOL] | 0; }
  get checksum(): number { return rd16(this.b, this.o + CHECKSUM); }
  get src(): number { return rd32(this.b, this.o + SRC_ADDR); }
  get dst(): number { return rd32(this.b, this.o + DST_ADDR); }
  /** Absolute index in `buffer` where the payload (the transport header) starts. */
  get payloadOffset(): number { return this.o + this.headerLen; }
  get payloadLen(): number { return this.n - this.headerLen; }
  /** Options bytes: absolute index and length (0 when IHL is 5). */
  get optionsOffset(): number { return this.o + IPV4_HEADER_LEN; }
  get optionsLen(): number { return this.headerLen - IPV4_HEADER_LEN; }

  /** The payload as a subarray (allocates a view object; hot paths use the offsets). */
  payload(): Uint8Array {
    return this.b.subarray(this.payloadOffset, this.o + this.n);
  }

  /** Sum over the header including the checksum field is 0xffff when it is intact. */
  verifyChecksum(): boolean {
    return sum16(this.b, this.o, this.headerLen) === 0xffff;
  }

  /** Compute the header checksum from scratch and store it. */
  fillChecksum(): void {
    const b = this.b;
    const o = this.o;
    b[o + CHECKSUM] = 0;
    b[o + CHECKSUM + 1] = 0;
    wr16(b, o + CHECKSUM, internetChecksum(b, o, this.headerLen));
  }

  /** Store a checksum as is (no update of anything). */
  setChecksum(v: number): void {
    wr16(this.b, this.o + CHECKSUM, v);
  }

  private setWord(at: number, v: number): void {
    const i = this.o + at;
    const old = rd16(this.b, i);
    wr16(this.b, i, v);
    wr16(this.b, this.o + CHECKSUM, checksumAdjust(rd16(this.b, this.o + CHECKSUM), old, v & 0xffff));
  }

  setTos(v: number): void {
    this.setWord(VER_IHL, (this.b[this.o + VER_IHL] << 8) | (v & 0xff));
  }
  setIdent(v: number): void {
    this.setWord(IDENT, v);
  }
  /** Total Length; also sets the view's length (the caller guarantees the bytes exist). */
  setTotalLen(v: number): void {
    this.setWord(LENGTH, v);
    this.n = v & 0xffff;
  }
  setDontFrag(df: boolean): void {
    const w = rd16(this.b, this.o + FLG_OFF);
    this.setWord(FLG_OFF, df ? w | FLAG_DF : w & ~FLAG_DF);
  }
  setTtl(v: number): void {
    this.setWord(TTL, ((v & 0xff) << 8) | this.b[this.o + PROTOCOL]);
  }
  setProtocol(v: number): void {
    this.setWord(TTL, (this.b[this.o + TTL] << 8) | (v & 0xff));
  }
  setSrc(addr: number): void {
    this.setAddr(SRC_ADDR, addr);
  }
  setDst(addr: number): void {
    this.setAddr(DST_ADDR, addr);
  }

  private setAddr(at: number, addr: number): void {
    const b = this.b;
    const old = rd32(b, this.o + at);
    wr32(b, this.o + at, addr);
    wr16(b, this.o + CHECKSUM, checksumAdjust32(rd16(b, this.o + CHECKSUM), old, addr >>> 0));
  }
}

/** What an IPv4 header says, minus options and fragmentation (we never fragment). */
export interface Ipv4Repr {
  src: number;
  dst: number;
  protocol: number;
  /** Bytes after the header. */
  payloadLen: number;
  ttl: number;
  /** Default 0. */
  tos?: number;
  /** Default 0 (fine with DF set: RFC 6864 §4.1 — atomic datagrams need no unique ID). */
  ident?: number;
  /** Default false. */
  dontFrag?: boolean;
}

export const Ipv4Repr = {
  /**
   * Read a header that `wrap()` validated. Options are not carried (nothing we build needs
   * them) and all TTL values are accepted: we terminate flows, we do not route.
   */
  parse(p: Ipv4Packet): Ipv4Repr {
    return {
      src: p.src,
      dst: p.dst,
      protocol: p.protocol,
      payloadLen: p.payloadLen,
      ttl: p.ttl,
      tos: p.tos,
      ident: p.ident,
      dontFrag: p.dontFrag,
    };
  },

  /** Bytes `emit` writes: the 20-byte header (the payload is the caller's). */
  bufferLen(_repr: Ipv4Repr): number {
    return IPV4_HEADER_LEN;
  },

  /** Write a 20-byte header with a valid checksum at `buf[off]`; returns 20. */
  emit(repr: Ipv4Repr, buf: Uint8Array, off: number): number {
    writeIpv4Header(
      buf, off, repr.src, repr.dst, repr.protocol, repr.payloadLen, repr.ttl,
      repr.tos ?? 0, repr.ident ?? 0, repr.dontFrag ?? false,
    );
    return IPV4_HEADER_LEN;
  },
};

/**
 * Write a 20-byte header with its checksum (no allocation): the building block of the
 * `emit…Ipv4` helpers of the transport modules.
 */
export function writeIpv4Header(
  buf: Uint8Array,
  off: number,
  src: number,
  dst: number,
  protocol: number,
  payloadLen: number,
  ttl: number,
  tos: number,
  ident: number,
  dontFrag: boolean,
): void {
  buf[off + VER_IHL] = 0x45;
  buf[off + TOS] = tos;
  wr16(buf, off + LENGTH, IPV4_HEADER_LEN + payloadLen);
  wr16(buf, off + IDENT, ident);
  wr16(buf, off + FLG_OFF, dontFrag ? FLAG_DF : 0);
  buf[off + TTL] = ttl;
  buf[off + PROTOCOL] = protocol;
  buf[off + CHECKSUM] = 0;
  buf[off + CHECKSUM + 1] = 0;
  wr32(buf, off + SRC_ADDR, src);
  wr32(buf, off + DST_ADDR, dst);
  wr16(buf, off + CHECKSUM, internetChecksum(buf, off, IPV4_HEADER_LEN));
}
