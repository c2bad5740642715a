/**
 * CIDR set arithmetic for route plans: merge overlapping and adjacent prefixes, carve excludes
 * out of includes, and emit the smallest list of prefixes that covers exactly the result.
 * Works on half-open uint32 ranges [start, end) held as plain numbers (end may be 2^32);
 * host bits of the input are ignored, the output is normalized.
 */
import { cidrRange, type AddrRange as Range, type Cidr } from './ipv4.js';

const TWO32 = 2 ** 32;

function mergeRanges(ranges: Range[]): Range[] {
  const sorted = ranges.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

function subtract(include: Range[], exclude: Range[]): Range[] {
  const out: Range[] = [];
  let j = 0;
  for (const [s0, e] of include) {
    let s = s0;
    while (j < exclude.length && exclude[j][1] <= s) j++;
    let k = j;
    while (k < exclude.length && exclude[k][0] < e) {
      const [xs, xe] = exclude[k];
      if (xs > s) out.push([s, xs]);
      s = Math.max(s, xe);
      if (s >= e) break;
      k++;
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}

/** Largest aligned power-of-two blocks covering [start, end) exactly. */
function rangeToPrefixes([start, end]: Range, out: Cidr[]): void {
  let s = start;
  while (s < end) {
    // The block may be as large as s's alignment allows and must not pass end.
    let size = s === 0 ? TWO32 : 2 ** Math.min(32, countTrailingZeros(s));
    while (size > end - s) size /= 2;
    out.push({ addr: s >>> 0, prefix: 32 - Math.log2(size) });
    s += size;
  }
}

function countTrailingZeros(n: number): number {
  let z = 0;
  while (n % 2 === 0 && z < 32) {
    n /= 2;
    z++;
  }
  return z;
}

/** include ∖ exclude, merged, as a minimal sorted list of prefixes. */
export function computeRouteSet(include: readonly Cidr[], exclude: readonly Cidr[] = []): Cidr[] {
  const inc = mergeRanges(include.map(cidrRange));
  const exc = mergeRanges(exclude.map(cidrRange));
  const out: Cidr[] = [];
  for (const r of subtract(inc, exc)) rangeToPrefixes(r, out);
  return out;
}
