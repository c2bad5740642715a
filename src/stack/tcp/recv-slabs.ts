/**
 * Where received segment text is copied to when it leaves the link's reused read buffer, so
 * that the memory comes back when the application has consumed it, not when the garbage
 * collector finds it unreferenced.
 *
 * Why: an upload arrives as GRO super-packets of up to 64 KiB. Each copy used to be a fresh
 * buffer of its own (`copyBytes`): a malloc, page faults on first touch, and external memory
 * that drove V8 into a major collection every ~64 MB. Profiled during an iperf3 upload through
 * dante, those collections (concurrent marking, sweeping) took ~23 % of tunroute's CPU and the
 * page faults under the copy another ~5 %.
 *
 * How: copies are carved one after another out of 256 KiB slabs. Each slab counts the copies
 * still live in it. The receiver that made a copy releases it when `consumed()` says the
 * application is done with those bytes (the relay says so once the upstream socket's write
 * has completed, so the kernel holds its own copy). A slab whose count falls to zero is used
 * again. A copy that is never released (its connection closed first, a write failed) only
 * keeps its slab out of the pool: the slab is then left to the garbage collector, as before,
 * and nothing is reused while a view into it may still be read.
 */

/** One slab and the copies in it that are not released yet. */
export interface RecvSlab {
  readonly bytes: Uint8Array;
  live: number;
  /** The pool it goes back to. */
  readonly pool: RecvSlabs;
}

/**
 * A slab lives on while any copy in it is unreleased: a few bytes an upstream never takes keep
 * the whole slab. 256 KiB (four GRO super-packets) keeps that worst case where the small-copy
 * slabs of bytes.ts already have it.
 */
const SLAB_BYTES = 256 * 1024;
/** Copies larger than this get a buffer of their own (none arrive: GRO stops at 64 KiB). */
const MAX_COPY = 128 * 1024;
/**
 * Empty slabs kept for reuse beyond the current one; more go back to the collector. Received
 * segment text is consumed within a write, but bytes read for the app stay until it
 * acknowledges them: a flow's whole send buffer (1 MiB, four slabs) is in flight at once, and
 * a pool that kept fewer would hand slabs to the collector and allocate them again.
 */
const KEEP_FREE = 6;

export class RecvSlabs {
  /** The slab copies are carved from, and how far. */
  private cur: RecvSlab | undefined = undefined;
  private used = 0;
  private readonly free: RecvSlab[] = [];
  /** The slab the last `copy()` used (undefined: a copy of its own, not to be released). */
  lastSlab: RecvSlab | undefined = undefined;
  /** Slabs allocated, and slabs used again: the ratio says whether the pool works. */
  allocated = 0;
  reused = 0;

  constructor(
    private readonly slabBytes = SLAB_BYTES,
    private readonly keepFree = KEEP_FREE,
  ) {}

  /** A copy of `src` that stays valid until released; its slab is `lastSlab` afterwards. */
  copy(src: Uint8Array): Uint8Array {
    const n = src.length;
    if (n > MAX_COPY || n > this.slabBytes) {
      this.lastSlab = undefined;
      const own = new Uint8Array(n);
      own.set(src);
      return own;
    }
    let s = this.cur;
    if (s === undefined || this.used + n > this.slabBytes) s = this.next();
    // Keep copies 8-byte aligned, as a fresh allocation would be.
    const out = s.bytes.subarray(this.used, this.used + n);
    out.set(src);
    this.used += (n + 7) & ~7;
    s.live++;
    this.lastSlab = s;
    return out;
  }

  /** One more holder of a copy in `slab` (a send buffer that keeps it by reference). */
  retain(slab: RecvSlab): void {
    slab.live++;
  }

  /** One holder of a copy from `slab` reads it no more. */
  release(slab: RecvSlab): void {
    if (slab.live <= 0) throw new RangeError('a received copy was released twice');
    if (--slab.live > 0) return;
    if (slab === this.cur) this.used = 0; // empty: carve from its start again
    else if (this.free.length < this.keepFree) this.free.push(slab);
  }

  /** Slabs held now (current and free), for tests and stats. */
  get held(): number {
    return (this.cur === undefined ? 0 : 1) + this.free.length;
  }

  /** Let the free slabs go (after a burst, with the rest of the memory trimmed). */
  trim(): void {
    this.free.length = 0;
  }

  /** The current slab is full: start it again if its copies are all gone, else take another. */
  private next(): RecvSlab {
    this.used = 0;
    const old = this.cur;
    if (old !== undefined && old.live === 0) {
      this.reused++;
      return old;
    }
    // `old` is retired: release() hands it to the free list when its last copy goes.
    let s = this.free.pop();
    if (s === undefined) {
      // Uninitialized: every byte handed out is overwritten by the copy first.
      const b = Buffer.allocUnsafeSlow(this.slabBytes);
      s = { bytes: new Uint8Array(b.buffer, b.byteOffset, this.slabBytes), live: 0, pool: this };
      this.allocated++;
    } else this.reused++;
    this.cur = s;
    return s;
  }
}

/** The pool of segment text received from the device: every connection's copies come from it. */
export const recvSlabs = new RecvSlabs();
