/**
 * ICMP for IPv4 (RFC 792): echo request/reply and the two errors we send or read
 * (destination unreachable, time exceeded).
 *
 * Echo or Echo Reply (types 8, 0):
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |     Type      |     Code      |          Checksum             |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |           Identifier          |        Sequence Number        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |     Data ...
 *    +-+-+-+-+-
 *
 * Destination Unreachable (type 3) / Time Exceeded (type 11):
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |     Type      |     Code      |          Checksum             |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |             unused            |         Next-Hop MTU          |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |      Internet Header + 64 bits of Original Data Datagram      |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Next-Hop MTU is RFC 1191's use of the unused word for code 4 (fragmentation needed); it is
 * zero otherwise. The checksum covers the whole ICMP message (no pseudo-header).
 */
import { ByteView } from './view.js';
import { checksumAdjust, getU16 as rd16, internetChecksum, setU16 as wr16, sum16 } from './checksum.js';
import type { DropReason } from './drop.js';
import { IP_PROTO_ICMP, IPV4_HEADER_LEN, Ipv4Packet, writeIpv4Header } from './ipv4.js';

const TYPE = 0; //     0
const CODE = 1; //     1
const CHECKSUM = 2; // 2..4
const IDENT = 4; //    4..6   echo
const SEQ_NO = 6; //   6..8   echo
const MTU = 6; //      6..8   destination unreachable, code 4

export const ICMP_HEADER_LEN = 8;

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAMETER_PROBLEM = 12;

/** Destination Unreachable codes (RFC 792, RFC 1812 §5.2.7.1). */
export const ICMP_UNREACH_NET = 0;
export const ICMP_UNREACH_HOST = 1;
export const ICMP_UNREACH_PROTOCOL = 2;
export const ICMP_UNREACH_PORT = 3;
export const ICMP_UNREACH_FRAG_NEEDED = 4;
export const ICMP_UNREACH_NET_PROHIBITED = 9;
export const ICMP_UNREACH_HOST_PROHIBITED = 10;
export const ICMP_UNREACH_ADMIN_PROHIBITED = 13;

/** Time Exceeded codes. */
export const ICMP_TIME_EXCEEDED_TTL = 0;
export const ICMP_TIME_EXCEEDED_REASSEMBLY = 1;

/** Bytes of the original datagram's data quoted after its header (RFC 792: 64 bits). */
export const ICMP_QUOTED_DATA_LEN = 8;

const EMPTY = new Uint8Array(0);

/** Error messages (as opposed to queries): never answered with another error. */
export function isIcmpErrorType(type: number): boolean {
  return (
    type === ICMP_DEST_UNREACHABLE ||
    type === ICMP_SOURCE_QUENCH ||
    type === ICMP_REDIRECT ||
    type === ICMP_TIME_EXCEEDED ||
    type === ICMP_PARAMETER_PROBLEM
  );
}

/**
 * A re-pointable view of one ICMP message. `wrap()` checks the length and the checksum;
 * which types the caller handles is the caller's decision ('unsupported_icmp').
 * Setters keep the checksum valid by incremental update. A failed wrap leaves an empty view
 * whose getters read 0.
 */
export class IcmpPacket extends ByteView {

  /** `len` is the IP payload length. Never throws. */
  wrap(buf: Uint8Array, off: number, len: number, checkChecksum = true): DropReason | undefined {
    this.clear();
    const avail = Math.min(len, buf.length - off);
    if (!(off >= 0) || !(avail >= ICMP_HEADER_LEN)) return 'too_short';
    if (checkChecksum && sum16(buf, off, avail) !== 0xffff) return 'bad_icmp_checksum';
    this.wrapUnchecked(buf, off, avail);
    return undefined;
  }

  get type(): number { return this.b[this.o + TYPE] | 0; }
  get code(): number { return this.b[this.o + CODE] | 0; }
  get checksum(): number { return rd16(this.b, this.o + CHECKSUM); }
  /** Echo identifier. */
  get ident(): number { return rd16(this.b, this.o + IDENT); }
  /** Echo sequence number. */
  get seq(): number { return rd16(this.b, this.o + SEQ_NO); }
  /** Next-Hop MTU of a "fragmentation needed" message (RFC 1191); 0 when not given. */
  get nextHopMtu(): number { return rd16(this.b, this.o + MTU); }
  get isError(): boolean { return isIcmpErrorType(this.b[this.o + TYPE]); }
  /**
   * Absolute index of what follows the 8-byte header: echo data, or for errors the quoted
   * original datagram (wrap it with `Ipv4Packet.wrapTruncated`).
   */
  get dataOffset(): number { return this.o + ICMP_HEADER_LEN; }
  get dataLen(): number { return this.n - ICMP_HEADER_LEN; }

  /** The data as a subarray (allocates a view object; hot paths use the offsets). */
  data(): Uint8Array {
    return this.b.subarray(this.o + ICMP_HEADER_LEN, this.o + this.n);
  }

  verifyChecksum(): boolean {
    return sum16(this.b, this.o, this.n) === 0xffff;
  }

  fillChecksum(): void {
    const c = this.o + CHECKSUM;
    this.b[c] = 0;
    this.b[c + 1] = 0;
    wr16(this.b, c, internetChecksum(this.b, this.o, this.n));
  }

  setChecksum(v: number): void {
    wr16(this.b, this.o + CHECKSUM, v);
  }

  private setWord(at: number, v: number): void {
    const i = this.o + at;
    const old = rd16(this.b, i);
    wr16(this.b, i, v);
    const c = this.o + CHECKSUM;
    wr16(this.b, c, checksumAdjust(rd16(this.b, c), old, v & 0xffff));
  }

  setType(v: number): void { this.setWord(TYPE, ((v & 0xff) << 8) | this.b[this.o + CODE]); }
  setCode(v: number): void { this.setWord(TYPE, (this.b[this.o + TYPE] << 8) | (v & 0xff)); }
  setIdent(v: number): void { this.setWord(IDENT, v); }
  setSeq(v: number): void { this.setWord(SEQ_NO, v); }
}

export interface IcmpEchoRepr {
  type: typeof ICMP_ECHO_REQUEST | typeof ICMP_ECHO_REPLY;
  ident: number;
  seq: number;
  data: Uint8Array;
}

export interface IcmpErrorRepr {
  type: typeof ICMP_DEST_UNREACHABLE | typeof ICMP_TIME_EXCEEDED;
  code: number;
  /** Destination unreachable, code 4 only (RFC 1191); written as 0 when absent. */
  nextHopMtu?: number;
  /** The original datagram's header and first data bytes, as they are to be quoted. */
  quoted: Uint8Array;
}

/** The ICMP messages we model; `type` tells which. */
export type IcmpRepr = IcmpEchoRepr | IcmpErrorRepr;

export const IcmpRepr = {
  /**
   * Read a message that `wrap()` accepted. `undefined` for the types this module does not
   * model (count them as 'unsupported_icmp'). Echo code must be 0 (RFC 792); any code is
   * accepted for the errors, since the reader only needs to match them to a flow.
   * Data and quote are subarrays (no copy).
   */
  parse(p: IcmpPacket): IcmpRepr | undefined {
    const t = p.type;
    if (t === ICMP_ECHO_REQUEST || t === ICMP_ECHO_REPLY) {
      if (p.code !== 0) return undefined;
      return { type: t, ident: p.ident, seq: p.seq, data: p.data() };
    }
    if (t === ICMP_DEST_UNREACHABLE || t === ICMP_TIME_EXCEEDED) {
      const r: IcmpErrorRepr = { type: t, code: p.code, quoted: p.data() };
      if (t === ICMP_DEST_UNREACHABLE && p.code === ICMP_UNREACH_FRAG_NEEDED) r.nextHopMtu = p.nextHopMtu;
      return r;
    }
    return undefined;
  },

  bufferLen(repr: IcmpRepr): number {
    return ICMP_HEADER_LEN + ('data' in repr ? repr.data.length : repr.quoted.length);
  },

  /** Write the message at `buf[off]` with its checksum; returns `bufferLen` bytes written. */
  emit(repr: IcmpRepr, buf: Uint8Array, off: number): number {
    buf[off + TYPE] = repr.type;
    buf[off + CHECKSUM] = 0;
    buf[off + CHECKSUM + 1] = 0;
    let body: Uint8Array;
    if ('data' in repr) {
      buf[off + CODE] = 0;
      wr16(buf, off + IDENT, repr.ident);
      wr16(buf, off + SEQ_NO, repr.seq);
      body = repr.data;
    } else {
      buf[off + CODE] = repr.code;
      wr16(buf, off + 4, 0);
      wr16(buf, off + MTU, repr.nextHopMtu ?? 0);
      body = repr.quoted;
    }
    if (body.length > 0) buf.set(body, off + ICMP_HEADER_LEN);
    const total = ICMP_HEADER_LEN + body.length;
    wr16(buf, off + CHECKSUM, internetChecksum(buf, off, total));
    return total;
  },
};

function isUnicastSource(a: number): boolean {
  const top = a >>> 24;
  // 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 reserved and broadcast.
  return top !== 0 && top !== 127 && top < 224;
}

const quotedView = new Ipv4Packet();

/**
 * Build a whole IPv4 + ICMP error (type 3 or 11) about `original` at `buf[off]` and return
 * its length, or 0 when no error may be sent. The reply goes from `from` to the original's
 * source and quotes the original header (options included) plus its first 8 data bytes
 * (RFC 792's minimum; RFC 1812 §4.3.2.3 asks routers for as much as fits in 576 bytes, but
 * the header and ports are all a receiver needs to find the flow).
 *
 * Returns 0 (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7) when `original` is not a sane IPv4 header,
 * is itself an ICMP error, is a non-initial fragment, was sent to a multicast or broadcast
 * address, or comes from a source that does not name one host. `buf` must not overlap
 * `original` and needs room for 20 + 8 + 60 + 8 bytes at most.
 */
export function emitIcmpErrorIpv4(
  original: Uint8Array,
  type: typeof ICMP_DEST_UNREACHABLE | typeof ICMP_TIME_EXCEEDED,
  code: number,
  from: number,
  buf: Uint8Array,
  off: number,
  nextHopMtu = 0,
): number {
  const ip = quotedView;
  if (ip.wrapTruncated(original, 0, original.length) !== undefined) return 0;
  if (ip.fragOffset !== 0) return 0;
  if (!isUnicastSource(ip.src) || ip.dst >>> 28 >= 0xe) return 0;
  const hl = ip.headerLen;
  const dataLen = ip.length - hl;
  if (ip.protocol === IP_PROTO_ICMP) {
    // Never an error about an error; an ICMP message too short to show its type counts as one.
    if (dataLen < 1 || isIcmpErrorType(original[hl])) return 0;
  }
  const quoteLen = hl + Math.min(ICMP_QUOTED_DATA_LEN, dataLen);
  const icmpLen = ICMP_HEADER_LEN + quoteLen;
  const i = off + IPV4_HEADER_LEN;
  buf[i + TYPE] = type;
  buf[i + CODE] = code;
  buf[i + CHECKSUM] = 0;
  buf[i + CHECKSUM + 1] = 0;
  wr16(buf, i + 4, 0);
  wr16(buf, i + MTU, type === ICMP_DEST_UNREACHABLE && code === ICMP_UNREACH_FRAG_NEEDED ? nextHopMtu : 0);
  for (let k = 0; k < quoteLen; k++) buf[i + ICMP_HEADER_LEN + k] = original[k];
  wr16(buf, i + CHECKSUM, internetChecksum(buf, i, icmpLen));
  // DF set: at most 96 bytes, never fragmented, so ident 0 is fine (RFC 6864 §4.1).
  writeIpv4Header(buf, off, from, ip.src, IP_PROTO_ICMP, icmpLen, 64, 0, 0, true);
  quotedView.wrapUnchecked(EMPTY, 0, 0);
  return IPV4_HEADER_LEN + icmpLen;
}

/**
 * Destination unreachable (type 3) about `original`, from `from`: the reply to a flow the
 * router blocks (code 13 administratively prohibited, or 3 port / 1 host unreachable).
 * Same rules and return value as `emitIcmpErrorIpv4`.
 */
export function emitIcmpUnreachableIpv4(
  original: Uint8Array,
  code: number,
  from: number,
  buf: Uint8Array,
  off: number,
  nextHopMtu = 0,
): number {
  return emitIcmpErrorIpv4(original, ICMP_DEST_UNREACHABLE, code, from, buf, off, nextHopMtu);
}

/**
 * Turn a validated echo request into its reply in place: swap the addresses (the IP checksum
 * does not change, a sum is order-free), set TTL and type 0, updating both checksums
 * incrementally. The packet is then ready to be written back.
 */
export function echoReplyInPlace(ip: Ipv4Packet, icmp: IcmpPacket, ttl = 64): void {
  const s = ip.src;
  const d = ip.dst;
  ip.setSrc(d);
  ip.setDst(s);
  ip.setTtl(ttl);
  icmp.setType(ICMP_ECHO_REPLY);
}
