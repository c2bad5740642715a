/**
 * Gives memory back after a burst of flows has closed. Each closed flow frees its socket and
 * buffers, but glibc keeps the freed pages in its arenas: 10,000 flows opened and closed left
 * the process at ~360 MB where it idled at ~80 MB. When the open flows fall to half of a peak
 * of at least `minPeak`, one shared timer (never one per flow) fires `delayMs` later and runs a
 * full garbage collection (an idle process may not collect for minutes, and the flows' buffers are
 * only freed when it does), lets the empty slabs of received and read copies go, and then asks
 * the addon to trim the allocator. Without the addon (unit tests, `tunroute check`) only the
 * collection runs. While many flows keep closing (a quarter of `minPeak` per period or more) it
 * fires again, so the tail of the burst is given back too; a slow trickle of closes costs nothing.
 *
 * Once the closes have stopped, one more trim follows `settleMs` later. V8 gives back the young
 * generation it grew during the burst (up to 2 × 16 MiB of semi-spaces, which stayed committed
 * and resident) only in a collection that comes after ~5 s of little allocation: the
 * collections right after the burst still see the burst's allocation rate and shrink nothing.
 * (Measured with Node 20: a forced collection 1-4 s after a burst of allocation kept a 32 MiB
 * new space, one 6 s after it shrank it to 1 MiB.)
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tryLoadNative } from '../native/addon.js';
import { readSlabs } from '../outbound/pooled-reads.js';
import { recvSlabs } from '../stack/tcp/recv-slabs.js';

let gcFn: (() => void) | undefined;
/** V8's full collection: the exposed `gc`, or one obtained the way test runners do it. */
function fullGc(): void {
  if (gcFn === undefined) {
    const exposed: unknown = (globalThis as { gc?: unknown }).gc;
    if (typeof exposed === 'function') gcFn = exposed as () => void;
    else {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
      setFlagsFromString('--no-expose-gc');
    }
  }
  gcFn();
}

function gcAndTrim(): void {
  recvSlabs.trim();
  readSlabs.trim();
  fullGc();
  tryLoadNative()?.trimMemory?.();
}

export interface TrimAfterBurstOptions {
  /** Trim only after at least this many flows were open at once (default 512). */
  minPeak?: number;
  /** From the drop to the trim, and between trims while flows keep closing (default 2000 ms). */
  delayMs?: number;
  /** From the last of those trims to the settling one (default 5500 ms; 0: none). */
  settleMs?: number;
  /** The trim itself (default a full collection, then the addon's malloc_trim; injected for tests). */
  trim?: () => void;
}

export class TrimAfterBurst {
  private peak = 0;
  private open = 0;
  /** Flows closed since the timer was (re)armed: the burst may still be going on. */
  private closedSinceArm = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The burst's trims have not been followed by the settling one yet. */
  private settleDue = false;
  private readonly minPeak: number;
  private readonly delayMs: number;
  private readonly settleMs: number;
  private readonly trim: () => void;

  constructor(opts: TrimAfterBurstOptions = {}) {
    this.minPeak = opts.minPeak ?? 512;
    this.delayMs = opts.delayMs ?? 2000;
    this.settleMs = opts.settleMs ?? 5500;
    this.trim = opts.trim ?? gcAndTrim;
  }

  /** A flow opened; `open` flows are open now. */
  opened(open: number): void {
    this.open = open;
    if (open > this.peak) this.peak = open;
  }

  /** A flow closed; `open` flows are left. */
  closed(open: number): void {
    this.open = open;
    if (this.timer !== undefined) {
      this.closedSinceArm++;
      return;
    }
    if (this.peak < this.minPeak || open * 2 > this.peak) return;
    this.closedSinceArm = 0;
    this.settleDue = this.settleMs > 0;
    this.arm(this.delayMs);
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.fire, ms);
    this.timer.unref();
  }

  /**
   * Arm a settling trim alone, `ms` from now (unless a trim is pending): start-up allocates
   * enough to grow the young generation too, and an idle process would keep it.
   */
  settle(ms: number): void {
    if (this.timer !== undefined || this.settleMs <= 0) return;
    this.closedSinceArm = 0;
    this.settleDue = false;
    this.arm(ms);
  }

  /** Cancel a pending trim (the relay is closing). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.settleDue = false;
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    // The next burst is measured from what is open now.
    this.peak = this.open;
    this.trim();
    if (this.closedSinceArm * 4 >= this.minPeak) {
      // Still closing in numbers: their memory is freed after this trim; come back for it.
      this.closedSinceArm = 0;
      this.settleDue = this.settleMs > 0;
      this.arm(this.delayMs);
    } else if (this.settleDue) {
      // The burst is over: once allocation has been quiet for a while, the young generation too.
      this.settleDue = false;
      this.closedSinceArm = 0;
      this.arm(this.settleMs);
    }
  };
}
