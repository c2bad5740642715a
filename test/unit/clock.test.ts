import { describe, expect, it } from 'vitest';
import { ManualClock, monotonicClock, realTimers, timersOf } from '../../src/clock.js';

describe('ManualClock timers', () => {
  it('runs each timer at its due time, in order, only when the clock is moved there', () => {
    const clock = new ManualClock(100);
    const ran: Array<[string, number]> = [];
    clock.setTimer(() => ran.push(['b', clock.now()]), 20);
    clock.setTimer(() => ran.push(['a', clock.now()]), 10);
    clock.advance(9);
    expect(ran).toEqual([]);
    clock.advance(30);
    expect(ran).toEqual([
      ['a', 110],
      ['b', 120],
    ]);
    expect(clock.now()).toBe(139);
    expect(clock.pendingTimers).toBe(0);
  });

  it('runs a timer armed by a timer within the same advance, and never one that was cleared', () => {
    const clock = new ManualClock();
    const ran: number[] = [];
    const dropped = clock.setTimer(() => ran.push(-1), 5);
    clock.setTimer(() => {
      ran.push(clock.now());
      clock.setTimer(() => ran.push(clock.now()), 10);
    }, 10);
    clock.clearTimer(dropped);
    clock.set(25);
    expect(ran).toEqual([10, 20]);
  });
});

describe('timersOf', () => {
  it('is the clock itself when it has timers, else the event loop\'s', () => {
    const manual = new ManualClock();
    expect(timersOf(manual)).toBe(manual);
    expect(timersOf(monotonicClock)).toBe(realTimers);
    expect(timersOf({ now: () => 0 })).toBe(realTimers);
  });
});
