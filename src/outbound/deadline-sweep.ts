/**
 * One timer for the deadlines of every connect attempt of an outbound (the SOCKS5 handshakes,
 * the HTTP CONNECTs), instead of a timer each: the sweep wakes at the earliest deadline, wakes
 * every attempt that is due, and sets itself for the next. A thousand connects at once cost one
 * armed timer, not a thousand.
 */

/** An attempt the sweep watches: when it wants waking, and what waking does. */
export interface Sweepable {
  wakeAt(): number;
  wake(now: number): void;
}

export class DeadlineSweep<T extends Sweepable> {
  /** The attempts in flight. */
  readonly pending = new Set<T>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;

  /** Watch `t` from now on (until it removes itself from `pending`). */
  add(t: T): void {
    this.pending.add(t);
    this.wakeBy(t.wakeAt());
  }

  /** Make sure the sweep runs by `at` (an attempt's deadline moved earlier). */
  wakeBy(at: number): void {
    if (at >= this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    // Never keeps the process alive: the attempt's socket does while it matters.
    this.timer = setTimeout(this.sweep, Math.max(0, at - performance.now())).unref();
  }

  /** Disarm (the outbound is closing; its attempts were failed). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private readonly sweep = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    // Timers may fire a fraction of a millisecond before performance.now() reaches `at`.
    const now = performance.now() + 1;
    for (const t of [...this.pending]) if (t.wakeAt() <= now) t.wake(now);
    let next = Infinity;
    for (const t of this.pending) next = Math.min(next, t.wakeAt());
    if (next !== Infinity) this.wakeBy(next);
  };
}
