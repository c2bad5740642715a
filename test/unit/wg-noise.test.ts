import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  aeadNonce,
  aeadOpen,
  aeadSeal,
  hash,
  hmac,
  INITIAL_CHAIN_KEY,
  INITIAL_HASH,
  kdf1,
  kdf2,
  kdf3,
  mac,
  tai64n,
  timestampAfter,
  xaeadOpen,
  xaeadSeal,
} from '../../src/wireguard/noise.js';
import { hex, seededRandom, toHex } from './wg-harness.js';

/** RFC 2104 over BLAKE2s-256, written out by hand. */
function hmacByHand(key: Uint8Array, msg: Uint8Array): string {
  const k = new Uint8Array(64);
  k.set(key.length > 64 ? createHash('blake2s256').update(key).digest() : key);
  const ipad = k.map((b) => b ^ 0x36);
  const opad = k.map((b) => b ^ 0x5c);
  const inner = createHash('blake2s256').update(ipad).update(msg).digest();
  return createHash('blake2s256').update(opad).update(inner).digest('hex');
}

describe('noise primitives', () => {
  it('HASH is BLAKE2s-256 (RFC 7693 Appendix B: "abc")', () => {
    expect(toHex(hash('abc'))).toBe('508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
    expect(toHex(hash('a', 'bc'))).toBe(toHex(hash('abc')));
  });

  it('the initial chaining key and hash (HASH(CONSTRUCTION), HASH(Ci || IDENTIFIER))', () => {
    expect(toHex(INITIAL_CHAIN_KEY)).toBe('60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36');
    expect(toHex(INITIAL_HASH)).toBe('2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3');
  });

  it('HMAC is RFC 2104 over BLAKE2s-256', () => {
    const r = seededRandom('hmac');
    for (const len of [0, 1, 32, 64, 65, 200]) {
      const key = r(32);
      const msg = r(len);
      expect(toHex(hmac(key, msg))).toBe(hmacByHand(key, msg));
    }
  });

  it('KDF1/2/3 chain as the whitepaper defines', () => {
    const key = seededRandom('kdf')(32);
    const input = seededRandom('kdf-in')(32);
    const t0 = hmac(key, input);
    const t1 = hmac(t0, Uint8Array.of(1));
    const t2 = hmac(t0, Uint8Array.of(...t1, 2));
    const t3 = hmac(t0, Uint8Array.of(...t2, 3));
    expect(toHex(kdf1(key, input))).toBe(toHex(t1));
    expect(kdf2(key, input).map(toHex)).toEqual([t1, t2].map(toHex));
    expect(kdf3(key, input).map(toHex)).toEqual([t1, t2, t3].map(toHex));
  });

  it('MAC is keyed BLAKE2s with a 16-byte digest (RFC 7693 parameter block: key length, digest length)', () => {
    const m = mac(new Uint8Array(32).fill(1), hex('00010203'));
    expect(m).toHaveLength(16);
    expect(toHex(mac(new Uint8Array(32).fill(1), hex('00010203')))).toBe(toHex(m));
    expect(toHex(mac(new Uint8Array(32).fill(2), hex('00010203')))).not.toBe(toHex(m));
    // Not a truncation of the 32-byte keyed hash: the digest length is part of the parameters.
    expect(toHex(m)).not.toBe(toHex(hash('x')).slice(0, 32));
  });

  it('AEAD nonce: 4 zero bytes then the 64-bit counter little-endian', () => {
    expect(toHex(aeadNonce(0n))).toBe('000000000000000000000000');
    expect(toHex(aeadNonce(0x0102030405060708n))).toBe('000000000807060504030201');
    expect(toHex(aeadNonce((1n << 64n) - 1n))).toBe('00000000ffffffffffffffff');
  });

  it('AEAD round trip with associated data; any change fails to open', () => {
    const key = seededRandom('aead')(32);
    const ad = hex('a1a2a3');
    const sealed = aeadSeal(key, 7n, hex('68656c6c6f'), ad);
    expect(sealed).toHaveLength(5 + 16);
    expect(toHex(aeadOpen(key, 7n, sealed, ad)!)).toBe('68656c6c6f');
    expect(aeadOpen(key, 8n, sealed, ad)).toBeUndefined();
    expect(aeadOpen(key, 7n, sealed, hex('a1a2a4'))).toBeUndefined();
    const bad = new Uint8Array(sealed);
    bad[0] ^= 1;
    expect(aeadOpen(key, 7n, bad, ad)).toBeUndefined();
    expect(aeadOpen(key, 7n, sealed.subarray(0, 15), ad)).toBeUndefined();
    expect(toHex(aeadOpen(key, 0n, aeadSeal(key, 0n, new Uint8Array(0), ad), ad)!)).toBe('');
  });

  it('XAEAD (XChaCha20-Poly1305) round trip', () => {
    const key = seededRandom('xaead')(32);
    const nonce = seededRandom('xnonce')(24);
    const sealed = xaeadSeal(key, nonce, hex('00112233445566778899aabbccddeeff'), hex('01'));
    expect(sealed).toHaveLength(32);
    expect(toHex(xaeadOpen(key, nonce, sealed, hex('01'))!)).toBe('00112233445566778899aabbccddeeff');
    expect(xaeadOpen(key, nonce, sealed, hex('02'))).toBeUndefined();
    expect(xaeadOpen(key, nonce, sealed.subarray(0, 8), hex('01'))).toBeUndefined();
  });

  it('TAI64N: 2^62 + 10 + seconds, nanoseconds whitened to 2^24 ns', () => {
    expect(toHex(tai64n(0))).toBe('400000000000000a00000000');
    expect(toHex(tai64n(999))).toBe('400000000000000a3b000000');
    expect(toHex(tai64n(1_700_000_000_123))).toBe('400000006553f10a07000000');
    expect(timestampAfter(tai64n(2000), tai64n(1000))).toBe(true);
    expect(timestampAfter(tai64n(1000), tai64n(1000))).toBe(false);
    expect(timestampAfter(tai64n(1000), tai64n(1005))).toBe(false); // same whitened instant
    expect(timestampAfter(tai64n(1000), new Uint8Array(12))).toBe(true);
  });
});
