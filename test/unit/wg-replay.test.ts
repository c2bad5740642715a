import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES } from '../../src/wireguard/keypair.js';
import { REPLAY_WINDOW_SIZE, ReplayFilter } from '../../src/wireguard/replay.js';

const W = BigInt(REPLAY_WINDOW_SIZE); // 2016: 2048 bits less the block being filled
const T = W + 1n;
const LIMIT = REJECT_AFTER_MESSAGES;

// Numbered as wireguard-go's replay table: [counter, accepted?] applied in order to one filter.
const CASES: [bigint, boolean, string][] = [
  [0n, true, 'first message'],
  [1n, true, 'in order'],
  [1n, false, 'duplicate'],
  [9n, true, 'jump ahead a little'],
  [8n, true, 'reorder within window'],
  [7n, true, 'reorder within window'],
  [7n, false, 'duplicate of a reordered one'],
  [T, true, 'one past the window size ahead'],
  [T - 1n, true, 'reorder just behind the newest'],
  [T - 1n, false, 'duplicate'],
  [T - 2n, true, 'reorder'],
  [2n, true, 'oldest still inside the window (T - 2 = W - 1 behind)'],
  [2n, false, 'duplicate at the edge'],
  [T + 16n, true, 'ahead again'],
  [3n, false, 'too old: fell out of the window'],
  [T + 16n, false, 'duplicate'],
  [T * 4n, true, 'jump far ahead (whole ring cleared)'],
  [T * 4n - (W - 1n), true, 'just inside the window after the jump'],
  [10n, false, 'far behind'],
  [T * 4n - W, true, 'exactly W behind: the window edge is inclusive'],
  [T * 4n - (W + 1n), false, 'W + 1 behind: too old'],
  [T * 4n - (W - 1n), false, 'duplicate after the jump'],
  [T * 4n + 1n, true, 'in order after the jump'],
  [T * 4n, false, 'duplicate of the jump'],
  [LIMIT - 1n, true, 'counter just below REJECT_AFTER_MESSAGES'],
  [LIMIT, false, 'counter at REJECT_AFTER_MESSAGES'],
  [(1n << 64n) - 1n, false, 'largest 64-bit counter'],
  [LIMIT - 2n, true, 'near the limit, reordered'],
  [LIMIT - 1n, false, 'near the limit, duplicate'],
  [LIMIT - 1n - W, true, 'near the limit, at the window edge'],
  [LIMIT - 2n - W, false, 'near the limit, too old'],
];

describe('replay window (RFC 6479, 2048-bit ring)', () => {
  it('window size is 2048 - 32', () => {
    expect(REPLAY_WINDOW_SIZE).toBe(2016);
  });

  it('numbered table', () => {
    const f = new ReplayFilter();
    CASES.forEach(([counter, want, why], i) => {
      expect(f.validate(counter, LIMIT), `case ${i + 1}: ${counter} (${why})`).toBe(want);
    });
  });

  it('every counter of a long in-order run is accepted once', () => {
    const f = new ReplayFilter();
    const refused: bigint[] = [];
    for (let i = 0n; i < 10_000n; i++) if (!f.validate(i, LIMIT)) refused.push(i);
    expect(refused).toEqual([]);
    const accepted: bigint[] = [];
    for (let i = 10_000n - W; i < 10_000n; i++) if (f.validate(i, LIMIT)) accepted.push(i);
    expect(accepted).toEqual([]);
  });

  it('any order within the window, each once', () => {
    const f = new ReplayFilter();
    expect(f.validate(5000n, LIMIT)).toBe(true);
    const seen = new Set<bigint>([5000n]);
    // A fixed shuffle of [5000 - W, 5000]: multiply by a unit mod W+1.
    for (let k = 0n; k <= W; k++) {
      const c = 5000n - ((k * 1009n) % (W + 1n));
      expect(f.validate(c, LIMIT), `counter ${c}`).toBe(!seen.has(c));
      seen.add(c);
    }
  });

  it('reset forgets everything; the limit argument is honoured', () => {
    const f = new ReplayFilter();
    expect(f.validate(100n, LIMIT)).toBe(true);
    f.reset();
    expect(f.validate(100n, LIMIT)).toBe(true);
    expect(f.validate(200n, 200n)).toBe(false);
    expect(f.validate(-1n, LIMIT)).toBe(false);
  });
});
