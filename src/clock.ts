/**
 * Time is injected everywhere (stack timers, flow expiry, tunnel rekeying) so that tests can
 * drive it by hand. Only the composition root builds the real clock.
 */
export interface Clock {
  /** Monotonic milliseconds; never goes backwards, unrelated to wall time. */
  now(): number;
}

export const monotonicClock: Clock = {
  now: () => performance.now(),
};

/** A clock that moves only when told to; for deterministic tests. */
export class ManualClock implements Clock {
  private t: number;
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    if (ms < 0) throw new RangeError('a clock does not go backwards');
    this.t += ms;
  }
  set(ms: number): void {
    if (ms < this.t) throw new RangeError('a clock does not go backwards');
    this.t = ms;
  }
}
