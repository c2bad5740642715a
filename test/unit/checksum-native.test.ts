/**
 * The addon's C checksum against a plain JS reference (RFC 1071: ones'-complement sum of
 * big-endian 16-bit words, odd trailing byte padded with zero, folded, not inverted).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { mulberry32, randomBytes } from '../helpers/random.js';
import { addonPath, tryLoadNative } from '../../src/native/addon.js';

const native = tryLoadNative();
if (native === undefined) {
  console.warn(`checksum-native: SKIPPED — the native addon is not built (${addonPath()}); run \`npm run build\`.`);
}

/** The obvious implementation, byte by byte. */
function referenceSum(buf: Uint8Array, offset: number, length: number, initial: number): number {
  let sum = initial;
  for (let i = 0; i + 1 < length; i += 2) sum += (buf[offset + i] << 8) | buf[offset + i + 1];
  if (length % 2 === 1) sum += buf[offset + length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

describe.skipIf(native === undefined)('native checksum (skipped when the addon is not built)', () => {
  const addon = native!;

  it('matches the RFC 1071 example: 00 01 f2 03 f4 f5 f6 f7 → sum 0xddf2, checksum 0x220d', () => {
    const v = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(referenceSum(v, 0, 8, 0)).toBe(0xddf2);
    expect(addon.checksum(v, 0, 8, 0)).toBe(0xddf2);
    expect(~addon.checksum(v, 0, 8, 0) & 0xffff).toBe(0x220d);
  });

  it('equals the JS reference on random buffers of every length 0–2000 at random offsets', () => {
    const random = mulberry32(0x5eed);
    const pool = randomBytes(random, 4096 + 64);
    for (let len = 0; len <= 2000; len++) {
      const offset = Math.floor(random() * 64);
      const initial = Math.floor(random() * 0x10000);
      const buf = pool.subarray(0, offset + len + Math.floor(random() * 8));
      expect(addon.checksum(buf, offset, len, initial), `len ${len} offset ${offset}`).toBe(
        referenceSum(buf, offset, len, initial),
      );
      expect(addon.checksum(buf, offset, len, 0)).toBe(referenceSum(buf, offset, len, 0));
    }
  });

  it('respects the byteOffset of a Uint8Array view and of a Buffer from the pool', () => {
    const random = mulberry32(77);
    const backing = randomBytes(random, 3000);
    for (const start of [0, 1, 2, 3, 5, 7, 8, 13]) {
      const view = backing.subarray(start, start + 1501);
      expect(addon.checksum(view, 0, view.length, 0)).toBe(referenceSum(backing, start, 1501, 0));
      expect(addon.checksum(view, 3, 100, 0)).toBe(referenceSum(backing, start + 3, 100, 0));
    }
    const pooled = Buffer.from(backing.subarray(0, 777)); // small Buffers share a pool slab
    expect(pooled.byteOffset === 0 && pooled.buffer.byteLength === 777).toBe(false);
    expect(addon.checksum(pooled, 0, 777, 0)).toBe(referenceSum(backing, 0, 777, 0));
  });

  it('handles the carry edge cases: all 0xff, all zero, 64 KiB, initial 0xffff', () => {
    const ones = new Uint8Array(65535).fill(0xff);
    const zeros = new Uint8Array(65536);
    for (const len of [0, 1, 2, 7, 8, 9, 65534, 65535]) {
      expect(addon.checksum(ones, 0, len, 0)).toBe(referenceSum(ones, 0, len, 0));
      expect(addon.checksum(ones, 0, len, 0xffff)).toBe(referenceSum(ones, 0, len, 0xffff));
      expect(addon.checksum(zeros, 0, len, 0)).toBe(0);
      expect(addon.checksum(zeros, 0, len, 0xffff)).toBe(0xffff);
    }
  });

  it('chains: the sum of two halves (even split) equals the sum of the whole', () => {
    const buf = randomBytes(mulberry32(9), 1000);
    const first = addon.checksum(buf, 0, 400, 0);
    expect(addon.checksum(buf, 400, 600, first)).toBe(addon.checksum(buf, 0, 1000, 0));
  });

  it('refuses a range beyond the buffer', () => {
    expect(() => addon.checksum(new Uint8Array(10), 8, 3, 0)).toThrow(RangeError);
  });
});

// src/wire/checksum.ts is written by another engineer; when it exists, hold it to the same reference.
const wireChecksumPath = fileURLToPath(new URL('../../src/wire/checksum.ts', import.meta.url));
const hasWireChecksum = existsSync(wireChecksumPath);

describe.skipIf(native === undefined || !hasWireChecksum)('native checksum vs src/wire/checksum.ts', () => {
  it('agrees with the wire layer (sum16) on random buffers of every length 0–2000', async () => {
    const wire = (await import(/* @vite-ignore */ wireChecksumPath)) as Record<string, unknown>;
    expect(typeof wire.sum16, 'src/wire/checksum.ts exports sum16(buf, off, len, initial)').toBe('function');
    const sum16 = wire.sum16 as (buf: Uint8Array, off: number, len: number, initial?: number) => number;
    const random = mulberry32(4242);
    const pool = randomBytes(random, 2100);
    for (let len = 0; len <= 2000; len++) {
      const offset = Math.floor(random() * 64);
      const initial = Math.floor(random() * 0x10000);
      expect(sum16(pool, offset, len, initial), `len ${len} offset ${offset}`).toBe(
        native!.checksum(pool, offset, len, initial),
      );
      const view = pool.subarray(offset, offset + len);
      expect(sum16(view, 0, len)).toBe(native!.checksum(view, 0, len, 0));
    }
  });
});
