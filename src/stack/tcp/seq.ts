/**
 * RFC 9293 §3.4 (sequence numbers) — arithmetic modulo 2^32.
 *
 * "It is essential to remember that the actual sequence number space is finite, though very
 * large ... the arithmetic on sequence numbers must be performed modulo 2**32." Every
 * comparison here is the RFC 1982 serial-number comparison: a < b when (a - b) interpreted as a
 * signed 32-bit integer is negative. Values must be uint32 (0 .. 2^32-1).
 *
 * The connection keeps its own positions *unwrapped* (plain JS numbers counted from the ISS /
 * IRS, exact up to 2^53) and uses `seqWrap`/`seqUnwrap` at the boundary, so wrap-around is
 * handled in exactly one place per field.
 */

/** a < b (mod 2^32). */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/** a <= b (mod 2^32). */
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

/** a > b (mod 2^32). */
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** a >= b (mod 2^32). */
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** a + n (mod 2^32); n may be negative. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** a - n (mod 2^32). */
export function seqSub(a: number, n: number): number {
  return (a - n) >>> 0;
}

/** Signed distance a - b in [-2^31, 2^31). */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** start <= x < start + len (mod 2^32), for 0 <= len <= 2^31. */
export function seqInWindow(x: number, start: number, len: number): boolean {
  return (x - start) >>> 0 < len;
}

/** The later of two sequence numbers. */
export function seqMax(a: number, b: number): number {
  return seqGt(a, b) ? a : b;
}

/** The earlier of two sequence numbers. */
export function seqMin(a: number, b: number): number {
  return seqLt(a, b) ? a : b;
}

/** Wire sequence number of the unwrapped position `abs` (counted from `base`). */
export function seqWrap(base: number, abs: number): number {
  return (base + abs) >>> 0;
}

/**
 * Unwrapped position of the wire value `seq`, taken as the one nearest to the unwrapped
 * reference `ref` (which must be a position counted from the same `base`).
 */
export function seqUnwrap(base: number, ref: number, seq: number): number {
  return ref + ((seq - ((base + ref) >>> 0)) | 0);
}
