import { describe, expect, it } from 'vitest';
import { CidrTrie } from '../../src/net/cidr-trie.js';
// mulberry32 as 32-bit integers: every run checks the same tables.
import { mulberry32Uint32 as rng } from '../helpers/random.js';

/** Dotted quad → uint32 (test helper; the router uses the wire parser). */
function ip(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

function table(entries: Array<[string, string]>): CidrTrie<string> {
  const t = new CidrTrie<string>();
  for (const [cidr, v] of entries) {
    const [a, l] = cidr.split('/');
    t.insert(ip(a), Number(l), v);
  }
  return t;
}

describe('CidrTrie longest-prefix match', () => {
  const t = table([
    ['0.0.0.0/0', 'default'],
    ['10.0.0.0/8', 'ten'],
    ['10.1.0.0/16', 'ten-one'],
    ['10.1.2.0/24', 'ten-one-two'],
    ['10.1.2.3/32', 'host'],
    ['10.128.0.0/9', 'ten-upper'],
    ['192.168.1.0/24', 'lan1'],
    ['192.168.128.0/17', 'lan-upper'],
    ['255.255.255.255/32', 'broadcast'],
    ['0.0.0.0/32', 'zero-host'],
    ['128.0.0.0/1', 'upper-half'],
  ]);

  it.each([
    ['10.1.2.3', 'host'],
    ['10.1.2.4', 'ten-one-two'],
    ['10.1.3.1', 'ten-one'],
    ['10.2.0.1', 'ten'],
    ['10.127.255.255', 'ten'],
    ['10.128.0.0', 'ten-upper'],
    ['10.255.255.255', 'ten-upper'],
    ['11.0.0.0', 'default'],
    ['192.168.1.77', 'lan1'],
    ['192.168.2.1', 'upper-half'],
    ['192.168.200.1', 'lan-upper'],
    ['255.255.255.255', 'broadcast'],
    ['255.255.255.254', 'upper-half'],
    ['0.0.0.0', 'zero-host'],
    ['0.0.0.1', 'default'],
    ['127.255.255.255', 'default'],
    ['128.0.0.0', 'upper-half'],
  ])('%s → %s', (addr, expected) => {
    const fresh = table([...t.entries()].map((e) => [`${e.addr >>> 24}.${(e.addr >>> 16) & 255}.${(e.addr >>> 8) & 255}.${e.addr & 255}/${e.prefix}`, e.value]));
    expect(fresh.lookup(ip(addr))).toBe(expected); // walking the trie (the index is stale)
    fresh.optimize();
    expect(fresh.lookup(ip(addr))).toBe(expected); // binary search in the flat index
  });

  it('rebuilds the flat index by itself once the table stops changing, and drops it on change', () => {
    const u = table([['10.0.0.0/8', 'ten']]);
    for (let i = 0; i < 200; i++) expect(u.lookup(ip('10.0.0.1') + i)).toBe('ten');
    u.insert(ip('10.0.0.0'), 24, 'deeper');
    expect(u.lookup(ip('10.0.0.1'))).toBe('deeper');
    for (let i = 0; i < 200; i++) expect(u.lookup(ip('10.0.1.0') + i)).toBe('ten');
    expect(u.lookup(ip('10.0.0.255'))).toBe('deeper');
    u.remove(ip('10.0.0.0'), 24);
    expect(u.lookup(ip('10.0.0.1'))).toBe('ten');
    u.clear();
    expect(u.lookup(ip('10.0.0.1'))).toBeUndefined();
    u.optimize();
    expect(u.lookup(ip('10.0.0.1'))).toBeUndefined();
  });

  it('matchAll lists every containing prefix, longest first', () => {
    const out: string[] = [];
    const n = t.matchAll(ip('10.1.2.3'), out);
    expect(out.slice(0, n)).toEqual(['host', 'ten-one-two', 'ten-one', 'ten', 'default']);
    expect(t.matchAll(ip('255.255.255.255'), out)).toBe(3);
    expect(out.slice(0, 3)).toEqual(['broadcast', 'upper-half', 'default']);
  });

  it('without /0, an address outside every prefix finds nothing', () => {
    const u = table([['10.0.0.0/8', 'ten'], ['10.1.0.0/16', 'x']]);
    expect(u.lookup(ip('11.0.0.1'))).toBeUndefined();
    expect(u.lookup(ip('9.255.255.255'))).toBeUndefined();
    expect(new CidrTrie<number>().lookup(0)).toBeUndefined();
    expect(new CidrTrie<number>().matchAll(0, [])).toBe(0);
  });

  it('a /0 alone matches every address', () => {
    const u = table([['0.0.0.0/0', 'all']]);
    for (const a of ['0.0.0.0', '127.0.0.1', '255.255.255.255', '128.0.0.0']) expect(u.lookup(ip(a))).toBe('all');
  });

  it('inserting a prefix above an existing one (shorter inserted later) keeps both', () => {
    const u = table([['10.1.2.0/24', 'a'], ['10.1.3.0/24', 'b'], ['10.1.0.0/16', 'c'], ['10.0.0.0/8', 'd']]);
    expect(u.lookup(ip('10.1.2.9'))).toBe('a');
    expect(u.lookup(ip('10.1.3.9'))).toBe('b');
    expect(u.lookup(ip('10.1.4.9'))).toBe('c');
    expect(u.lookup(ip('10.9.4.9'))).toBe('d');
    expect(u.size).toBe(4);
  });

  it('a second insert of the same prefix replaces the value and keeps the size', () => {
    const u = table([['10.0.0.0/8', 'old']]);
    u.insert(ip('10.0.0.0'), 8, 'new');
    expect(u.size).toBe(1);
    expect(u.lookup(ip('10.2.3.4'))).toBe('new');
    expect(u.get(ip('10.0.0.0'), 8)).toBe('new');
  });

  it('refuses host bits, bad lengths and non-uint32 addresses', () => {
    const u = new CidrTrie<number>();
    expect(() => u.insert(ip('10.1.2.3'), 8, 1)).toThrow(/10\.1\.2\.3\/8 has host bits set/);
    expect(() => u.insert(0, 33, 1)).toThrow(RangeError);
    expect(() => u.insert(0, -1, 1)).toThrow(RangeError);
    expect(() => u.insert(-1, 32, 1)).toThrow(RangeError);
    expect(() => u.insert(2 ** 32, 32, 1)).toThrow(RangeError);
    expect(() => u.insert(1.5, 32, 1)).toThrow(RangeError);
  });

  it('remove deletes only the exact prefix and splices glue nodes away', () => {
    const u = table([
      ['10.0.0.0/8', 'ten'],
      ['10.1.0.0/16', 'a'],
      ['10.2.0.0/16', 'b'],
      ['10.1.2.0/24', 'c'],
    ]);
    expect(u.remove(ip('10.3.0.0'), 16)).toBe(false);
    expect(u.remove(ip('10.0.0.0'), 7)).toBe(false);
    expect(u.remove(ip('10.1.0.0'), 16)).toBe(true);
    expect(u.remove(ip('10.1.0.0'), 16)).toBe(false);
    expect(u.size).toBe(3);
    expect(u.lookup(ip('10.1.2.3'))).toBe('c');
    expect(u.lookup(ip('10.1.3.3'))).toBe('ten');
    expect(u.remove(ip('10.0.0.0'), 8)).toBe(true);
    expect(u.lookup(ip('10.9.9.9'))).toBeUndefined();
    expect(u.lookup(ip('10.2.9.9'))).toBe('b');
    expect(u.remove(ip('10.2.0.0'), 16)).toBe(true);
    expect(u.remove(ip('10.1.2.0'), 24)).toBe(true);
    expect(u.size).toBe(0);
    expect([...u.entries()]).toEqual([]);
    expect(u.lookup(ip('10.1.2.3'))).toBeUndefined();
  });

  it('entries() lists prefixes in address order, shorter first', () => {
    const u = table([['192.168.1.0/24', 'c'], ['10.0.0.0/8', 'b'], ['0.0.0.0/0', 'a'], ['10.0.0.0/16', 'b2'], ['255.255.255.255/32', 'd']]);
    expect([...u].map((e) => `${e.addr}/${e.prefix}=${e.value}`)).toEqual([
      '0/0=a',
      `${ip('10.0.0.0')}/8=b`,
      `${ip('10.0.0.0')}/16=b2`,
      `${ip('192.168.1.0')}/24=c`,
      `${ip('255.255.255.255')}/32=d`,
    ]);
  });
});

describe('CidrTrie against a brute-force linear scan (seeded)', () => {
  const N = 10_000;
  const LOOKUPS = 100_000;

  /** Prefix lengths shaped like a route-split file: mostly /8../24, some /0../7 and /25../32. */
  function randomPrefixes(next: () => number, n: number): { addrs: Uint32Array; lens: Uint8Array } {
    const addrs = new Uint32Array(n);
    const lens = new Uint8Array(n);
    const seen = new Set<string>();
    for (let i = 0; i < n; ) {
      const r = next() % 100;
      const len = r < 2 ? next() % 8 : r < 92 ? 8 + (next() % 17) : 25 + (next() % 8);
      // Cluster a third of them under a few /8s so that nesting and overlap are common.
      const base = next() % 3 === 0 ? ((10 + (next() % 4)) << 24) | (next() & 0x00ffffff) : next();
      const addr = (base & mask(len)) >>> 0;
      const k = `${addr}/${len}`;
      if (seen.has(k)) continue;
      seen.add(k);
      addrs[i] = addr;
      lens[i] = len;
      i++;
    }
    return { addrs, lens };
  }

  /** Index of the longest prefix containing a, by scanning all of them. */
  function brute(addrs: Uint32Array, lens: Uint8Array, live: Uint8Array, a: number): number {
    let best = -1;
    let bestLen = -1;
    for (let i = 0; i < addrs.length; i++) {
      const l = lens[i];
      if (live[i] === 1 && l > bestLen && ((a & mask(l)) >>> 0) === addrs[i]) {
        best = i;
        bestLen = l;
      }
    }
    return best;
  }

  function probes(next: () => number, addrs: Uint32Array, lens: Uint8Array, n: number): Uint32Array {
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      if (i % 2 === 0) {
        out[i] = next(); // anywhere
      } else {
        const j = next() % addrs.length; // inside a stored prefix, often deep inside nesting
        out[i] = (addrs[j] | (next() & ~mask(lens[j]))) >>> 0;
      }
    }
    return out;
  }

  it(`agrees on ${LOOKUPS} lookups over ${N} prefixes, before and after removing half`, () => {
    const next = rng(0x7a11);
    const { addrs, lens } = randomPrefixes(next, N);
    const t = new CidrTrie<number>();
    for (let i = 0; i < N; i++) t.insert(addrs[i], lens[i], i);
    expect(t.size).toBe(N);
    const live = new Uint8Array(N).fill(1);

    const check = (qs: Uint32Array): void => {
      let mismatches = 0;
      for (const a of qs) {
        const want = brute(addrs, lens, live, a);
        const got = t.lookup(a);
        if ((want === -1 ? undefined : want) !== got) mismatches++;
      }
      expect(mismatches).toBe(0);
    };
    check(probes(next, addrs, lens, LOOKUPS));

    for (let i = 0; i < N; i += 2) {
      expect(t.remove(addrs[i], lens[i])).toBe(true);
      live[i] = 0;
    }
    expect(t.size).toBe(N / 2);
    check(probes(next, addrs, lens, LOOKUPS / 4));

    // entries(): exactly the live prefixes, in (address, length) order.
    const got = [...t.entries()];
    const want = [...Array(N).keys()]
      .filter((i) => live[i] === 1)
      .sort((x, y) => addrs[x] - addrs[y] || lens[x] - lens[y])
      .map((i) => ({ addr: addrs[i], prefix: lens[i], value: i }));
    expect(got).toEqual(want);

    // matchAll agrees with the brute force on the longest entry and the count.
    const out: number[] = [];
    for (const a of probes(next, addrs, lens, 2000)) {
      const n = t.matchAll(a, out);
      let count = 0;
      for (let i = 0; i < N; i++) if (live[i] === 1 && ((a & mask(lens[i])) >>> 0) === addrs[i]) count++;
      expect(n).toBe(count);
      expect(n === 0 ? -1 : out[0]).toBe(brute(addrs, lens, live, a));
      for (let k = 1; k < n; k++) expect(lens[out[k]]).toBeLessThan(lens[out[k - 1]]);
    }
  });

  it('looks up fast enough for a per-flow decision (measured, printed)', () => {
    const next = rng(42);
    const { addrs, lens } = randomPrefixes(next, N);
    const t = new CidrTrie<number>();
    const t0 = performance.now();
    for (let i = 0; i < N; i++) t.insert(addrs[i], lens[i], i);
    const insertMs = performance.now() - t0;
    const o0 = performance.now();
    t.optimize();
    const optimizeMs = performance.now() - o0;
    const qs = probes(next, addrs, lens, 1_000_000);
    let sink = 0;
    for (let i = 0; i < 200_000; i++) sink += t.lookup(qs[i]) ?? 0; // warm up
    let best = 0;
    for (let round = 0; round < 3; round++) {
      const s = performance.now();
      for (let i = 0; i < qs.length; i++) sink += t.lookup(qs[i]) ?? 0;
      best = Math.max(best, qs.length / ((performance.now() - s) / 1000));
    }
    console.log(
      `CidrTrie: ${N} random CIDRs inserted in ${insertMs.toFixed(1)} ms, index built in ${optimizeMs.toFixed(1)} ms; ` +
        `${(best / 1e6).toFixed(1)} M lookups/s (best of 3 × 1M, sink ${sink % 7})`,
    );
    // Direction only (FACTS.md: shared 2-vCPU box); a per-packet cost would need ≫1M/s.
    expect(best).toBeGreaterThan(1_000_000);
  });
});
