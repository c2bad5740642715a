/**
 * The transport cipher: the native one (libcrypto through the addon) against node:crypto,
 * message for message, both ways; padding, keepalives, forgeries, in-place opening, wiping.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nodeAead, transportAead, type TransportAead } from '../../src/wireguard/transport-aead.js';

const native = transportAead();
if (native.name !== 'native') console.log('[unit/wg-transport-aead] native half SKIPPED: the addon is not built (npm run build)');

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);

function sealWith(a: TransportAead, packet: Uint8Array, padTo: number, counter = 9n, receiver = 0xa1b2c3d4): Uint8Array {
  const out = new Uint8Array(16 + Math.max(padTo, packet.length) + 16 + 5);
  const n = a.seal(KEY, receiver, counter, packet, padTo, out, 5);
  return out.subarray(5, 5 + n);
}

describe('transport AEAD, node:crypto', () => {
  it('writes the header: type 4, receiver index and counter little-endian', () => {
    const msg = sealWith(nodeAead, new Uint8Array([1, 2, 3]), 16, 0x0102030405060708n, 0x11223344);
    expect(Buffer.from(msg.subarray(0, 16)).toString('hex')).toBe('04000000' + '44332211' + '0807060504030201');
    expect(msg.length).toBe(16 + 16 + 16);
  });

  it('opens what it sealed, padding as zeros; a flipped bit does not open', () => {
    const p = randomBytes(100);
    const msg = sealWith(nodeAead, p, 112);
    const out = new Uint8Array(112);
    expect(nodeAead.open(KEY, msg, out, 0)).toBe(112);
    expect(Buffer.from(out.subarray(0, 100)).equals(p)).toBe(true);
    expect(out.subarray(100).every((b) => b === 0)).toBe(true);
    msg[40] ^= 1;
    expect(nodeAead.open(KEY, msg, new Uint8Array(112), 0)).toBe(-1);
  });
});

describe.skipIf(native.name !== 'native')('transport AEAD, native against node:crypto', () => {
  it.each([0, 1, 15, 16, 100, 1404, 1420, 9000, 65_000])('%i-byte packets: byte-identical messages, each opens the other', (len) => {
    const p = randomBytes(len);
    const pad = len === 0 ? 0 : (len + 15) & ~15;
    const a = sealWith(native, p, pad, 77n);
    const b = sealWith(nodeAead, p, pad, 77n);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const o1 = new Uint8Array(pad);
    const o2 = new Uint8Array(pad);
    expect(native.open(KEY, b, o1, 0)).toBe(pad);
    expect(nodeAead.open(KEY, a, o2, 0)).toBe(pad);
    expect(Buffer.from(o1.subarray(0, len)).equals(p)).toBe(true);
    expect(Buffer.from(o2).equals(Buffer.from(o1))).toBe(true);
  });

  it('counters up to 2^64-1 go into the nonce little-endian (as node:crypto computes it)', () => {
    for (const c of [0n, 1n, 0xffffffffn, 0x100000000n, (1n << 64n) - 1n]) {
      const p = randomBytes(33);
      expect(Buffer.from(sealWith(native, p, 48, c)).equals(Buffer.from(sealWith(nodeAead, p, 48, c)))).toBe(true);
    }
  });

  it('opens in place (plaintext over the ciphertext) and rejects forgeries, leaving zeros', () => {
    const p = randomBytes(200);
    const msg = sealWith(native, p, 208);
    const copy = Uint8Array.from(msg);
    expect(native.open(KEY, msg, msg, 16)).toBe(208);
    expect(Buffer.from(msg.subarray(16, 216)).equals(p)).toBe(true);

    for (const at of [0 + 16, 100, copy.length - 1]) {
      const bad = Uint8Array.from(copy);
      bad[at] ^= 0x80;
      const out = new Uint8Array(208).fill(0xee);
      expect(native.open(KEY, bad, out, 0)).toBe(-1);
      expect(out.every((b) => b === 0)).toBe(true);
    }
    const wrongKey = Uint8Array.from(KEY);
    wrongKey[0] ^= 1;
    expect(native.open(wrongKey, copy, new Uint8Array(208), 0)).toBe(-1);
    // The counter is authenticated through the nonce: a message with another counter fails.
    const moved = Uint8Array.from(copy);
    moved[8] ^= 1;
    expect(native.open(KEY, moved, new Uint8Array(208), 0)).toBe(-1);
  });

  it('refuses an output that partly overlaps the message with a RangeError (only exactly in place is allowed)', () => {
    const p = randomBytes(64);
    const sealed = sealWith(native, p, 64); // 96 bytes
    const buf = new Uint8Array(8 + 96 + 8 + 64);
    const place = (): Uint8Array => {
      buf.set(sealed, 8);
      return buf.subarray(8, 8 + 96);
    };
    for (const outOff of [0, 8, 8 + 15, 8 + 17, 8 + 40, 8 + 95]) {
      expect(() => native.open(KEY, place(), buf, outOff), `out at ${outOff}`).toThrow(RangeError);
    }
    // A view of the same bytes one byte later is an overlap too.
    expect(() => native.open(KEY, place(), buf.subarray(9), 16)).toThrow(RangeError);
    // Exactly in place, and right after the message in the same buffer, both open.
    expect(native.open(KEY, place(), buf, 8 + 16)).toBe(64);
    expect(Buffer.from(buf.subarray(24, 88)).equals(p)).toBe(true);
    expect(native.open(KEY, place(), buf, 8 + 96 + 8)).toBe(64);
    expect(Buffer.from(buf.subarray(112, 176)).equals(p)).toBe(true);
  });

  it('seals in place (the packet already where the ciphertext goes)', () => {
    const p = randomBytes(64);
    const buf = new Uint8Array(16 + 64 + 16);
    buf.set(p, 16);
    const n = native.seal(KEY, 5, 3n, buf.subarray(16, 80), 64, buf, 0);
    expect(n).toBe(96);
    expect(Buffer.from(buf).equals(Buffer.from(sealWith(nodeAead, p, 64, 3n, 5)))).toBe(true);
  });

  it('refuses bad arguments with exceptions, not memory errors', () => {
    const out = new Uint8Array(40);
    expect(() => native.seal(KEY, 1, 1n, new Uint8Array(16), 16, out, 0)).toThrow(/too small/);
    expect(() => native.seal(new Uint8Array(31), 1, 1n, new Uint8Array(0), 0, out, 0)).toThrow(/32 bytes/);
    expect(() => native.open(KEY, new Uint8Array(31), out, 0)).toThrow(/shorter/);
    expect(() => native.open(KEY, new Uint8Array(64), new Uint8Array(10), 0)).toThrow(/too small/);
  });

  it('after wipe() it still seals correctly with the next key given', () => {
    native.wipe();
    const p = randomBytes(50);
    expect(Buffer.from(sealWith(native, p, 64)).equals(Buffer.from(sealWith(nodeAead, p, 64)))).toBe(true);
  });
});
