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

/**
 * One-shot timers behind an interface, beside the clock they are measured on: the real ones
 * are the event loop's, a ManualClock fires its own when it is advanced.
 */
export interface Timers {
  /** Run `fn` once, `ms` from now. Real timers never keep the process alive. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}
/** Opaque: what `setTimer` returned, for `clearTimer`. */
export type TimerHandle = object;

export const realTimers: Timers = {
  setTimer: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** The clock's own timers when it has them (a ManualClock), else the event loop's. */
export function timersOf(clock: Clock): Timers {
  return hasTimers(clock) ? clock : realTimers;
}

function hasTimers(clock: Clock): clock is Clock & Timers {
  return 'setTimer' in clock && 'clearTimer' in clock;
}

interface ManualTimer {
  at: number;
  fn: () => void;
}

/**
 * A clock that moves only when told to; for deterministic tests. Its timers (use it as the
 * `timers` of what it drives) run inside advance() and set(), each at its due time, in order.
 */
export class ManualClock implements Clock, Timers {
  private t: number;
  private readonly timers = new Set<ManualTimer>();
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    if (ms < 0) throw new RangeError('a clock does not go backwards');
    this.moveTo(this.t + ms);
  }
  set(ms: number): void {
    if (ms < this.t) throw new RangeError('a clock does not go backwards');
    this.moveTo(ms);
  }
  setTimer(fn: () => void, ms: number): TimerHandle {
    const timer: ManualTimer = { at: this.t + Math.max(0, ms), fn };
    this.timers.add(timer);
    return timer;
  }
  clearTimer(handle: TimerHandle): void {
    this.timers.delete(handle as ManualTimer);
  }
  /** Timers armed and not yet run. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Step to each due timer in turn (a timer may arm another), then to `to`. */
  private moveTo(to: number): void {
    for (;;) {
      let next: ManualTimer | undefined;
      for (const tm of this.timers) if (tm.at <= to && (next === undefined || tm.at < next.at)) next = tm;
      if (next === undefined) break;
      this.timers.delete(next);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = to;
  }
}
