/**
 * TCP header (RFC 9293 §3.1) with the options the stack speaks: MSS (RFC 9293 §3.2), window
 * scale and timestamps (RFC 7323), SACK-permitted and SACK (RFC 2018).
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |          Source Port          |       Destination Port        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                        Sequence Number                        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Acknowledgment Number                      |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  Data |       |C|E|U|A|P|R|S|F|                               |
 *    | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
 *    |       |       |R|E|G|K|H|T|N|N|                               |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |           Checksum            |         Urgent Pointer        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                           [Options]                           |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                                                               :
 *    :                             Data                              :
 *    :                                                               |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Options are kind-length-value, except EOL (0, ends the list) and NOP (1, one byte):
 *
 *     kind 2  MSS              len 4   16-bit maximum segment size
 *     kind 3  window scale     len 3   shift count, passed through as sent (RFC 7323 §2.3:
 *                                      the receiver uses 14 for anything larger)
 *     kind 4  SACK-permitted   len 2
 *     kind 5  SACK             len 2+8n, n = 1..4 blocks of [left edge, right edge) uint32
 *     kind 8  timestamps       len 10  TSval, TSecr uint32
 *
 * The checksum covers the pseudo-header (see `pseudoHeaderSum`), the header and the data.
 * Sequence and acknowledgment numbers are uint32 (`>>> 0`); comparing them modulo 2^32 is the
 * stack's business.
 */
import { ByteView } from './view.js';
import {
  checksumAdjust,
  checksumAdjust32,
  foldSum,
  getU16 as rd16,
  getU32 as rd32,
  pseudoHeaderSum,
  setU16 as wr16,
  setU32 as wr32,
  sum16,
} from './checksum.js';
import type { DropReason } from './drop.js';
import { IP_PROTO_TCP, IPV4_HEADER_LEN, writeIpv4Header } from './ipv4.js';

const SRC_PORT = 0; //  0..2
const DST_PORT = 2; //  2..4
const SEQ_NUM = 4; //   4..8
const ACK_NUM = 8; //   8..12
const DATA_OFF = 12; // 12      high nibble: header length in 32-bit words; low nibble reserved
const FLAGS = 13; //    13
const WINDOW = 14; //   14..16
const CHECKSUM = 16; // 16..18
const URGENT = 18; //   18..20

export const TCP_HEADER_LEN = 20;
/** Data offset 15 words: 40 bytes of options at most. */
export const TCP_MAX_HEADER_LEN = 60;
export const TCP_MAX_OPTIONS_LEN = 40;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const TCP_OPT_EOL = 0;
export const TCP_OPT_NOP = 1;
export const TCP_OPT_MSS = 2;
export const TCP_OPT_WSCALE = 3;
export const TCP_OPT_SACK_PERMITTED = 4;
export const TCP_OPT_SACK = 5;
export const TCP_OPT_TIMESTAMP = 8;

/** RFC 7323 §2.3: a received shift above 14 is used as 14 (the stack applies this). */
export const TCP_MAX_WSCALE = 14;

/**
 * Walk the option list in b[i..end). Returns 'bad_tcp_options' when a length byte is missing,
 * below 2, runs past the header, or is wrong for a kind we know (RFC 9293 §3.1 MUST-7: be
 * prepared for an illegal option length). Unknown kinds are skipped by their length (MUST-6).
 */
function checkOptions(b: Uint8Array, i: number, end: number): DropReason | undefined {
  while (i < end) {
    const kind = b[i];
    if (kind === TCP_OPT_EOL) return undefined;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return 'bad_tcp_options';
    const len = b[i + 1];
    if (len < 2 || i + len > end) return 'bad_tcp_options';
    switch (kind) {
      case TCP_OPT_MSS:
        if (len !== 4) return 'bad_tcp_options';
        break;
      case TCP_OPT_WSCALE:
        if (len !== 3) return 'bad_tcp_options';
        break;
      case TCP_OPT_SACK_PERMITTED:
        if (len !== 2) return 'bad_tcp_options';
        break;
      case TCP_OPT_SACK:
        if (len < 10 || (len - 2) % 8 !== 0) return 'bad_tcp_options';
        break;
      case TCP_OPT_TIMESTAMP:
        if (len !== 10) return 'bad_tcp_options';
        break;
      default:
        break;
    }
    i += len;
  }
  return undefined;
}

/**
 * Options of one segment, read without allocating: one instance is reused for every segment.
 * Absent numeric options are -1.
 */
export class TcpOptionValues {
  mss = -1;
  wscale = -1;
  sackPermitted = false;
  /** Number of valid SACK blocks (0..4) in `sack`. */
  sackCount = 0;
  /** Block k is [sack[2k], sack[2k+1]). */
  readonly sack = new Uint32Array(8);
  hasTimestamp = false;
  tsval = 0;
  tsecr = 0;

  reset(): void {
    this.mss = -1;
    this.wscale = -1;
    this.sackPermitted = false;
    this.sackCount = 0;
    this.hasTimestamp = false;
    this.tsval = 0;
    this.tsecr = 0;
  }
}

/**
 * A re-pointable view of one TCP segment (header, options, data). `wrap()` validates the data
 * offset and the option list; after it returns `undefined` every accessor is in bounds.
 * Setters keep the checksum valid by incremental update (RFC 1624). A failed wrap leaves an
 * empty view whose getters read 0.
 */
export class TcpPacket extends ByteView {

  /**
   * Point at the segment: `len` is the IP payload length. Returns a drop reason or
   * `undefined`; never throws. The checksum is not verified here (it needs the addresses and,
   * with checksum offload, may be partial): see `verifyChecksum`.
   */
  wrap(buf: Uint8Array, off: number, len: number): DropReason | undefined {
    this.clear();
    const avail = Math.min(len, buf.length - off);
    if (!(off >= 0) || !(avail >= TCP_HEADER_LEN)) return 'too_short';
    const hl = (buf[off + DATA_OFF] >>> 4) << 2;
    if (hl < TCP_HEADER_LEN || hl > avail) return 'bad_tcp_offset';
    if (hl > TCP_HEADER_LEN) {
      const r = checkOptions(buf, off + TCP_HEADER_LEN, off + hl);
      if (r !== undefined) return r;
    }
    this.wrapUnchecked(buf, off, avail);
    return undefined;
  }

  get srcPort(): number { return rd16(this.b, this.o + SRC_PORT); }
  get dstPort(): number { return rd16(this.b, this.o + DST_PORT); }
  get seq(): number { return rd32(this.b, this.o + SEQ_NUM); }
  get ack(): number { return rd32(this.b, this.o + ACK_NUM); }
  /** Header length in bytes, options included (data offset × 4). */
  get headerLen(): number { return (this.b[this.o + DATA_OFF] >>> 4) << 2; }
  /** The 8 flag bits; test with TCP_SYN etc. */
  get flags(): number { return this.b[this.o + FLAGS] | 0; }
  get fin(): boolean { return (this.b[this.o + FLAGS] & TCP_FIN) !== 0; }
  get syn(): boolean { return (this.b[this.o + FLAGS] & TCP_SYN) !== 0; }
  get rst(): boolean { return (this.b[this.o + FLAGS] & TCP_RST) !== 0; }
  get psh(): boolean { return (this.b[this.o + FLAGS] & TCP_PSH) !== 0; }
  /** The ACK flag (the number is `ack`). */
  get hasAck(): boolean { return (this.b[this.o + FLAGS] & TCP_ACK) !== 0; }
  get urg(): boolean { return (this.b[this.o + FLAGS] & TCP_URG) !== 0; }
  get ece(): boolean { return (this.b[this.o + FLAGS] & TCP_ECE) !== 0; }
  get cwr(): boolean { return (this.b[this.o + FLAGS] & TCP_CWR) !== 0; }
  /** Unscaled window field. */
  get window(): number { return rd16(this.b, this.o + WINDOW); }
  get checksum(): number { return rd16(this.b, this.o + CHECKSUM); }
  get urgent(): number { return rd16(this.b, this.o + URGENT); }
  get optionsOffset(): number { return this.o + TCP_HEADER_LEN; }
  get optionsLen(): number { return this.headerLen - TCP_HEADER_LEN; }
  /** Absolute index of the first data byte in `buffer`. */
  get payloadOffset(): number { return this.o + this.headerLen; }
  get payloadLen(): number { return this.n - this.headerLen; }
  /** Sequence space the segment occupies: data length, +1 for SYN, +1 for FIN. */
  get segmentLen(): number {
    const f = this.b[this.o + FLAGS];
    return this.n - this.headerLen + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
  }

  /** The data as a subarray (allocates a view object; hot paths use the offsets). */
  payload(): Uint8Array {
    return this.b.subarray(this.payloadOffset, this.o + this.n);
  }

  /** Fill `out` from the options (validated by `wrap`, so this cannot fail). */
  readOptions(out: TcpOptionValues): void {
    out.reset();
    const b = this.b;
    let i = this.o + TCP_HEADER_LEN;
    const end = this.o + this.headerLen;
    while (i < end) {
      const kind = b[i];
      if (kind === TCP_OPT_EOL) break;
      if (kind === TCP_OPT_NOP) {
        i++;
        continue;
      }
      const len = b[i + 1];
      if (!(len >= 2)) break; // only reachable on an unvalidated view
      switch (kind) {
        case TCP_OPT_MSS:
          out.mss = rd16(b, i + 2);
          break;
        case TCP_OPT_WSCALE:
          out.wscale = b[i + 2];
          break;
        case TCP_OPT_SACK_PERMITTED:
          out.sackPermitted = true;
          break;
        case TCP_OPT_SACK: {
          const blocks = Math.min((len - 2) >>> 3, 4);
          for (let k = 0; k < blocks; k++) {
            out.sack[2 * k] = rd32(b, i + 2 + 8 * k);
            out.sack[2 * k + 1] = rd32(b, i + 6 + 8 * k);
          }
          out.sackCount = blocks;
          break;
        }
        case TCP_OPT_TIMESTAMP:
          out.hasTimestamp = true;
          out.tsval = rd32(b, i + 2);
          out.tsecr = rd32(b, i + 6);
          break;
        default:
          break;
      }
      i += len;
    }
  }

  /** Pseudo-header + segment sums to 0xffff when intact. */
  verifyChecksum(srcIp: number, dstIp: number): boolean {
    return sum16(this.b, this.o, this.n, pseudoHeaderSum(srcIp, dstIp, IP_PROTO_TCP, this.n)) === 0xffff;
  }

  /** Compute the checksum from scratch for the given addresses and store it. */
  fillChecksum(srcIp: number, dstIp: number): void {
    const c = this.o + CHECKSUM;
    this.b[c] = 0;
    this.b[c + 1] = 0;
    wr16(this.b, c, ~sum16(this.b, this.o, this.n, pseudoHeaderSum(srcIp, dstIp, IP_PROTO_TCP, this.n)) & 0xffff);
  }

  setChecksum(v: number): void {
    wr16(this.b, this.o + CHECKSUM, v);
  }

  /** After an address in the pseudo-header changed (NAT-style rewrite of the IP header). */
  adjustChecksumForAddress(oldAddr: number, newAddr: number): void {
    const c = this.o + CHECKSUM;
    wr16(this.b, c, checksumAdjust32(rd16(this.b, c), oldAddr, newAddr >>> 0));
  }

  private setWord(at: number, v: number): void {
    const i = this.o + at;
    const old = rd16(this.b, i);
    wr16(this.b, i, v);
    const c = this.o + CHECKSUM;
    wr16(this.b, c, checksumAdjust(rd16(this.b, c), old, v & 0xffff));
  }

  private setLong(at: number, v: number): void {
    const i = this.o + at;
    const old = rd32(this.b, i);
    wr32(this.b, i, v);
    const c = this.o + CHECKSUM;
    wr16(this.b, c, checksumAdjust32(rd16(this.b, c), old, v >>> 0));
  }

  setSrcPort(v: number): void { this.setWord(SRC_PORT, v); }
  setDstPort(v: number): void { this.setWord(DST_PORT, v); }
  setSeq(v: number): void { this.setLong(SEQ_NUM, v); }
  setAck(v: number): void { this.setLong(ACK_NUM, v); }
  setFlags(v: number): void { this.setWord(DATA_OFF, (this.b[this.o + DATA_OFF] << 8) | (v & 0xff)); }
  setWindow(v: number): void { this.setWord(WINDOW, v); }
  setUrgent(v: number): void { this.setWord(URGENT, v); }
}

/** Options as plain values, for building segments and for tests. */
export interface TcpOptions {
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  /** [left, right) edges; at most 4 blocks, fewer if they do not fit (see `TcpRepr.emit`). */
  sack?: ReadonlyArray<readonly [number, number]>;
  /** [TSval, TSecr] */
  timestamp?: readonly [number, number];
}

export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** TCP_SYN | TCP_ACK ... */
  flags: number;
  /** The window field as sent (already scaled down by the sender). */
  window: number;
  urgent?: number;
  options: TcpOptions;
  payload?: Uint8Array;
}

/** How many SACK blocks `emit` writes: as many as fit in 40 bytes beside the other options. */
function sackBlocksToWrite(o: TcpOptions, fixedLen: number): number {
  if (o.sack === undefined || o.sack.length === 0) return 0;
  return Math.min(o.sack.length, 4, Math.floor((TCP_MAX_OPTIONS_LEN - fixedLen - 4) / 8));
}

/** Option bytes without SACK, in the layout `writeOptions` uses. */
function fixedOptionsLen(o: TcpOptions): number {
  let n = 0;
  if (o.mss !== undefined) n += 4;
  if (o.timestamp !== undefined || o.sackPermitted) n += o.timestamp !== undefined ? 12 : 4;
  if (o.wscale !== undefined) n += 4;
  return n;
}

/** Length of the options `emit` writes, a multiple of 4. */
export function tcpOptionsLen(o: TcpOptions): number {
  const fixed = fixedOptionsLen(o);
  const blocks = sackBlocksToWrite(o, fixed);
  return fixed + (blocks > 0 ? 4 + 8 * blocks : 0);
}

/**
 * Write options at b[i] in the order Linux uses (so captures compare byte for byte):
 * MSS; SACK-permitted + timestamps (or NOP NOP before whichever is alone); NOP + window scale;
 * NOP NOP + SACK. Every group is 4-byte aligned, so no trailing padding is ever needed.
 */
function writeOptions(o: TcpOptions, b: Uint8Array, i: number): number {
  const start = i;
  if (o.mss !== undefined) {
    b[i] = TCP_OPT_MSS;
    b[i + 1] = 4;
    wr16(b, i + 2, o.mss);
    i += 4;
  }
  if (o.timestamp !== undefined) {
    if (o.sackPermitted) {
      b[i] = TCP_OPT_SACK_PERMITTED;
      b[i + 1] = 2;
    } else {
      b[i] = TCP_OPT_NOP;
      b[i + 1] = TCP_OPT_NOP;
    }
    b[i + 2] = TCP_OPT_TIMESTAMP;
    b[i + 3] = 10;
    wr32(b, i + 4, o.timestamp[0]);
    wr32(b, i + 8, o.timestamp[1]);
    i += 12;
  } else if (o.sackPermitted) {
    b[i] = TCP_OPT_NOP;
    b[i + 1] = TCP_OPT_NOP;
    b[i + 2] = TCP_OPT_SACK_PERMITTED;
    b[i + 3] = 2;
    i += 4;
  }
  if (o.wscale !== undefined) {
    b[i] = TCP_OPT_NOP;
    b[i + 1] = TCP_OPT_WSCALE;
    b[i + 2] = 3;
    b[i + 3] = o.wscale;
    i += 4;
  }
  const blocks = sackBlocksToWrite(o, i - start);
  if (blocks > 0 && o.sack !== undefined) {
    b[i] = TCP_OPT_NOP;
    b[i + 1] = TCP_OPT_NOP;
    b[i + 2] = TCP_OPT_SACK;
    b[i + 3] = 2 + 8 * blocks;
    i += 4;
    for (let k = 0; k < blocks; k++) {
      const blk = o.sack[k];
      wr32(b, i, blk[0]);
      wr32(b, i + 4, blk[1]);
      i += 8;
    }
  }
  return i - start;
}

/** `headOnlyLen` ≥ 0: write the headers for a payload of that length, not the payload (partial checksum only). */
function emitTcp(repr: TcpRepr, buf: Uint8Array, off: number, srcIp: number, dstIp: number, partial = false, headOnlyLen = -1): number {
  const optLen = writeOptions(repr.options, buf, off + TCP_HEADER_LEN);
  const hl = TCP_HEADER_LEN + optLen;
  wr16(buf, off + SRC_PORT, repr.srcPort);
  wr16(buf, off + DST_PORT, repr.dstPort);
  wr32(buf, off + SEQ_NUM, repr.seq);
  wr32(buf, off + ACK_NUM, repr.ack);
  buf[off + DATA_OFF] = (hl >>> 2) << 4;
  buf[off + FLAGS] = repr.flags;
  wr16(buf, off + WINDOW, repr.window);
  buf[off + CHECKSUM] = 0;
  buf[off + CHECKSUM + 1] = 0;
  wr16(buf, off + URGENT, repr.urgent ?? 0);
  const p = repr.payload;
  const total = hl + (headOnlyLen >= 0 ? headOnlyLen : p === undefined ? 0 : p.length);
  if (headOnlyLen < 0 && p !== undefined && p.length > 0) buf.set(p, off + hl);
  const pseudo = pseudoHeaderSum(srcIp, dstIp, IP_PROTO_TCP, total);
  // Partial (CHECKSUM_PARTIAL / virtio NEEDS_CSUM): the field holds the folded pseudo-header
  // sum, not complemented, and whoever receives the packet (the kernel) sums the rest.
  wr16(buf, off + CHECKSUM, partial ? foldSum(pseudo) : ~sum16(buf, off, total, pseudo) & 0xffff);
  return total;
}

function toOptions(v: TcpOptionValues): TcpOptions {
  const o: TcpOptions = {};
  if (v.mss >= 0) o.mss = v.mss;
  if (v.wscale >= 0) o.wscale = v.wscale;
  if (v.sackPermitted) o.sackPermitted = true;
  if (v.sackCount > 0) {
    const blocks: Array<readonly [number, number]> = [];
    for (let k = 0; k < v.sackCount; k++) blocks.push([v.sack[2 * k], v.sack[2 * k + 1]]);
    o.sack = blocks;
  }
  if (v.hasTimestamp) o.timestamp = [v.tsval, v.tsecr];
  return o;
}

const scratchOptions = new TcpOptionValues();

export const TcpRepr = {
  /**
   * Read a segment that `wrap()` accepted. The payload is a subarray of the packet (no copy).
   * Unknown options are dropped; all window and urgent values are accepted as they are.
   */
  parse(p: TcpPacket): TcpRepr {
    p.readOptions(scratchOptions);
    return {
      srcPort: p.srcPort,
      dstPort: p.dstPort,
      seq: p.seq,
      ack: p.ack,
      flags: p.flags,
      window: p.window,
      urgent: p.urgent,
      options: toOptions(scratchOptions),
      payload: p.payload(),
    };
  },

  /** Header + options + payload bytes that `emit` writes. */
  bufferLen(repr: TcpRepr): number {
    return TCP_HEADER_LEN + tcpOptionsLen(repr.options) + (repr.payload?.length ?? 0);
  },

  /**
   * Write the segment at `buf[off]` with its checksum for the given addresses; returns the
   * bytes written (`bufferLen`; `buf` must have that much room). SACK blocks that do not fit in 40 option bytes are left out
   * (the first ones are kept: RFC 2018 §4 puts the most recent block first).
   */
  emit(repr: TcpRepr, buf: Uint8Array, off: number, srcIp: number, dstIp: number): number {
    return emitTcp(repr, buf, off, srcIp, dstIp);
  },
};

/**
 * Write a whole IPv4 + TCP packet at `buf[off]` (20-byte IP header, DF set, both checksums) and
 * return its length. The stack's reply path: one repr in, bytes out, nothing else allocated.
 * With `partialChecksum`, the TCP checksum is left partial for a device with checksum offload
 * to complete (see virtio-net.ts): no pass over the payload in JS.
 */
export function emitTcpIpv4(
  repr: TcpRepr,
  buf: Uint8Array,
  off: number,
  srcIp: number,
  dstIp: number,
  ttl = 64,
  ident = 0,
  partialChecksum = false,
): number {
  const segLen = emitTcp(repr, buf, off + IPV4_HEADER_LEN, srcIp, dstIp, partialChecksum);
  writeIpv4Header(buf, off, srcIp, dstIp, IP_PROTO_TCP, segLen, ttl, 0, ident, true);
  return IPV4_HEADER_LEN + segLen;
}

/**
 * The IPv4 and TCP headers of `repr` as emitTcpIpv4 writes them with a partial checksum, for a
 * payload of `payloadLen` bytes that is not written: it goes out separately (a writev after the
 * headers, maybe in pieces), so a 64 KiB payload is not copied. Returns the headers' length.
 */
export function emitTcpIpv4Head(repr: TcpRepr, payloadLen: number, buf: Uint8Array, off: number, srcIp: number, dstIp: number, ttl = 64, ident = 0): number {
  const segLen = emitTcp(repr, buf, off + IPV4_HEADER_LEN, srcIp, dstIp, true, payloadLen);
  writeIpv4Header(buf, off, srcIp, dstIp, IP_PROTO_TCP, segLen, ttl, 0, ident, true);
  return IPV4_HEADER_LEN + segLen - payloadLen;
}
