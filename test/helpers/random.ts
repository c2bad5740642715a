/**
 * Seeded randomness for tests: the same cases on every run, and a failing seed replays.
 * One generator for all of them, the one the in-memory link draws its faults from.
 */
import { mulberry32 } from '../../src/link/memory.js';

export { mulberry32 };

/** mulberry32 as 32-bit unsigned integers (the float times 2^32, exact). */
export function mulberry32Uint32(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() * 4294967296;
}

/** n bytes drawn from `random` (a generator of floats in [0, 1)). */
export function randomBytes(random: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(random() * 256);
  return b;
}
