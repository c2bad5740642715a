/**
 * One buffer's share of a shared byte budget (a MemoryPool): the buffer may hold `floor` bytes
 * on its own; every byte above the floor is taken from the pool before it is held and given
 * back once it has left. The owner reports how many bytes it holds after each change
 * (`settle`), and asks `room` before it takes more: what the pool cannot give, the buffer does
 * not take (the receiver drops it and advertises a smaller window; the send buffer accepts a
 * shorter write). So the bytes all buffers hold never exceed the floors plus the pool.
 */

import type { MemoryPool } from './types.js';

export class BufferAccount {
  /** Bytes taken from the pool and not given back. */
  private granted = 0;
  /** Bytes the buffer held at its last settle (reported to the pool's usage figure). */
  private heldBytes = 0;

  constructor(
    private pool: MemoryPool | undefined,
    readonly floor: number,
  ) {}

  /** The most the buffer could hold now: its floor, what it was granted, and what the pool has left. */
  limit(): number {
    const p = this.pool;
    return p === undefined ? Infinity : this.floor + this.granted + p.available;
  }

  /**
   * The buffer holds `held` bytes and wants `n` more: how many of them it may take (0..n). The
   * grant covers them until the next settle().
   */
  room(held: number, n: number): number {
    const p = this.pool;
    if (p === undefined) return n;
    const need = held + n - this.floor - this.granted;
    if (need > 0) this.granted += p.take(need);
    const r = this.floor + this.granted - held;
    return r >= n ? n : r > 0 ? r : 0;
  }

  /** The buffer now holds `held` bytes: report the change, give back what it no longer needs. */
  settle(held: number): void {
    const p = this.pool;
    if (p === undefined) return;
    if (held !== this.heldBytes) {
      p.held(held - this.heldBytes);
      this.heldBytes = held;
    }
    const above = held > this.floor ? held - this.floor : 0;
    if (this.granted > above) {
      p.give(this.granted - above);
      this.granted = above;
    }
  }

  /** The connection closed: everything back to the pool, and no more accounting. */
  release(): void {
    const p = this.pool;
    if (p === undefined) return;
    if (this.heldBytes !== 0) p.held(-this.heldBytes);
    if (this.granted !== 0) p.give(this.granted);
    this.heldBytes = 0;
    this.granted = 0;
    this.pool = undefined;
  }
}
