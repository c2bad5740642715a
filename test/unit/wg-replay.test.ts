import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES } from '../../src/wireguard/keypair.js';
import { REPLAY_WINDOW_SIZE, ReplayFilter } from '../../src/wireguard/replay.js';
import { mulberry32 } from '../helpers/random.js';

const W = BigInt(REPLAY_WINDOW_SIZE); // 8128: 8192 bits less the word being filled
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

describe('replay window (RFC 6479, 8192-bit ring)', () => {
  it('window size is 8192 - 64, as the kernel and wireguard-go', () => {
    expect(REPLAY_WINDOW_SIZE).toBe(8128);
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
    const top = 20_000n;
    expect(f.validate(top, LIMIT)).toBe(true);
    const seen = new Set<bigint>([top]);
    // A fixed shuffle of [top - W, top]: multiply by a unit mod W+1 (8129 = 11 * 739).
    for (let k = 0n; k <= W; k++) {
      const c = top - ((k * 1009n) % (W + 1n));
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

  it('reordering by 5,000 packets is accepted, every packet once', () => {
    // Packets 0..N-1 arrive in blocks of 5,000 sent in reverse, then reversed inside a block:
    // each packet arrives up to 5,000 places away from its place in order.
    const f = new ReplayFilter();
    const N = 50_000;
    const D = 5_000;
    const refused: number[] = [];
    for (let block = 0; block < N; block += D) {
      for (let i = block + D - 1; i >= block; i--) if (!f.validate(BigInt(i), LIMIT)) refused.push(i);
    }
    expect(refused).toEqual([]);
    // Every 10th packet held back and delivered 5,000 packets late, the others in order.
    const g = new ReplayFilter();
    const late: number[] = [];
    const lateRefused: number[] = [];
    for (let i = 0; i < N; i++) {
      if (i % 10 === 0) late.push(i);
      else expect(g.validate(BigInt(i), LIMIT), `on time ${i}`).toBe(true);
      if (late.length > 0 && late[0] <= i - D) {
        const c = late.shift() ?? 0;
        if (!g.validate(BigInt(c), LIMIT)) lateRefused.push(c);
      }
    }
    expect(lateRefused).toEqual([]);
  });

  it('a replay is refused, also a replay of a reordered packet', () => {
    const f = new ReplayFilter();
    for (let i = 0n; i < 10_000n; i++) f.validate(i, LIMIT);
    expect(f.validate(9_999n, LIMIT)).toBe(false);
    expect(f.validate(5_000n, LIMIT)).toBe(false);
    expect(f.validate(20_000n, LIMIT)).toBe(true);
    expect(f.validate(15_000n, LIMIT)).toBe(true);
    expect(f.validate(15_000n, LIMIT)).toBe(false);
  });

  it('a counter older than the window is refused, even if never seen', () => {
    const f = new ReplayFilter();
    expect(f.validate(100_000n, LIMIT)).toBe(true);
    expect(f.validate(100_000n - W, LIMIT)).toBe(true);
    expect(f.validate(100_000n - W - 1n, LIMIT)).toBe(false);
    expect(f.validate(1n, LIMIT)).toBe(false);
  });

  // A naive reference: a set of every counter seen and the highest one. Same answers required.
  function naive(): (c: bigint) => boolean {
    const seen = new Set<bigint>();
    let last = 0n;
    return (c) => {
      if (c < 0n || c >= LIMIT) return false;
      if (c <= last && last - c > W) return false;
      if (seen.has(c)) return false;
      seen.add(c);
      if (c > last) last = c;
      return true;
    };
  }

  for (const seed of [1, 2, 3, 42, 6479, 8128]) {
    it(`agrees with a Set-based reference on random sequences (seed ${seed})`, () => {
      const random = mulberry32(seed);
      const f = new ReplayFilter();
      const ref = naive();
      let top = 0n;
      for (let i = 0; i < 30_000; i++) {
        // Mostly near the top (new, reordered, replayed, around the window edge), sometimes a
        // jump of many words or a full ring, sometimes beyond the limit.
        const r = random();
        let c: bigint;
        if (r < 0.4) c = top + BigInt(Math.floor(random() * 70));
        else if (r < 0.8) c = top - BigInt(Math.floor(random() * (REPLAY_WINDOW_SIZE + 200)));
        else if (r < 0.9) c = top - W + BigInt(Math.floor(random() * 3)) - 1n;
        else if (r < 0.98) c = top + BigInt(Math.floor(random() * 3 * REPLAY_WINDOW_SIZE));
        else c = LIMIT - BigInt(Math.floor(random() * 3));
        if (c < 0n) c = 0n;
        const want = ref(c);
        expect(f.validate(c, LIMIT), `step ${i}: counter ${c}, highest ${f.highest}`).toBe(want);
        if (want && c > top) top = c;
        if (top > LIMIT - 10_000n) top = 0n; // keep drawing below the limit once it is reached
      }
    });
  }

  it('agrees with the reference above 2^53 (the bigint path)', () => {
    const random = mulberry32(53);
    const f = new ReplayFilter();
    const ref = naive();
    const base = 1n << 55n;
    for (let i = 0; i < 5_000; i++) {
      const c = base + BigInt(Math.floor(random() * 3 * REPLAY_WINDOW_SIZE)) + BigInt(i * 4);
      expect(f.validate(c, LIMIT), `step ${i}: counter ${c}`).toBe(ref(c));
    }
  });
});
