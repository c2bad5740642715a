/**
 * The one byte budget of every flow buffer (limits.memoryBytes): TCP receive and send buffers,
 * the chunk a TCP flow holds while its app is not reading, UDP datagrams queued while a flow
 * opens. Buffers grow on demand and shrink as data leaves; the budget only counts.
 *
 * Each open TCP flow is promised a floor per direction (so a flow always makes progress: a few
 * segments in flight), charged when the flow opens; a flow is refused when even its floors
 * no longer fit. Everything above the floors comes from the pool that is left, first come
 * first served, and is given back as soon as the bytes leave. So the bytes all buffers hold
 * stay within floors + pool = the budget. The one exception is a socket read that arrived
 * while its flow's buffer was full (at most one read per flow, ≤ 64 KiB): it is already in
 * memory, so it is charged even when the pool is empty (`overBudgetBytes`), and the pool gives
 * nothing else until it is back under the budget.
 */
import type { MemoryPool } from '../stack/tcp/types.js';

/** The smallest and largest floor (bytes per direction of a TCP flow). */
const MIN_FLOOR = 2 * 1024;
const MAX_FLOOR = 64 * 1024;

/**
 * The floor for `maxFlows` flows in `totalBytes`: the floors of all flows together take at most
 * half the budget, the other half is the pool that bulk flows grow into. Whole KiB.
 */
export function floorFor(totalBytes: number, maxFlows: number): number {
  const f = Math.floor(totalBytes / (4 * Math.max(1, maxFlows)) / 1024) * 1024;
  return f < MIN_FLOOR ? MIN_FLOOR : f > MAX_FLOOR ? MAX_FLOOR : f;
}

export interface BufferBudgetStats {
  /** The budget (limits.memoryBytes). */
  budgetBytes: number;
  /** Floor per direction of each TCP flow. */
  floorBytes: number;
  /** Bytes all flow buffers hold now (floor parts included). */
  heldBytes: number;
  /** The most they held at once since start. */
  peakHeldBytes: number;
  /** Floors promised to the open flows, plus what buffers took above them. */
  committedBytes: number;
  /** How far committedBytes is over the budget now: socket reads charged although the pool was empty. */
  overBudgetBytes: number;
  /** TCP flows refused because their floors did not fit. */
  refusedFlows: number;
  /** Requests the pool could not fill in full (a smaller window or a shorter write followed). */
  shortGrants: number;
}

export class BufferBudget implements MemoryPool {
  readonly floorBytes: number;
  private flows = 0;
  /** Taken above the floors (forced charges included). */
  private granted = 0;
  private heldNow = 0;
  private peak = 0;
  private refused = 0;
  private short = 0;

  constructor(
    readonly totalBytes: number,
    /** Most TCP flows at once: sets the floor (floorFor) unless `floorBytes` is given. */
    maxFlows: number,
    floorBytes?: number,
  ) {
    this.floorBytes = floorBytes ?? floorFor(totalBytes, maxFlows);
  }

  /** Bytes a buffer can take now. */
  get available(): number {
    const a = this.totalBytes - this.flows * 2 * this.floorBytes - this.granted;
    return a > 0 ? a : 0;
  }

  /** A TCP flow opens: promise its floors, or false (refuse it) when they do not fit. */
  openFlow(): boolean {
    if (this.available < 2 * this.floorBytes) {
      this.refused++;
      return false;
    }
    this.flows++;
    return true;
  }

  /** A TCP flow opened with openFlow() is over (its buffers released their shares already). */
  closeFlow(): void {
    if (this.flows > 0) this.flows--;
  }

  take(n: number): number {
    const a = this.available;
    const g = n <= a ? n : a;
    if (g < n) this.short++;
    this.granted += g;
    return g;
  }

  give(n: number): void {
    this.granted -= n;
    if (this.granted < 0) this.granted = 0;
  }

  held(delta: number): void {
    this.heldNow += delta;
    if (this.heldNow > this.peak) this.peak = this.heldNow;
  }

  /**
   * Charge `n` bytes that are already in memory (taken from the pool as far as it reaches, the
   * rest forced beyond it); give them back with unforce(n) when they leave.
   */
  force(n: number): void {
    this.granted += n;
    this.held(n);
  }

  unforce(n: number): void {
    this.give(n);
    this.held(-n);
  }

  stats(): BufferBudgetStats {
    const committed = this.flows * 2 * this.floorBytes + this.granted;
    return {
      budgetBytes: this.totalBytes,
      floorBytes: this.floorBytes,
      heldBytes: this.heldNow,
      peakHeldBytes: this.peak,
      committedBytes: committed,
      overBudgetBytes: committed > this.totalBytes ? committed - this.totalBytes : 0,
      refusedFlows: this.refused,
      shortGrants: this.short,
    };
  }
}
