/**
 * Cryptographic primitives — WireGuard whitepaper §5.4 (Protocol & Cryptography):
 *
 *   HASH(input)               Blake2s(input, 32)
 *   MAC(key, input)           Keyed-Blake2s(key, 16, input)
 *   HMAC(key, input)          HMAC-Blake2s(key, input, 32)  (RFC 2104 over BLAKE2s-256, 64-byte block)
 *   AEAD(key, counter, plain, auth)
 *                             ChaCha20Poly1305 (RFC 7539), nonce = 32 bits of zeros followed by
 *                             the 64-bit little-endian counter
 *   XAEAD(key, nonce, plain, auth)
 *                             XChaCha20Poly1305 with a random 24-byte nonce
 *   TAI64N()                  12-byte TAI64N timestamp of the current time
 *   KDFn(key, input)          τ0 = HMAC(key, input); τ1 = HMAC(τ0, 0x1);
 *                             τi = HMAC(τ0, τ(i-1) || i); returns (τ1, ..., τn)
 *
 *   CONSTRUCTION = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
 *   IDENTIFIER   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
 *   LABEL_MAC1   = "mac1----",  LABEL_COOKIE = "cookie--"
 *
 * BLAKE2s-256, HMAC-BLAKE2s and ChaCha20-Poly1305 run in OpenSSL (node:crypto). Keyed BLAKE2s
 * with a 16-byte digest (MAC) and XChaCha20-Poly1305 are not in node:crypto; they come from the
 * audited `@noble/hashes` and `@noble/ciphers`, used only for MAC1/MAC2 and the cookie reply.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, type KeyObject } from 'node:crypto';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { writeU64 } from './messages.js';

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

export const HASH_LEN = 32;
export const MAC_LEN = 16;
export const AEAD_TAG_LEN = 16;
export const XAEAD_NONCE_LEN = 24;
export const TIMESTAMP_LEN = 12;

const enc = new TextEncoder();

/** HASH(a || b || ...): BLAKE2s-256. */
export function hash(...parts: (Uint8Array | string)[]): Uint8Array {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(typeof p === 'string' ? enc.encode(p) : p);
  return h.digest();
}

/** HMAC(key, a || b || ...): HMAC (RFC 2104) over BLAKE2s-256. */
export function hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/** KDF1(key, input) = τ1. */
export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  const t0 = hmac(key, input);
  const t1 = hmac(t0, ONE);
  t0.fill(0);
  return t1;
}

/** KDF2(key, input) = (τ1, τ2). */
export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const t0 = hmac(key, input);
  const t1 = hmac(t0, ONE);
  const t2 = hmac(t0, t1, TWO);
  t0.fill(0);
  return [t1, t2];
}

/** KDF3(key, input) = (τ1, τ2, τ3). */
export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const t0 = hmac(key, input);
  const t1 = hmac(t0, ONE);
  const t2 = hmac(t0, t1, TWO);
  const t3 = hmac(t0, t2, THREE);
  t0.fill(0);
  return [t1, t2, t3];
}

/** MAC(key, input): keyed BLAKE2s with a 16-byte digest (key of 1..32 bytes). */
export function mac(key: Uint8Array, input: Uint8Array): Uint8Array {
  return blake2s(input, { key, dkLen: MAC_LEN });
}

/** The 12-byte AEAD nonce for a 64-bit counter: 4 zero bytes, then the counter little-endian. */
export function aeadNonce(counter: bigint, out: Uint8Array = new Uint8Array(12)): Uint8Array {
  out[0] = 0;
  out[1] = 0;
  out[2] = 0;
  out[3] = 0;
  writeU64(out, 4, counter);
  return out;
}

const ZERO_NONCE = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

/** AEAD(key, counter, plain, auth): ciphertext followed by the 16-byte tag. */
export function aeadSeal(key: Uint8Array | KeyObject, counter: bigint, plain: Uint8Array, auth: Uint8Array = EMPTY): Uint8Array {
  const nonce = counter === 0n ? ZERO_NONCE : aeadNonce(counter);
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_LEN });
  if (auth.length > 0) c.setAAD(auth, { plaintextLength: plain.length });
  const body = c.update(plain);
  c.final();
  const out = new Uint8Array(plain.length + AEAD_TAG_LEN);
  out.set(body, 0);
  out.set(c.getAuthTag(), plain.length);
  return out;
}

/** Open `ciphertext || tag`; `undefined` when authentication fails or it is shorter than a tag. */
export function aeadOpen(
  key: Uint8Array | KeyObject,
  counter: bigint,
  sealed: Uint8Array,
  auth: Uint8Array = EMPTY,
): Uint8Array | undefined {
  if (sealed.length < AEAD_TAG_LEN) return undefined;
  const n = sealed.length - AEAD_TAG_LEN;
  const nonce = counter === 0n ? ZERO_NONCE : aeadNonce(counter);
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_LEN });
  d.setAuthTag(sealed.subarray(n));
  if (auth.length > 0) d.setAAD(auth, { plaintextLength: n });
  const plain = d.update(sealed.subarray(0, n));
  try {
    d.final();
  } catch {
    plain.fill(0);
    return undefined;
  }
  return plain;
}

/** XAEAD(key, nonce, plain, auth): XChaCha20-Poly1305, ciphertext followed by the tag. */
export function xaeadSeal(key: Uint8Array, nonce: Uint8Array, plain: Uint8Array, auth: Uint8Array): Uint8Array {
  return xchacha20poly1305(key, nonce, auth).encrypt(plain);
}

/** Open an XAEAD box; `undefined` when authentication fails. */
export function xaeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, auth: Uint8Array): Uint8Array | undefined {
  if (sealed.length < AEAD_TAG_LEN) return undefined;
  try {
    return xchacha20poly1305(key, nonce, auth).decrypt(sealed);
  } catch {
    return undefined;
  }
}

/** Ci = HASH(CONSTRUCTION): the chaining key every handshake starts from. */
export const INITIAL_CHAIN_KEY: Uint8Array = hash(CONSTRUCTION);
/** Hi = HASH(Ci || IDENTIFIER): the hash every handshake starts from. */
export const INITIAL_HASH: Uint8Array = hash(INITIAL_CHAIN_KEY, IDENTIFIER);

/** TAI64 label of 1970-01-01 00:00:10 TAI, i.e. 2^62 + 10 (the 10 s TAI-UTC offset of 1970). */
const TAI64_BASE = 0x400000000000000an;
/**
 * Nanoseconds are rounded down to a multiple of 2^24 ns (~16.8 ms), as wireguard-go does, so
 * the timestamp does not leak fine timing; two initiations are never sent that close together.
 */
const WHITENER_MASK = 0x1000000 - 1;

/**
 * TAI64N of a wall-clock time in milliseconds since the Unix epoch: 8 bytes big-endian seconds
 * (label), 4 bytes big-endian nanoseconds.
 */
export function tai64n(unixMs: number): Uint8Array {
  const ms = Math.floor(unixMs);
  const secs = Math.floor(ms / 1000);
  const nanos = (((ms - secs * 1000) * 1_000_000) & ~WHITENER_MASK) >>> 0;
  const out = new Uint8Array(TIMESTAMP_LEN);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, TAI64_BASE + BigInt(secs), false);
  dv.setUint32(8, nanos, false);
  return out;
}

/** Whether TAI64N timestamp `a` is strictly later than `b` (both big-endian: byte order). */
export function timestampAfter(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < TIMESTAMP_LEN; i++) {
    if (a[i] !== b[i]) return a[i] > b[i];
  }
  return false;
}
