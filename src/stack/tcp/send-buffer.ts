/**
 * RFC 9293 §3.3.1 (send sequence space) — the bytes between SND.UNA and the end of what the
 * application wrote: unacknowledged data, then data not yet sent.
 *
 *              1         2          3          4
 *         ----------|----------|----------|----------
 *                SND.UNA    SND.NXT    SND.UNA
 *                                     +SND.WND
 *    1 - old sequence numbers that have been acknowledged   (released here)
 *    2 - sequence numbers of unacknowledged data             (held here)
 *    3 - sequence numbers allowed for new data transmission  (held here, not yet sent)
 *
 * Positions are stream offsets (byte 0 is the first byte written), not sequence numbers.
 * Writes are kept as a list of chunks — by reference: `write()` takes ownership of the bytes it
 * accepts, the caller must not modify them afterwards (as with a Node socket). Tiny writes are
 * copied into a shared staging block so that a stream of 1-byte writes does not become a list
 * of 1-byte chunks. The staging block is let go when everything is acknowledged, so an idle
 * flow holds no buffer at all (a 16 KiB block kept per flow was most of an idle flow's
 * memory); it starts small after each drain and is full size only once a burst of tiny writes
 * has filled a small one. `slice()` returns a view when the range lies in one chunk; one that spans
 * chunks is a copy, or two views (see the slice modes at the constructor). Finding a chunk is
 * a hint check, then a binary search: no scan of the buffer per segment. The capacity bounds memory: `write()` accepts what fits and returns the
 * count — that is the backpressure signal. With a shared budget (`account`) the capacity is a
 * ceiling: what fits is also what the budget still covers.
 */

import type { BufferAccount } from './buffer-account.js';
import { allocBytes } from './bytes.js';
import type { RecvSlab } from './recv-slabs.js';

/** Writes shorter than this are copied into the staging block. */
const SMALL_WRITE = 512;
const STAGE_SIZE = 16 * 1024;
/** The first staging block after a drain: one request or reply of a chatty protocol fits. */
const FIRST_STAGE_SIZE = 2 * 1024;
const EMPTY = new Uint8Array(0);

/** How a send buffer's consumer takes slices (see the constructor). */
export type SliceMode = 'keep' | 'scratch' | 'split';

/** One scratch for every buffer in 'scratch' mode: its contents live until the next slice. */
let scratch = new Uint8Array(0);
function scratchBytes(n: number): Uint8Array {
  if (scratch.length < n) scratch = new Uint8Array(Math.max(n, 64 * 1024));
  return scratch.subarray(0, n);
}

export class SendBuffer {
  private chunks: Uint8Array[] = [];
  private offs: number[] = [];
  /**
   * The slab of each chunk kept by reference from a pooled read (undefined: none), released
   * when the peer acknowledges the chunk. Made when such a chunk is first written, dropped
   * when everything is acknowledged.
   */
  private slabs: Array<RecvSlab | undefined> | undefined = undefined;
  private head = 0;
  private startOff = 0;
  private endOff = 0;
  private hint = 0;
  private stage: Uint8Array = EMPTY;
  private stageUsed = 0;
  /** Index of the chunk that is a view of the staging block and may still grow, or -1. */
  private stageChunk = -1;
  private stageChunkFrom = 0;

  /** In 'split' mode: the second piece of the last slice, when it spanned exactly two chunks. */
  private tail: Uint8Array | undefined;

  /**
   * `slices`, how the consumer takes a slice:
   * - 'keep': it may keep it, so a slice that spans chunks is a fresh copy;
   * - 'scratch': it is done with a slice before it asks for the next one (the stack's output
   *   writes each segment out at once), so a spanning slice is copied into one shared scratch;
   * - 'split': as 'scratch', and it also takes a payload in two pieces: a slice spanning two
   *   chunks is returned as the first piece, the second waits in `takeTail()`; no copy at all.
   */
  constructor(
    public capacity: number,
    private readonly slices: SliceMode = 'keep',
    /** The share of a shared budget this buffer draws from, or undefined: capacity is its own. */
    private readonly account: BufferAccount | undefined = undefined,
  ) {}

  /** The connection closed: its share of the budget goes back. */
  release(): void {
    this.account?.release();
  }

  /** Stream offset of the first unacknowledged byte. */
  get start(): number {
    return this.startOff;
  }

  /** Stream offset just past the last byte written. */
  get end(): number {
    return this.endOff;
  }

  /** Bytes held (unacknowledged + unsent). */
  get length(): number {
    return this.endOff - this.startOff;
  }

  /** Bytes `write()` would accept now. */
  get free(): number {
    const a = this.account;
    const held = this.endOff - this.startOff;
    let f = this.capacity - held;
    if (a !== undefined) {
      const b = a.limit() - held;
      if (b < f) f = b;
    }
    return f > 0 ? f : 0;
  }

  /**
   * Append as much of `data` as fits; returns the number of bytes accepted. `slab`: `data` is a
   * copy in that slab, which must not be reused while the bytes are kept here by reference
   * (they are retained until acknowledged; a small write is copied and keeps nothing).
   */
  write(data: Uint8Array, slab?: RecvSlab): number {
    let n = Math.min(data.length, this.free);
    if (n === 0) return 0;
    const a = this.account;
    if (a !== undefined) {
      n = a.room(this.endOff - this.startOff, n);
      if (n === 0) return 0;
    }
    if (n < SMALL_WRITE) this.writeSmall(n === data.length ? data : data.subarray(0, n));
    else {
      if (slab !== undefined) {
        slab.pool.retain(slab);
        const slabs = (this.slabs ??= new Array<RecvSlab | undefined>(this.chunks.length).fill(undefined));
        slabs.push(slab);
      } else this.slabs?.push(undefined);
      this.chunks.push(n === data.length ? data : data.subarray(0, n));
      this.offs.push(this.endOff);
      this.stageChunk = -1;
    }
    this.endOff += n;
    a?.settle(this.endOff - this.startOff);
    return n;
  }

  /** The second piece of the last slice ('split' mode), once; undefined when it was whole. */
  takeTail(): Uint8Array | undefined {
    const t = this.tail;
    this.tail = undefined;
    return t;
  }

  /** Release everything below stream offset `offset` (the peer acknowledged it). */
  ack(offset: number): void {
    if (offset <= this.startOff) return;
    if (offset > this.endOff) offset = this.endOff;
    this.startOff = offset;
    this.account?.settle(this.endOff - offset);
    const chunks = this.chunks;
    const offs = this.offs;
    let head = this.head;
    const slabs = this.slabs;
    while (head < chunks.length && offs[head] + chunks[head].length <= offset) {
      chunks[head] = EMPTY;
      const slab = slabs?.[head];
      if (slab !== undefined && slabs !== undefined) {
        slabs[head] = undefined;
        slab.pool.release(slab);
      }
      head++;
    }
    this.head = head;
    if (this.stageChunk >= 0 && this.stageChunk < head) this.stageChunk = -1;
    if (head === chunks.length) {
      chunks.length = 0;
      offs.length = 0;
      this.slabs = undefined;
      this.head = 0;
      this.hint = 0;
      this.stageChunk = -1;
      // No chunk refers to the staging block any more (a view a consumer kept stays valid: the
      // block is never reused once dropped): let it go rather than hold it while the flow idles.
      this.stage = EMPTY;
      this.stageUsed = 0;
    } else if (head >= 1024 && head * 2 >= chunks.length) {
      chunks.splice(0, head);
      offs.splice(0, head);
      slabs?.splice(0, head);
      this.head = 0;
      this.hint = 0;
      if (this.stageChunk >= 0) this.stageChunk -= head;
    }
  }

  /** `len` bytes from stream offset `offset` (which must lie within [start, end)). */
  slice(offset: number, len: number): Uint8Array {
    if (len <= 0) return EMPTY;
    if (offset < this.startOff || offset + len > this.endOff) {
      throw new RangeError(`send buffer slice [${offset}, ${offset + len}) outside [${this.startOff}, ${this.endOff})`);
    }
    const chunks = this.chunks;
    let i = this.find(offset);
    let c = chunks[i];
    let o = offset - this.offs[i];
    if (o + len <= c.length) return c.subarray(o, o + len);
    if (this.slices === 'split' && o + len <= c.length + chunks[i + 1].length) {
      this.tail = chunks[i + 1].subarray(0, o + len - c.length);
      this.hint = i + 1;
      return c.subarray(o);
    }
    const out = this.slices === 'keep' ? allocBytes(len) : scratchBytes(len);
    let filled = 0;
    for (;;) {
      const take = Math.min(c.length - o, len - filled);
      out.set(o === 0 && take === c.length ? c : c.subarray(o, o + take), filled);
      filled += take;
      if (filled === len) break;
      c = chunks[++i];
      o = 0;
    }
    this.hint = i;
    return out;
  }

  private find(offset: number): number {
    const offs = this.offs;
    const chunks = this.chunks;
    const h = this.hint;
    if (h >= this.head && h < chunks.length && offs[h] <= offset) {
      if (offset < offs[h] + chunks[h].length) return h;
      if (h + 1 < chunks.length && offset < offs[h + 1] + chunks[h + 1].length) return (this.hint = h + 1);
    }
    let lo = this.head;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (offs[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return (this.hint = lo);
  }

  private writeSmall(data: Uint8Array): void {
    const n = data.length;
    if (this.stageChunk >= 0 && this.stageUsed + n <= this.stage.length) {
      this.stage.set(data, this.stageUsed);
      this.stageUsed += n;
      this.chunks[this.stageChunk] = this.stage.subarray(this.stageChunkFrom, this.stageUsed);
      return;
    }
    if (this.stageUsed + n > this.stage.length) {
      // Uninitialized (every byte is written before a slice can read it), and its own memory, not
      // a slab's: an idle flow's last unacknowledged reply must not pin a shared slab.
      const b = Buffer.allocUnsafeSlow(this.stage.length === 0 ? FIRST_STAGE_SIZE : STAGE_SIZE);
      this.stage = new Uint8Array(b.buffer, b.byteOffset, b.length);
      this.stageUsed = 0;
    }
    this.stageChunkFrom = this.stageUsed;
    this.stage.set(data, this.stageUsed);
    this.stageUsed += n;
    this.chunks.push(this.stage.subarray(this.stageChunkFrom, this.stageUsed));
    this.offs.push(this.endOff);
    this.slabs?.push(undefined);
    this.stageChunk = this.chunks.length - 1;
  }
}
