import { afterEach, describe, expect, it, vi } from 'vitest';
import { TrimAfterBurst } from '../../src/relay/trim-after-burst.js';

describe('TrimAfterBurst', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('trims a delay after the open flows fell to half of a large peak, again while many keep closing', () => {
    vi.useFakeTimers();
    let trims = 0;
    const t = new TrimAfterBurst({ minPeak: 100, delayMs: 1000, settleMs: 0, trim: () => trims++ });
    for (let n = 1; n <= 200; n++) t.opened(n);
    for (let n = 199; n > 100; n--) t.closed(n);
    vi.advanceTimersByTime(5000);
    expect(trims).toBe(0);
    for (let n = 100; n >= 0; n--) t.closed(n);
    vi.advanceTimersByTime(999);
    expect(trims).toBe(0);
    vi.advanceTimersByTime(1);
    expect(trims).toBe(1);
    // 100 flows closed after the timer was armed (at least minPeak / 4): one more trim for them.
    vi.advanceTimersByTime(1000);
    expect(trims).toBe(2);
    vi.advanceTimersByTime(10_000);
    expect(trims).toBe(2);
  });

  it('leaves a small burst alone, and stop() cancels a pending trim', () => {
    vi.useFakeTimers();
    let trims = 0;
    const t = new TrimAfterBurst({ minPeak: 100, delayMs: 1000, settleMs: 0, trim: () => trims++ });
    for (let n = 1; n <= 50; n++) t.opened(n);
    for (let n = 49; n >= 0; n--) t.closed(n);
    vi.advanceTimersByTime(5000);
    expect(trims).toBe(0);
    for (let n = 1; n <= 300; n++) t.opened(n);
    t.closed(100);
    t.stop();
    vi.advanceTimersByTime(5000);
    expect(trims).toBe(0);
  });

  it('trims once more, settleMs after the burst\'s last trim, and only once', () => {
    vi.useFakeTimers();
    let trims = 0;
    const t = new TrimAfterBurst({ minPeak: 100, delayMs: 1000, settleMs: 5000, trim: () => trims++ });
    for (let n = 1; n <= 200; n++) t.opened(n);
    for (let n = 199; n >= 100; n--) t.closed(n);
    vi.advanceTimersByTime(1000);
    expect(trims).toBe(1);
    // Nothing closed since: the settling trim comes 5 s later, and nothing after it.
    vi.advanceTimersByTime(4999);
    expect(trims).toBe(1);
    vi.advanceTimersByTime(1);
    expect(trims).toBe(2);
    vi.advanceTimersByTime(60_000);
    expect(trims).toBe(2);
  });

  it('settle() arms one trim alone, and not while another is pending', () => {
    vi.useFakeTimers();
    let trims = 0;
    const t = new TrimAfterBurst({ minPeak: 100, delayMs: 1000, settleMs: 5000, trim: () => trims++ });
    t.settle(15_000);
    t.settle(1000);
    vi.advanceTimersByTime(14_999);
    expect(trims).toBe(0);
    vi.advanceTimersByTime(1);
    expect(trims).toBe(1);
    vi.advanceTimersByTime(60_000);
    expect(trims).toBe(1);
  });

  it('measures the next burst from the flows still open at the trim', () => {
    vi.useFakeTimers();
    let trims = 0;
    const t = new TrimAfterBurst({ minPeak: 100, delayMs: 1000, settleMs: 0, trim: () => trims++ });
    for (let n = 1; n <= 400; n++) t.opened(n);
    t.closed(200);
    vi.advanceTimersByTime(1000);
    expect(trims).toBe(1);
    // 200 still open: the next trim comes when they fall to 100.
    t.closed(150);
    vi.advanceTimersByTime(1000);
    expect(trims).toBe(1);
    t.closed(100);
    vi.advanceTimersByTime(1000);
    expect(trims).toBe(2);
  });
});
