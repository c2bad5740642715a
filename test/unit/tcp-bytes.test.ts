/**
 * The copies of received bytes: recyclable large copies come back only when every view carved
 * from their slab was handed back, never earlier (a view still read must not be overwritten).
 */
import { describe, expect, it } from 'vitest';
import { copyBytes, copyRecyclable, releaseBytes } from '../../src/stack/tcp/bytes.js';

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

describe('copyRecyclable / releaseBytes', () => {
  it('copies; small copies are ordinary ones and handing them back does nothing', () => {
    const small = copyRecyclable(fill(100, 7));
    expect([...small.subarray(0, 3)]).toEqual([7, 7, 7]);
    releaseBytes(small);
    expect(small[0]).toBe(7);
    releaseBytes(copyBytes(fill(10, 1))); // not from a slab: a no-op
  });

  it('reuses a slab only after every view of it was handed back', () => {
    const size = 64 * 1024;
    // Fill one slab (1 MiB = 16 views) and start the next, so the first is full.
    const views: Uint8Array[] = [];
    for (let i = 0; i < 17; i++) views.push(copyRecyclable(fill(size, i + 1)));
    const first = views[0]!.buffer;
    expect(views[16]!.buffer).not.toBe(first);
    // All but one handed back: the slab must not come back yet.
    for (let i = 1; i < 16; i++) releaseBytes(views[i]!);
    for (let i = 0; i < 16; i++) {
      const v = copyRecyclable(fill(size, 200));
      expect(v.buffer).not.toBe(first);
    }
    expect(views[0]!.every((b) => b === 1)).toBe(true);
    // The last one handed back: the slab is reused, from its start.
    releaseBytes(views[0]!);
    let reused: Uint8Array | undefined;
    for (let i = 0; i < 40 && reused === undefined; i++) {
      const v = copyRecyclable(fill(size, 9));
      if (v.buffer === first) reused = v;
    }
    expect(reused).toBeDefined();
    expect(reused!.every((b) => b === 9)).toBe(true);
  });
});
