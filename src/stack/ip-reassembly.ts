/**
 * IPv4 reassembly (RFC 791 §3.2 "An Example Reassembly Procedure", RFC 815 for the idea of
 * holes, RFC 1122 §3.3.2), with bounded memory and the overlap rule of RFC 5722.
 *
 * Fragments of one datagram share (source, destination, protocol, identification). Each piece
 * covers data bytes [offset, offset + length) of the original; the piece with MF clear tells
 * the total. The datagram is whole when the pieces cover [0, total) without a gap:
 *
 *     total known (MF=0 seen) ─────────────────────────────────────────┐
 *     | frag 0 (hdr kept) | frag 1 |   hole   | frag 3 | … | last frag |
 *     0                                                               total
 *
 * Policy (what Linux does since 4.19 unless noted):
 *   - A piece that overlaps another one of the same datagram discards the whole datagram
 *     ('frag_overlap'): overlaps are how filters were evaded (RFC 1858, RFC 3128), and no
 *     honest sender produces them. An exact duplicate (same offset and length, as a network
 *     that duplicates packets produces) only drops the copy ('frag_duplicate').
 *   - A datagram that would exceed 65,535 bytes (ping of death) is discarded ('frag_too_big').
 *   - Contradictions — a non-final piece whose length is not a multiple of 8, an empty piece, a
 *     second final piece with another end, data beyond the final end — drop ('frag_bad').
 *   - Memory is bounded three ways: total bytes held (each piece costs its data plus a fixed
 *     overhead, so tiny pieces cost more), concurrent datagrams, and pieces per datagram. A new
 *     piece that does not fit evicts the oldest incomplete datagrams (never the one it belongs
 *     to); a datagram that alone exceeds a cap is discarded. Both count as 'frag_limit'.
 *   - A datagram not complete within `timeoutMs` (30 s, Linux's ipfrag_time) of its first
 *     piece is discarded; if its first piece (offset 0) had arrived, `onTimeout` gets that
 *     piece's header and first 8 data bytes so the caller can send ICMP time exceeded,
 *     code 1 (RFC 792; RFC 1122 §3.3.2: only when fragment zero is available).
 *
 * Time comes from the injected clock: expiry is checked when a piece of the same datagram
 * arrives and in `sweep()`, which the owner calls periodically. No timers here.
 */
import type { Clock } from '../clock.js';
import { getU16 as rd16, internetChecksum, setU16 as wr16 } from '../wire/checksum.js';
import type { DropReason } from '../wire/drop.js';
import type { Ipv4Packet } from '../wire/ipv4.js';

const LENGTH = 2;
const FLG_OFF = 6;
const CHECKSUM = 10;
const FLAG_DF = 0x4000;

/** The largest IPv4 datagram (Total Length is 16 bits). */
export const IPV4_MAX_DATAGRAM = 65535;
/** Bytes charged per held piece beyond its data (object, header copy, bookkeeping). */
export const FRAGMENT_OVERHEAD = 64;

export const REASSEMBLY_DEFAULTS = {
  timeoutMs: 30_000,
  /** Linux's ipfrag_high_thresh default. */
  maxBytes: 4 * 1024 * 1024,
  maxDatagrams: 256,
  /** A 65,535-byte datagram at the smallest MTU we allow (576) is 119 pieces. */
  maxFragmentsPerDatagram: 256,
} as const;

export type ReassemblyDropReason = Extract<DropReason, 'frag_overlap' | 'frag_duplicate' | 'frag_too_big' | 'frag_bad' | 'frag_limit'>;

export interface ReassemblyOptions {
  clock: Clock;
  timeoutMs?: number;
  maxBytes?: number;
  maxDatagrams?: number;
  maxFragmentsPerDatagram?: number;
  /**
   * A datagram timed out and its first piece had arrived: `quote` is that piece's header and
   * first 8 data bytes (a copy), enough for emitIcmpErrorIpv4(quote, TIME_EXCEEDED, 1, …).
   */
  onTimeout?: (quote: Uint8Array) => void;
}

export interface ReassemblyStats {
  /** Pieces handed to input(). */
  fragments: number;
  /** Whole datagrams returned. */
  reassembled: number;
  /** Datagrams discarded because they did not complete in time. */
  timedOut: number;
  /** Incomplete datagrams evicted to make room for newer ones. */
  evicted: number;
  /** Pieces dropped (and datagrams discarded), by reason. */
  drops: Record<ReassemblyDropReason, number>;
}

interface Piece {
  /** Data offset in the original datagram. */
  off: number;
  end: number;
  data: Uint8Array;
}

interface Pending {
  readonly key: string;
  readonly firstAt: number;
  /** Sorted by `off`, never overlapping. */
  readonly pieces: Piece[];
  /** Data length of the whole datagram, once the final piece (MF=0) arrived; -1 before. */
  total: number;
  /** Data bytes held (sum of piece lengths). */
  received: number;
  /** Bytes charged against maxBytes. */
  charged: number;
  /** The first piece's header (offset 0), kept for the whole datagram. */
  header: Uint8Array | undefined;
  /** The first piece's header + 8 data bytes, for ICMP time exceeded. */
  quote: Uint8Array | undefined;
}

/** What input() did with a piece: a whole datagram (a fresh buffer), held, or dropped. */
export type ReassemblyResult = Uint8Array | ReassemblyDropReason | undefined;

export class Ipv4Reassembler {
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;
  private readonly maxDatagrams: number;
  private readonly maxPieces: number;
  private readonly onTimeout: ((quote: Uint8Array) => void) | undefined;
  /** Insertion order is arrival order of the first piece, i.e. oldest first. */
  private readonly pending = new Map<string, Pending>();
  private bytes = 0;
  readonly stats: ReassemblyStats = {
    fragments: 0,
    reassembled: 0,
    timedOut: 0,
    evicted: 0,
    drops: { frag_overlap: 0, frag_duplicate: 0, frag_too_big: 0, frag_bad: 0, frag_limit: 0 },
  };

  constructor(opts: ReassemblyOptions) {
    this.clock = opts.clock;
    this.timeoutMs = opts.timeoutMs ?? REASSEMBLY_DEFAULTS.timeoutMs;
    this.maxBytes = opts.maxBytes ?? REASSEMBLY_DEFAULTS.maxBytes;
    this.maxDatagrams = opts.maxDatagrams ?? REASSEMBLY_DEFAULTS.maxDatagrams;
    this.maxPieces = opts.maxFragmentsPerDatagram ?? REASSEMBLY_DEFAULTS.maxFragmentsPerDatagram;
    this.onTimeout = opts.onTimeout;
    for (const [k, v] of Object.entries({ timeoutMs: this.timeoutMs, maxBytes: this.maxBytes, maxDatagrams: this.maxDatagrams, maxFragmentsPerDatagram: this.maxPieces })) {
      if (!(v > 0)) throw new RangeError(`${k} must be > 0, got ${v}`);
    }
  }

  /** Bytes held now (data plus per-piece overhead). */
  get heldBytes(): number {
    return this.bytes;
  }

  /** Incomplete datagrams held now. */
  get heldDatagrams(): number {
    return this.pending.size;
  }

  /**
   * Take one piece (`ip` validated by Ipv4Packet.wrap, `isFragment` true). Returns the whole
   * datagram once the last missing piece arrives — a new buffer holding one IPv4 packet with
   * the first piece's header, MF and offset cleared, Total Length and checksum set — or
   * `undefined` while it is incomplete, or why the piece was dropped. The piece's bytes are
   * copied: the caller's buffer may be reused. Never throws.
   */
  input(ip: Ipv4Packet): ReassemblyResult {
    this.stats.fragments++;
    const now = this.clock.now();
    const buf = ip.buffer;
    const hl = ip.headerLen;
    const off = ip.fragOffset;
    const len = ip.payloadLen;
    const end = off + len;
    const more = ip.moreFrags;
    const key = `${ip.src}/${ip.dst}/${ip.protocol}/${ip.ident}`;

    let p = this.pending.get(key);
    if (p !== undefined && now - p.firstAt > this.timeoutMs) {
      this.expire(p);
      p = undefined;
    }

    if (len === 0 || (more && (len & 7) !== 0)) return this.dropPiece('frag_bad');
    if (hl + end > IPV4_MAX_DATAGRAM) return this.discard(p, 'frag_too_big');

    if (p !== undefined) {
      // The final piece fixes the end; nothing may lie beyond it, and there is only one end.
      if (!more) {
        if (p.total >= 0 && p.total !== end) return this.discard(p, 'frag_bad');
        const lastPiece = p.pieces[p.pieces.length - 1];
        if (lastPiece !== undefined && lastPiece.end > end) return this.discard(p, 'frag_bad');
      } else if (p.total >= 0 && end > p.total) {
        return this.discard(p, 'frag_bad');
      }
    }

    // Where the piece goes, and whether it collides with a neighbour.
    let at = 0;
    if (p !== undefined) {
      const pieces = p.pieces;
      let lo = 0;
      let hi = pieces.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (pieces[mid].off < off) lo = mid + 1;
        else hi = mid;
      }
      at = lo;
      const next = pieces[at];
      const prev = at > 0 ? pieces[at - 1] : undefined;
      if (next !== undefined && next.off === off && next.end === end) return this.dropPiece('frag_duplicate');
      if ((next !== undefined && next.off < end) || (prev !== undefined && prev.end > off)) {
        return this.discard(p, 'frag_overlap');
      }
      if (pieces.length >= this.maxPieces) return this.discard(p, 'frag_limit');
    }

    const cost = len + FRAGMENT_OVERHEAD + (off === 0 ? hl : 0);
    if (cost > this.maxBytes) return this.discard(p, 'frag_limit');
    if (p === undefined) {
      while (this.pending.size >= this.maxDatagrams) this.evictOldest();
    }
    while (this.bytes + cost > this.maxBytes) {
      const victim = this.oldestOtherThan(p);
      if (victim === undefined) return this.discard(p, 'frag_limit');
      this.evict(victim);
    }

    if (p === undefined) {
      p = { key, firstAt: now, pieces: [], total: -1, received: 0, charged: 0, header: undefined, quote: undefined };
      this.pending.set(key, p);
    }
    const data = new Uint8Array(len);
    data.set(buf.subarray(ip.payloadOffset, ip.payloadOffset + len));
    p.pieces.splice(at, 0, { off, end, data });
    p.received += len;
    p.charged += cost;
    this.bytes += cost;
    if (!more) p.total = end;
    if (off === 0) {
      const h = new Uint8Array(hl);
      h.set(buf.subarray(ip.offset, ip.offset + hl));
      p.header = h;
      const q = new Uint8Array(hl + Math.min(8, len));
      q.set(buf.subarray(ip.offset, ip.offset + q.length));
      p.quote = q;
    }

    if (p.total < 0 || p.received !== p.total || p.header === undefined) return undefined;
    // The first piece's header may be longer (options) than the one the size was checked with.
    if (p.header.length + p.total > IPV4_MAX_DATAGRAM) return this.discard(p, 'frag_too_big');
    return this.complete(p);
  }

  /** Discard every datagram older than the timeout; returns how many. The owner calls it periodically. */
  sweep(): number {
    const now = this.clock.now();
    let n = 0;
    // Oldest first: stop at the first one still in time.
    for (const p of this.pending.values()) {
      if (now - p.firstAt <= this.timeoutMs) break;
      this.expire(p);
      n++;
    }
    return n;
  }

  /** Drop everything held (shutdown). */
  clear(): void {
    this.pending.clear();
    this.bytes = 0;
  }

  private complete(p: Pending): Uint8Array {
    const header = p.header!;
    const hl = header.length;
    const out = new Uint8Array(hl + p.total);
    out.set(header, 0);
    for (const piece of p.pieces) out.set(piece.data, hl + piece.off);
    wr16(out, LENGTH, hl + p.total);
    // MF and offset cleared; DF (should a sender have set it on a piece) and the reserved bit kept.
    wr16(out, FLG_OFF, rd16(out, FLG_OFF) & (FLAG_DF | 0x8000));
    out[CHECKSUM] = 0;
    out[CHECKSUM + 1] = 0;
    wr16(out, CHECKSUM, internetChecksum(out, 0, hl));
    this.remove(p);
    this.stats.reassembled++;
    return out;
  }

  private dropPiece(reason: ReassemblyDropReason): ReassemblyDropReason {
    this.stats.drops[reason]++;
    return reason;
  }

  /** Drop the piece and, when there is one, the whole datagram it belongs to. */
  private discard(p: Pending | undefined, reason: ReassemblyDropReason): ReassemblyDropReason {
    if (p !== undefined) this.remove(p);
    return this.dropPiece(reason);
  }

  private expire(p: Pending): void {
    this.remove(p);
    this.stats.timedOut++;
    if (p.quote !== undefined && this.onTimeout !== undefined) this.onTimeout(p.quote);
  }

  private evictOldest(): void {
    const first = this.pending.values().next();
    if (first.done !== true) this.evict(first.value);
  }

  private evict(p: Pending): void {
    this.remove(p);
    this.stats.evicted++;
    this.stats.drops.frag_limit++;
  }

  private oldestOtherThan(p: Pending | undefined): Pending | undefined {
    for (const q of this.pending.values()) if (q !== p) return q;
    return undefined;
  }

  private remove(p: Pending): void {
    if (this.pending.delete(p.key)) this.bytes -= p.charged;
  }
}
