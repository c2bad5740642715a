/** RFC 6298 RTO estimation: first sample, smoothing, bounds, back-off, Karn's rule. */
import { describe, expect, it } from 'vitest';
import { RttEstimator } from '../../src/stack/tcp/index.js';

describe('RFC 6298 estimator', () => {
  it('starts at 1 s', () => {
    expect(new RttEstimator().rto).toBe(1000);
  });

  it('first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR', () => {
    const r = new RttEstimator();
    r.sample(100);
    expect(r.srtt).toBe(100);
    expect(r.rttvar).toBe(50);
    expect(r.rto).toBe(300);
  });

  it('later samples are smoothed with alpha 1/8, beta 1/4', () => {
    const r = new RttEstimator();
    r.sample(100);
    r.sample(200);
    expect(r.rttvar).toBe(0.75 * 50 + 0.25 * 100);
    expect(r.srtt).toBe(0.875 * 100 + 0.125 * 200);
    expect(r.rto).toBeCloseTo(112.5 + 4 * 62.5);
  });

  it('never goes below the 200 ms floor or above 60 s', () => {
    const r = new RttEstimator();
    r.sample(1);
    expect(r.rto).toBe(200);
    r.sample(100_000);
    expect(r.rto).toBe(60_000);
  });

  it('backs off by doubling up to the maximum, and a sample clears the back-off', () => {
    const r = new RttEstimator();
    r.sample(100); // RTO 300
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      r.backoff();
      seen.push(r.rto);
    }
    expect(seen).toEqual([600, 1200, 2400, 4800, 9600, 19200, 38400, 60000, 60000, 60000]);
    r.sample(100);
    expect(r.backoffs).toBe(0);
    expect(r.rto).toBeLessThan(600);
  });

  it("Karn: a timed segment gives a sample when acknowledged, none after a retransmission", () => {
    const r = new RttEstimator();
    r.startTiming(1000, 10);
    r.startTiming(2000, 20); // one at a time: ignored
    expect(r.ackTiming(999, 50)).toBe(false);
    expect(r.ackTiming(1000, 60)).toBe(true);
    expect(r.srtt).toBe(50);
    r.startTiming(3000, 100);
    r.invalidateTiming();
    expect(r.ackTiming(3000, 150)).toBe(false);
    expect(r.samples).toBe(1);
  });

  it('honours a custom configuration', () => {
    const r = new RttEstimator({ initialRtoMs: 3000, minRtoMs: 1000, maxRtoMs: 120_000 });
    expect(r.rto).toBe(3000);
    r.sample(10);
    expect(r.rto).toBe(1000);
  });
});
