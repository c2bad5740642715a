import { describe, expect, it } from 'vitest';
import {
  checksumAdjust,
  checksumAdjust32,
  completePartialChecksum,
  foldComplement,
  foldSum,
  internetChecksum,
  pseudoHeaderSum,
  sum16,
} from '../../src/wire/checksum.js';
import { mulberry32 as prng, randomBytes } from '../helpers/random.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

/** Independent reference: RFC 1071 §4.1 as written, byte pairs and end-around carry. */
function refSum(b: Uint8Array, off: number, len: number, initial = 0): number {
  let s = initial;
  for (let i = 0; i < len; i += 2) {
    const hi = b[off + i];
    const lo = i + 1 < len ? b[off + i + 1] : 0;
    s += (hi << 8) | lo;
    s = (s & 0xffff) + (s >>> 16);
  }
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

// A SYN captured with `tcpdump -xx` on loopback in a private network namespace (10.0.0.2 →
// 10.0.0.1). Loopback offloads the checksum, so the field holds the folded pseudo-header sum
// (CHECKSUM_PARTIAL); tcpdump computed the complete value 0x63d4.
const SYN_PARTIAL = hex(
  '4500003cdde94000400648d00a0000020a000001bacd9c40e181d88200000000a002ffd7' +
    '143100000204ffd70402080ad064f4b2000000000103030a',
);
const SRC = 0x0a000002;
const DST = 0x0a000001;

describe('sum16 / internetChecksum', () => {
  it('matches the RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2', () => {
    const b = hex('0001f203f4f5f6f7');
    expect(sum16(b, 0, 8)).toBe(0xddf2);
    expect(internetChecksum(b, 0, 8)).toBe(0x220d);
  });

  it('gives the same sum for the RFC vector at every offset and in subarray views', () => {
    const v = hex('0001f203f4f5f6f7');
    for (let off = 0; off < 9; off++) {
      const big = new Uint8Array(32).fill(0xa5);
      big.set(v, off);
      expect(sum16(big, off, 8)).toBe(0xddf2);
      expect(sum16(big.subarray(off), 0, 8)).toBe(0xddf2);
    }
  });

  it('pads an odd length with a zero byte', () => {
    expect(sum16(hex('0001f2'), 0, 3)).toBe(0x0001 + 0xf200);
    expect(sum16(hex('ff'), 0, 1)).toBe(0xff00);
    expect(sum16(new Uint8Array(0), 0, 0)).toBe(0);
  });

  it('carries `initial` into the sum', () => {
    const b = hex('0001f203f4f5f6f7');
    expect(sum16(b, 0, 4, sum16(b, 4, 4))).toBe(0xddf2);
    expect(sum16(b, 0, 0, 0x1234)).toBe(0x1234);
  });

  it('an all-ones input sums to 0xffff and all-zero to 0x0000', () => {
    expect(sum16(new Uint8Array(1500).fill(0xff), 0, 1500)).toBe(0xffff);
    expect(sum16(new Uint8Array(1500), 0, 1500)).toBe(0);
  });

  it('agrees with the RFC 1071 reference for every length 0..300 at offsets 0..7', () => {
    const rand = prng(1071);
    const data = randomBytes(rand, 320);
    for (let off = 0; off < 8; off++) {
      for (let len = 0; len <= 300; len++) {
        expect(sum16(data, off, len)).toBe(refSum(data, off, len));
      }
    }
  });

  it('agrees with the reference on large and unaligned views (1500, 9000, 65535, 200000)', () => {
    const rand = prng(7);
    const ab = new ArrayBuffer(200_016);
    const all = new Uint8Array(ab);
    for (let i = 0; i < all.length; i++) all[i] = Math.floor(rand() * 256);
    for (const len of [1500, 1501, 9000, 65535, 200_000]) {
      for (const byteOffset of [0, 1, 2, 3, 5]) {
        const view = new Uint8Array(ab, byteOffset, len + 8);
        for (const off of [0, 1, 3]) {
          const init = Math.floor(rand() * 0x10000);
          expect(sum16(view, off, len, init)).toBe(refSum(view, off, len, init));
        }
      }
    }
  });

  it('folds across the 4 MiB chunks of the 32-bit path (a 5 MiB range)', () => {
    const rand = prng(5);
    const b = new Uint8Array(5 * 1024 * 1024 + 7);
    for (let i = 0; i < b.length; i += 97) b[i] = Math.floor(rand() * 256);
    b.fill(0xff, 1000, 4 * 1024 * 1024 + 4000); // many all-ones words around the boundary
    expect(sum16(b, 1, b.length - 1)).toBe(refSum(b, 1, b.length - 1));
    expect(sum16(b, 0, b.length)).toBe(refSum(b, 0, b.length));
  });

  it('handles views of different buffers in turn (the 32-bit view cache follows the buffer)', () => {
    const rand = prng(99);
    const a = randomBytes(rand, 4000);
    const b = randomBytes(rand, 128);
    const c = Buffer.from(randomBytes(rand, 2000));
    for (let k = 0; k < 3; k++) {
      expect(sum16(a, 1, 3999)).toBe(refSum(a, 1, 3999));
      expect(sum16(b, 2, 126)).toBe(refSum(b, 2, 126));
      expect(sum16(c, 3, 1900)).toBe(refSum(c, 3, 1900));
    }
  });
});

describe('fold helpers', () => {
  it('fold carries end-around, also above 32 bits', () => {
    expect(foldSum(0)).toBe(0);
    expect(foldSum(0xffff)).toBe(0xffff);
    expect(foldSum(0x10000)).toBe(1);
    expect(foldSum(0x1fffe)).toBe(0xffff);
    expect(foldSum(0xffffffff)).toBe(0xffff);
    expect(foldSum(2 ** 40 + 5)).toBe(foldSum((2 ** 40 % 0xffff) + 5));
    expect(foldComplement(0x1fffe)).toBe(0);
    expect(foldComplement(0x2233)).toBe(0xddcc);
  });
});

describe('pseudo-header', () => {
  it('equals the partial checksum the kernel left in a captured loopback SYN', () => {
    // The field held by CHECKSUM_PARTIAL is exactly the folded pseudo-header sum.
    expect(pseudoHeaderSum(SRC, DST, 6, 40)).toBe(0x1431);
  });

  it('completing that partial checksum gives the value tcpdump computed', () => {
    const b = SYN_PARTIAL.slice();
    completePartialChecksum(b, 20, 40, 36);
    expect((b[36] << 8) | b[37]).toBe(0x63d4);
    expect(sum16(b, 20, 40, pseudoHeaderSum(SRC, DST, 6, 40))).toBe(0xffff);
  });
});

describe('incremental update (RFC 1624)', () => {
  /** Random 16-word block with a valid checksum in word 5 (like an IPv4 header). */
  function block(rand: () => number): Uint8Array {
    const b = randomBytes(rand, 20);
    b[0] = 0x45; // never all-zero, as in every real header
    b[10] = 0;
    b[11] = 0;
    const c = internetChecksum(b, 0, 20);
    b[10] = c >>> 8;
    b[11] = c & 0xff;
    return b;
  }

  function word(b: Uint8Array, i: number): number {
    return (b[i] << 8) | b[i + 1];
  }

  function recompute(b: Uint8Array): number {
    const c = b.slice();
    c[10] = 0;
    c[11] = 0;
    return internetChecksum(c, 0, 20);
  }

  const CORNER16 = [0x0000, 0xffff, 0x0001, 0xfffe, 0x8000, 0x7fff];

  it('reproduces the RFC 1624 §3 example (0xdd2f → 0x0000, where RFC 1141 gave 0xffff)', () => {
    // Other header words sum to 0xcd7a; m = 0x5555 changes to m' = 0x3285.
    expect(foldComplement(0xcd7a + 0x5555)).toBe(0xdd2f);
    expect(foldComplement(0xcd7a + 0x3285)).toBe(0x0000);
    expect(checksumAdjust(0xdd2f, 0x5555, 0x3285)).toBe(0x0000);
    expect(foldSum(0xdd2f + 0x5555 + (~0x3285 & 0xffff))).toBe(0xffff); // RFC 1141's answer
  });

  it('16-bit: equals a full recompute on 20,000 random changes, corners included', () => {
    const rand = prng(1624);
    for (let n = 0; n < 20_000; n++) {
      const b = block(rand);
      const at = [2, 4, 6, 8, 12, 14, 16, 18][n & 7];
      const old = word(b, at);
      const nw = n % 5 === 0 ? CORNER16[Math.floor(rand() * CORNER16.length)] : Math.floor(rand() * 0x10000);
      b[at] = nw >>> 8;
      b[at + 1] = nw & 0xff;
      expect(checksumAdjust(word(b, 10), old, nw)).toBe(recompute(b));
    }
  });

  it('16-bit: lands on 0x0000 (not 0xffff) when the new sum is all ones', () => {
    const rand = prng(3);
    for (let n = 0; n < 2000; n++) {
      const b = block(rand);
      // Choose the new word so that the data sums to 0xffff: the checksum must become 0x0000.
      const old = word(b, 4);
      b[4] = 0;
      b[5] = 0;
      b[10] = 0;
      b[11] = 0;
      const nw = ~sum16(b, 0, 20) & 0xffff;
      b[4] = nw >>> 8;
      b[5] = nw & 0xff;
      b[10] = 0;
      b[11] = 0;
      const oldChecksum = (() => {
        const c = b.slice();
        c[4] = old >>> 8;
        c[5] = old & 0xff;
        return internetChecksum(c, 0, 20);
      })();
      expect(recompute(b)).toBe(0);
      expect(checksumAdjust(oldChecksum, old, nw)).toBe(0);
    }
  });

  it('16-bit: from an old checksum of 0x0000', () => {
    const rand = prng(5);
    let seen = 0;
    for (let n = 0; n < 5000 && seen < 200; n++) {
      const b = block(rand);
      // Force checksum 0 by adjusting word 6..8 so the data sums to 0xffff.
      b[6] = 0;
      b[7] = 0;
      b[10] = 0;
      b[11] = 0;
      const w = ~sum16(b, 0, 20) & 0xffff;
      b[6] = w >>> 8;
      b[7] = w & 0xff;
      expect(recompute(b)).toBe(0);
      const nw = Math.floor(rand() * 0x10000);
      const old = word(b, 14);
      b[14] = nw >>> 8;
      b[15] = nw & 0xff;
      expect(checksumAdjust(0, old, nw)).toBe(recompute(b));
      seen++;
    }
    expect(seen).toBe(200);
  });

  it('32-bit: equals a full recompute on 20,000 random address changes, corners included', () => {
    const rand = prng(32);
    const CORNER32 = [0, 0xffffffff, 0x0000ffff, 0xffff0000, 0x0a000001, 0x7f000001];
    for (let n = 0; n < 20_000; n++) {
      const b = block(rand);
      const at = n & 1 ? 12 : 16;
      const old = ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
      const nv = n % 4 === 0 ? CORNER32[Math.floor(rand() * CORNER32.length)] : Math.floor(rand() * 2 ** 32);
      b[at] = nv >>> 24;
      b[at + 1] = nv >>> 16;
      b[at + 2] = nv >>> 8;
      b[at + 3] = nv;
      expect(checksumAdjust32(word(b, 10), old, nv)).toBe(recompute(b));
    }
  });

  it('32-bit: a change and its reverse restore the original checksum', () => {
    const rand = prng(11);
    for (let n = 0; n < 1000; n++) {
      const c = Math.floor(rand() * 0xffff); // 0..0xfffe: a checksum a full compute can give
      const a = Math.floor(rand() * 2 ** 32);
      const z = Math.floor(rand() * 2 ** 32);
      expect(checksumAdjust32(checksumAdjust32(c, a, z), z, a)).toBe(c);
    }
  });
});
