/**
 * IPv4 longest-prefix match over uint32 addresses: a binary trie with path compression
 * (a PATRICIA-style radix tree, as in BSD's radix.c or Linux's fib_trie without level
 * compression).
 *
 * Every node holds a prefix (key, len); a node either carries a value or is a "glue" node
 * with exactly two children, created where two prefixes diverge. A child's prefix always
 * extends its parent's, and the bit at position `parent.len` picks the side. So the depth is
 * bounded by the number of distinct branch points on the way to an address (≤ 33), not by 32
 * levels of single-bit nodes, and 10,000 prefixes take about 20,000 nodes.
 *
 *          0.0.0.0/0 (value)
 *           /           \
 *   10.0.0.0/8 (value)   192.168.0.0/16 (glue)
 *        |                /              \
 *   10.1.0.0/16    192.168.1.0/24   192.168.128.0/17
 *
 * Walking it costs about 14 node visits per lookup with 10,000 prefixes. For steady-state
 * lookups the trie also keeps a flat index: the address space cut into the ranges on which
 * the longest match does not change (≤ 2n+1 of them), as a sorted Uint32Array of range starts
 * plus the value of each range, so a lookup is a binary search (~15 steps over one typed
 * array, about 3× faster than the walk on this machine). After a change the index is stale;
 * lookups walk the trie until about `size` of them have passed, then the index is rebuilt
 * (O(n log n)): a burst of changes costs nothing extra, and a table that stops changing gets
 * the fast path. optimize() rebuilds at once. Neither path allocates per lookup.
 *
 * Keys and masks are kept as int32 (small integers in V8); the public API speaks uint32.
 */

class TrieNode<V> {
  c0: TrieNode<V> | null = null;
  c1: TrieNode<V> | null = null;
  constructor(
    /** Prefix address as int32, host bits zero. */
    public key: number,
    /** Prefix mask as int32 (0 for /0, -1 for /32). */
    public mask: number,
    public len: number,
    public has: boolean,
    public value: V | undefined,
  ) {}
}

/** Network mask of `len` as int32. */
function maskOf(len: number): number {
  return len === 0 ? 0 : -1 << (32 - len);
}

/** Bit `pos` (0 = most significant) of an address. */
function bitAt(addr: number, pos: number): number {
  return (addr >>> (31 - pos)) & 1;
}

export interface CidrEntry<V> {
  /** Network address as uint32. */
  readonly addr: number;
  readonly prefix: number;
  readonly value: V;
}

export class CidrTrie<V> {
  private root: TrieNode<V> | null = null;
  private count = 0;
  /** The flat index: range i starts at starts[i] and ends where range i+1 starts. */
  private starts = new Uint32Array(1);
  private rangeValues: Array<V | undefined> = [undefined];
  /** Whether the flat index matches the trie. */
  private indexed = true;
  /** Lookups since the index went stale. */
  private staleLookups = 0;

  /** Number of prefixes stored (glue nodes not counted). */
  get size(): number {
    return this.count;
  }

  /**
   * Store `value` under addr/prefix, replacing any value already there. The host bits of
   * `addr` must be zero (10.0.0.0/8, not 10.1.2.3/8): a RangeError otherwise, so a caller's
   * parsing bug shows up here instead of as a silently different route.
   */
  insert(addr: number, prefix: number, value: V): void {
    const key = checkPrefix(addr, prefix);
    this.stale();
    let parent: TrieNode<V> | null = null;
    let side = 0;
    let node = this.root;
    for (;;) {
      if (node === null) {
        this.attach(parent, side, new TrieNode<V>(key, maskOf(prefix), prefix, true, value));
        this.count++;
        return;
      }
      const common = Math.min(prefix, node.len, Math.clz32(key ^ node.key));
      if (common === node.len) {
        if (prefix === node.len) {
          if (!node.has) this.count++;
          node.has = true;
          node.value = value;
          return;
        }
        parent = node;
        side = bitAt(key, node.len);
        node = side === 0 ? node.c0 : node.c1;
        continue;
      }
      // The new prefix leaves `node`'s path above `node`: a new node takes its place.
      let top: TrieNode<V>;
      if (common === prefix) {
        top = new TrieNode<V>(key, maskOf(prefix), prefix, true, value);
      } else {
        const m = maskOf(common);
        top = new TrieNode<V>(key & m, m, common, false, undefined);
        setChild(top, bitAt(key, common), new TrieNode<V>(key, maskOf(prefix), prefix, true, value));
      }
      setChild(top, bitAt(node.key, common), node);
      this.attach(parent, side, top);
      this.count++;
      return;
    }
  }

  /** Remove addr/prefix; returns whether it was there. */
  remove(addr: number, prefix: number): boolean {
    const key = checkPrefix(addr, prefix);
    // The path from the root, for splicing out glue nodes afterwards.
    const path: TrieNode<V>[] = [];
    let node = this.root;
    while (node !== null && node.len < prefix && ((key ^ node.key) & node.mask) === 0) {
      path.push(node);
      node = bitAt(key, node.len) === 0 ? node.c0 : node.c1;
    }
    if (node === null || node.len !== prefix || node.key !== key || !node.has) return false;
    this.stale();
    node.has = false;
    node.value = undefined;
    this.count--;
    if (node.c0 !== null && node.c1 !== null) return true; // stays as a glue node
    const parent = path.length > 0 ? path[path.length - 1] : null;
    this.replace(parent, node, node.c0 ?? node.c1);
    // A valueless parent left with one child is glue no longer needed.
    if (parent !== null && !parent.has && (parent.c0 === null || parent.c1 === null)) {
      const grand = path.length > 1 ? path[path.length - 2] : null;
      this.replace(grand, parent, parent.c0 ?? parent.c1);
    }
    return true;
  }

  /** The value of the longest prefix that contains `addr` (uint32), or undefined. No allocation. */
  lookup(addr: number): V | undefined {
    if (!this.indexed) {
      if (++this.staleLookups < this.count + 64) return this.walk(addr | 0);
      this.optimize();
    }
    const a = addr >>> 0;
    const starts = this.starts;
    // The last range that starts at or before a (starts[0] is 0, so there is one).
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    return this.rangeValues[lo];
  }

  /**
   * Every value whose prefix contains `addr`, longest prefix first, written into `out`
   * (which the caller reuses; at most 33 entries); returns how many. No allocation once
   * `out` has grown.
   */
  matchAll(addr: number, out: V[]): number {
    addr |= 0;
    let n = 0;
    let node = this.root;
    while (node !== null) {
      if (((addr ^ node.key) & node.mask) !== 0) break;
      if (node.has) out[n++] = node.value as V;
      if (node.len === 32) break;
      node = ((addr >>> (31 - node.len)) & 1) === 0 ? node.c0 : node.c1;
    }
    for (let i = 0, j = n - 1; i < j; i++, j--) {
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return n;
  }

  /** The value stored under exactly addr/prefix. */
  get(addr: number, prefix: number): V | undefined {
    const key = checkPrefix(addr, prefix);
    let node = this.root;
    while (node !== null && node.len < prefix && ((key ^ node.key) & node.mask) === 0) {
      node = bitAt(key, node.len) === 0 ? node.c0 : node.c1;
    }
    return node !== null && node.has && node.len === prefix && node.key === key ? node.value : undefined;
  }

  has(addr: number, prefix: number): boolean {
    return this.get(addr, prefix) !== undefined;
  }

  clear(): void {
    this.root = null;
    this.count = 0;
    this.stale();
  }

  /**
   * Build the flat lookup index now (it is otherwise built after about `size` lookups on an
   * unchanged table). Call it after loading a table.
   */
  optimize(): void {
    if (this.indexed) return;
    // Range boundaries: every prefix's first address and the address after its last.
    const points = new Float64Array(2 * this.count + 1);
    let n = 0;
    points[n++] = 0;
    for (const e of this.entries()) {
      points[n++] = e.addr;
      const end = e.addr + 2 ** (32 - e.prefix);
      if (end <= 0xffffffff) points[n++] = end;
    }
    const sorted = points.subarray(0, n).sort();
    const starts = new Uint32Array(n);
    const values: Array<V | undefined> = [];
    let m = 0;
    for (let i = 0; i < n; i++) {
      const p = sorted[i];
      if (m > 0 && starts[m - 1] === p) continue;
      // The longest match is constant from p up to the next boundary; merge equal neighbours.
      const v = this.walk(p | 0);
      if (m > 0 && values[m - 1] === v) continue;
      starts[m] = p;
      values[m] = v;
      m++;
    }
    this.starts = starts.slice(0, m);
    this.rangeValues = values;
    this.indexed = true;
  }

  /** All prefixes in address order; for equal addresses the shorter prefix first. */
  *entries(): IterableIterator<CidrEntry<V>> {
    const stack: TrieNode<V>[] = [];
    if (this.root !== null) stack.push(this.root);
    while (stack.length > 0) {
      const node = stack.pop() as TrieNode<V>;
      if (node.has) yield { addr: node.key >>> 0, prefix: node.len, value: node.value as V };
      if (node.c1 !== null) stack.push(node.c1);
      if (node.c0 !== null) stack.push(node.c0);
    }
  }

  [Symbol.iterator](): IterableIterator<CidrEntry<V>> {
    return this.entries();
  }

  /** Longest match by walking the trie; `addr` as int32. */
  private walk(addr: number): V | undefined {
    let best: V | undefined;
    let node = this.root;
    while (node !== null) {
      if (((addr ^ node.key) & node.mask) !== 0) break;
      if (node.has) best = node.value;
      if (node.len === 32) break;
      node = ((addr >>> (31 - node.len)) & 1) === 0 ? node.c0 : node.c1;
    }
    return best;
  }

  private stale(): void {
    this.indexed = false;
    this.staleLookups = 0;
  }

  private attach(parent: TrieNode<V> | null, side: number, node: TrieNode<V>): void {
    if (parent === null) this.root = node;
    else setChild(parent, side, node);
  }

  private replace(parent: TrieNode<V> | null, old: TrieNode<V>, next: TrieNode<V> | null): void {
    if (parent === null) this.root = next;
    else if (parent.c0 === old) parent.c0 = next;
    else parent.c1 = next;
  }
}

function setChild<V>(parent: TrieNode<V>, side: number, child: TrieNode<V>): void {
  if (side === 0) parent.c0 = child;
  else parent.c1 = child;
}

/** Validate a uint32 address and prefix length; returns the key as int32. */
function checkPrefix(addr: number, prefix: number): number {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new RangeError(`prefix length ${prefix} is not 0..32`);
  if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) throw new RangeError(`${addr} is not a uint32 IPv4 address`);
  const key = addr | 0;
  if ((key & maskOf(prefix)) !== key) throw new RangeError(`${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}/${prefix} has host bits set`);
  return key;
}
