/**
 * CIDR set arithmetic for route plans: merge overlapping and adjacent prefixes, carve excludes
 * out of includes, and emit the smallest list of prefixes that covers exactly the result.
 * Host bits of the input are ignored, the output is normalized.
 *
 * Sized for route files of a million lines: prefixes are collected in a PrefixBag, one float
 * per prefix (network address × 64 + length, exact below 2^38) in a growing Float64Array, so
 * a million of them cost 8 MB and sort natively (TypedArray#sort, numeric, no comparator
 * calls) instead of a million small arrays sorted through a JS comparator. Merging and
 * subtracting are single linear passes over sorted half-open uint32 ranges [start, end) held
 * as plain numbers (end may be 2^32).
 */
import { prefixMask, type Cidr } from './ipv4.js';

const TWO32 = 2 ** 32;
const KEY_SCALE = 64; // length 0..32 fits below it

/** A growing collection of prefixes, for computeRouteSetOf. */
export class PrefixBag {
  private keys = new Float64Array(16);
  private n = 0;

  get size(): number {
    return this.n;
  }

  /** `addr` is a uint32; its host bits are cleared here. */
  add(addr: number, prefix: number): void {
    if (this.n === this.keys.length) {
      const bigger = new Float64Array(this.keys.length * 2);
      bigger.set(this.keys);
      this.keys = bigger;
    }
    this.keys[this.n++] = ((addr & prefixMask(prefix)) >>> 0) * KEY_SCALE + prefix;
  }

  addCidr(c: Cidr): void {
    this.add(c.addr, c.prefix);
  }

  /**
   * The union as sorted, disjoint, non-adjacent ranges: [start0, end0, start1, end1, ...].
   * Sorted by start, then by length (shorter prefix, so the larger block, first); adjacent and
   * overlapping ranges merge.
   */
  mergedRanges(): Float64Array {
    const sorted = this.keys.subarray(0, this.n).slice().sort();
    const out = new Float64Array(2 * this.n);
    let m = 0;
    for (let i = 0; i < sorted.length; i++) {
      const k = sorted[i];
      const start = Math.floor(k / KEY_SCALE);
      const end = start + 2 ** (32 - (k - start * KEY_SCALE));
      if (m > 0 && start <= out[m - 1]) {
        if (end > out[m - 1]) out[m - 1] = end;
      } else {
        out[m++] = start;
        out[m++] = end;
      }
    }
    return out.slice(0, m);
  }
}

/** include ∖ exclude over merged range lists (as mergedRanges returns them), as prefixes. */
function subtractToPrefixes(inc: Float64Array, exc: Float64Array, out: Cidr[]): void {
  let j = 0;
  for (let i = 0; i < inc.length; i += 2) {
    let s = inc[i];
    const e = inc[i + 1];
    while (j < exc.length && exc[j + 1] <= s) j += 2;
    for (let k = j; k < exc.length && exc[k] < e; k += 2) {
      const xs = exc[k];
      if (xs > s) rangeToPrefixes(s, xs, out);
      s = Math.max(s, exc[k + 1]);
      if (s >= e) break;
    }
    if (s < e) rangeToPrefixes(s, e, out);
  }
}

/** Largest aligned power-of-two blocks covering [start, end) exactly. */
function rangeToPrefixes(start: number, end: number, out: Cidr[]): void {
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
export function computeRouteSetOf(include: PrefixBag, exclude?: PrefixBag): Cidr[] {
  return routeSetOfRanges(include.mergedRanges(), exclude?.mergedRanges() ?? new Float64Array(0));
}

/** include ∖ exclude over merged range lists (as PrefixBag#mergedRanges returns them), as prefixes. */
export function routeSetOfRanges(include: Float64Array, exclude: Float64Array): Cidr[] {
  const out: Cidr[] = [];
  subtractToPrefixes(include, exclude, out);
  return out;
}

/** Whether `c` shares an address with one of the merged ranges (as PrefixBag#mergedRanges returns them). */
export function overlapsRanges(ranges: Float64Array, c: Cidr): boolean {
  const size = 2 ** (32 - c.prefix);
  const start = Math.floor(c.addr / size) * size;
  const end = start + size;
  // The first range whose end lies beyond `start`.
  let lo = 0;
  let hi = ranges.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[2 * mid + 1] <= start) lo = mid + 1;
    else hi = mid;
  }
  return 2 * lo < ranges.length && ranges[2 * lo] < end;
}

/** include ∖ exclude, merged, as a minimal sorted list of prefixes. */
export function computeRouteSet(include: readonly Cidr[], exclude: readonly Cidr[] = []): Cidr[] {
  const inc = new PrefixBag();
  for (const c of include) inc.addCidr(c);
  const exc = new PrefixBag();
  for (const c of exclude) exc.addCidr(c);
  return computeRouteSetOf(inc, exc);
}
