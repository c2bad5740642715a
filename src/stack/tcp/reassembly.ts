/**
 * RFC 9293 §3.10.7.4 (segment text: out-of-order data "may be held for later processing") and
 * RFC 2018 §4 (generating SACK options).
 *
 * The out-of-order receive queue: disjoint ranges of unwrapped positions, each an ordered list
 * of chunks, kept sorted. Overlapping and duplicated segments are trimmed against what is
 * already held, so only new bytes are stored (by reference when the caller owns the input,
 * otherwise copied once); touching ranges are merged, so a range is exactly a SACK block.
 * Memory is bounded by `capacity` bytes: what does not fit is not stored (the sender will
 * retransmit it) and is reported to the caller.
 *
 * RFC 2018 §4: "The first SACK block MUST specify the contiguous block of data containing the
 * segment which triggered this ACK ... the data receiver SHOULD include as many distinct SACK
 * blocks as possible ... repeating the most recently reported SACK blocks". The queue remembers
 * where the last few segments landed and reports their ranges most recent first.
 */

import { copyBytes } from './bytes.js';

/** A held range [start, end) of unwrapped positions and its bytes, in order. */
export interface ReassemblyRange {
  start: number;
  end: number;
  chunks: Uint8Array[];
}

const RECENT = 4;

export class Reassembly {
  private ranges: ReassemblyRange[] = [];
  private bytes = 0;
  /** Start positions of the most recently inserted segments, most recent first. */
  private recent: number[] = [];

  constructor(public capacity: number) {}

  /** Bytes held. */
  get byteCount(): number {
    return this.bytes;
  }

  get isEmpty(): boolean {
    return this.ranges.length === 0;
  }

  /** Number of disjoint ranges (= SACK blocks that could be reported). */
  get rangeCount(): number {
    return this.ranges.length;
  }

  /** End of the highest held range, or -1 when empty. */
  get highestEnd(): number {
    const n = this.ranges.length;
    return n === 0 ? -1 : this.ranges[n - 1].end;
  }

  /**
   * Hold `data`, which starts at position `start`. `copy`: the caller's bytes are only valid
   * during the call, so new bytes are copied. Returns the number of new bytes stored (0 for a
   * pure duplicate) or -1 when nothing could be stored because the queue is full.
   */
  insert(start: number, data: Uint8Array, copy: boolean): number {
    if (data.length === 0) return 0;
    const room = this.capacity - this.bytes;
    if (room <= 0) return -1;
    if (data.length > room) data = data.subarray(0, room);
    const end = start + data.length;
    const ranges = this.ranges;
    const n = ranges.length;
    // First range that ends at or after `start` (it overlaps, touches, or lies above).
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ranges[mid].end < start) lo = mid + 1;
      else hi = mid;
    }
    const i = lo;
    let j = i;
    while (j < n && ranges[j].start <= end) j++;
    this.noteRecent(start);
    if (i === j) {
      ranges.splice(i, 0, { start, end, chunks: [copy ? copyBytes(data) : data] });
      this.bytes += data.length;
      return data.length;
    }
    const first = ranges[i];
    if (j === i + 1 && first.start <= start && first.end >= end) return 0;
    // Merge ranges i..j-1 and the new bytes that fill the gaps around and between them.
    const chunks: Uint8Array[] = [];
    let pos = first.start < start ? first.start : start;
    const mergedStart = pos;
    let added = 0;
    for (let k = i; k < j; k++) {
      const r = ranges[k];
      if (pos < r.start) {
        const piece = data.subarray(pos - start, r.start - start);
        chunks.push(copy ? copyBytes(piece) : piece);
        added += piece.length;
      }
      for (const c of r.chunks) chunks.push(c);
      pos = r.end;
    }
    if (pos < end) {
      const piece = data.subarray(pos - start);
      chunks.push(copy ? copyBytes(piece) : piece);
      added += piece.length;
      pos = end;
    }
    ranges.splice(i, j - i, { start: mergedStart, end: pos, chunks });
    this.bytes += added;
    return added;
  }

  /**
   * Remove and return the range that continues the in-order stream at `at` (its start is
   * at or below `at`; bytes below `at` are trimmed off), or undefined if the next held byte
   * is beyond `at`. Ranges wholly below `at` are discarded.
   */
  take(at: number): ReassemblyRange | undefined {
    const ranges = this.ranges;
    while (ranges.length > 0 && ranges[0].end <= at) {
      const r = ranges.shift() as ReassemblyRange;
      this.bytes -= r.end - r.start;
    }
    if (ranges.length === 0 || ranges[0].start > at) return undefined;
    const r = ranges.shift() as ReassemblyRange;
    this.bytes -= r.end - r.start;
    let skip = at - r.start;
    if (skip > 0) {
      const chunks = r.chunks;
      let k = 0;
      while (skip >= chunks[k].length) skip -= chunks[k++].length;
      if (k > 0) chunks.splice(0, k);
      if (skip > 0) chunks[0] = chunks[0].subarray(skip);
      r.start = at;
    }
    return r;
  }

  /**
   * Up to `max` SACK blocks [start, end) (unwrapped), most recent first (RFC 2018 §4), then
   * the remaining ranges from the highest down.
   */
  sackBlocks(max: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    const ranges = this.ranges;
    const used: ReassemblyRange[] = [];
    for (let k = 0; k < this.recent.length && out.length < max; k++) {
      const r = this.find(this.recent[k]);
      if (r === undefined || used.includes(r)) continue;
      used.push(r);
      out.push([r.start, r.end]);
    }
    for (let k = ranges.length - 1; k >= 0 && out.length < max; k--) {
      const r = ranges[k];
      if (used.includes(r)) continue;
      out.push([r.start, r.end]);
    }
    return out;
  }

  clear(): void {
    this.ranges = [];
    this.bytes = 0;
    this.recent.length = 0;
  }

  private find(pos: number): ReassemblyRange | undefined {
    const ranges = this.ranges;
    let lo = 0;
    let hi = ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ranges[mid].end <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo < ranges.length && ranges[lo].start <= pos ? ranges[lo] : undefined;
  }

  private noteRecent(start: number): void {
    const recent = this.recent;
    const at = recent.indexOf(start);
    if (at === 0) return;
    if (at > 0) recent.splice(at, 1);
    else if (recent.length === RECENT) recent.pop();
    recent.unshift(start);
  }
}
