/**
 * Keys — WireGuard whitepaper §5.4 (Protocol & Cryptography): "DH(private key, public key):
 * Curve25519 point multiplication of private key and public key, returning 32 bytes of
 * output"; "DH-GENERATE(): generates a random Curve25519 private key and derives its
 * corresponding public key, returning a pair of 32 bytes values, (private, public)".
 * And the `wg(8)` key format: 32 bytes in standard base64 with padding (44 characters).
 *
 * X25519 runs in OpenSSL through node:crypto: measured here ~16× faster than tweetnacl's
 * `scalarMult`, with the same results. A raw 32-byte private key enters OpenSSL as a JWK
 * (`d` plus any `x`: OpenSSL recomputes the public half from `d`, which is also how we derive
 * public keys); DER import gives the same key but measured ~10× slower.
 *
 * Wiping: `wipe()` zeroes our JavaScript copies. The copy inside a KeyObject is OpenSSL's and
 * is freed (cleansed) when the KeyObject is garbage-collected; we drop our reference to it.
 * Transport (session) keys never become KeyObjects: see transport-aead.ts.
 */
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { TunrouteError } from '../errors.js';

export const KEY_LEN = 32;

/** Where randomness comes from: `n` fresh random bytes. Injected so that tests are repeatable. */
export type RandomSource = (n: number) => Uint8Array;

export const systemRandom: RandomSource = (n) => randomBytes(n);

/** A key string that `wg` would not accept. The message is one sentence naming the fix. */
export class KeyFormatError extends TunrouteError {
  constructor(message: string) {
    super('TR_BAD_CONFIG', message);
    this.name = 'KeyFormatError';
  }
}

const B64_KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/**
 * Parse a key in `wg`'s format: 44 characters of standard base64 encoding 32 bytes.
 * Surrounding whitespace (a trailing newline from a file) is ignored. `what` names the key in
 * the error ("private key", "peer public key").
 */
export function parseKey(text: string, what = 'key'): Uint8Array {
  const s = text.trim();
  if (s.length === 0) throw new KeyFormatError(`the ${what} is empty: expected 44 base64 characters as printed by \`wg genkey\` or \`tunroute genkey\``);
  if (s.length !== 44) {
    throw new KeyFormatError(
      `the ${what} has ${s.length} characters, not 44: paste the whole base64 key as printed by \`wg genkey\`/\`wg pubkey\``,
    );
  }
  if (!B64_KEY_RE.test(s)) {
    throw new KeyFormatError(
      `the ${what} is not valid base64 for 32 bytes (only A-Z a-z 0-9 + / and one trailing '='): check it was copied whole`,
    );
  }
  const key = new Uint8Array(Buffer.from(s, 'base64'));
  if (key.length !== KEY_LEN) throw new KeyFormatError(`the ${what} does not decode to 32 bytes: check it was copied whole`);
  return key;
}

/** Format 32 bytes the way `wg` prints keys. */
export function formatKey(key: Uint8Array): string {
  assertKey(key, 'key');
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

function assertKey(key: Uint8Array, what: string): void {
  if (key.length !== KEY_LEN) throw new RangeError(`${what} must be ${KEY_LEN} bytes, got ${key.length}`);
}

/** Curve25519 clamping (RFC 7748 §5) in place: what `wg genkey` does to 32 random bytes. */
export function clampPrivateKey(key: Uint8Array): Uint8Array {
  assertKey(key, 'private key');
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
  return key;
}

/** A new clamped private key (`wg genkey`). */
export function generatePrivateKey(random: RandomSource = systemRandom): Uint8Array {
  const k = new Uint8Array(KEY_LEN);
  k.set(random(KEY_LEN).subarray(0, KEY_LEN));
  return clampPrivateKey(k);
}

/** A new preshared key (`wg genpsk`): 32 random bytes, not clamped. */
export function generatePresharedKey(random: RandomSource = systemRandom): Uint8Array {
  const k = new Uint8Array(KEY_LEN);
  k.set(random(KEY_LEN).subarray(0, KEY_LEN));
  return k;
}

const b64url = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
const ZERO_X = b64url(new Uint8Array(KEY_LEN));

/**
 * A Curve25519 private key held both as bytes (to wipe, to format) and as an OpenSSL KeyObject
 * (to compute DH fast). The public key is derived once.
 */
export class PrivateKey {
  private raw: Uint8Array;
  private obj: KeyObject | undefined;
  private pub: Uint8Array;

  /** From 32 bytes (copied; clamping is left to X25519 itself, as in `wg`). */
  constructor(bytes: Uint8Array) {
    assertKey(bytes, 'private key');
    this.raw = new Uint8Array(bytes);
    // OpenSSL derives the public half from `d` on import and ignores the `x` we give it.
    this.obj = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: b64url(this.raw), x: ZERO_X }, format: 'jwk' });
    const x = this.obj.export({ format: 'jwk' }).x;
    if (typeof x !== 'string') throw new Error('OpenSSL did not return an X25519 public key');
    this.pub = new Uint8Array(Buffer.from(x, 'base64url'));
  }

  static generate(random: RandomSource = systemRandom): PrivateKey {
    const k = generatePrivateKey(random);
    const pk = new PrivateKey(k);
    wipe(k);
    return pk;
  }

  get publicKey(): Uint8Array {
    return this.pub;
  }

  /** The 32 private bytes (a view: do not keep it past `wipe()`). */
  get bytes(): Uint8Array {
    return this.raw;
  }

  get wiped(): boolean {
    return this.obj === undefined;
  }

  /**
   * DH(this, publicKey): the 32-byte shared secret, or `undefined` when the result is all
   * zeros (a low-order public key; OpenSSL refuses it, as RFC 7748 §6.1 allows).
   */
  dh(publicKey: Uint8Array): Uint8Array | undefined {
    if (this.obj === undefined || publicKey.length !== KEY_LEN) return undefined;
    try {
      const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64url(publicKey) }, format: 'jwk' });
      return diffieHellman({ privateKey: this.obj, publicKey: peer });
    } catch {
      return undefined;
    }
  }

  /** Zero the bytes and drop the OpenSSL copy. The public key stays readable. */
  wipe(): void {
    wipe(this.raw);
    this.obj = undefined;
  }
}

/** The public key of 32 private bytes (`wg pubkey`). */
export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  const k = new PrivateKey(privateKey);
  const pub = new Uint8Array(k.publicKey);
  k.wipe();
  return pub;
}

/** DH(private, public) for raw keys; `undefined` for a low-order public key. */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | undefined {
  const k = new PrivateKey(privateKey);
  const s = k.dh(publicKey);
  k.wipe();
  return s;
}

/** Constant-time equality of two byte strings (false, without a timing hint, when lengths differ). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/** Constant-time test for all zeros. */
export function isZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i];
  return acc === 0;
}

/** Zero every given buffer in place. */
export function wipe(...bufs: (Uint8Array | undefined)[]): void {
  for (const b of bufs) b?.fill(0);
}
