import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import { isTunrouteError } from '../../src/errors.js';
import {
  clampPrivateKey,
  constantTimeEqual,
  dh,
  formatKey,
  generatePresharedKey,
  generatePrivateKey,
  isZero,
  KeyFormatError,
  parseKey,
  PrivateKey,
  publicKeyOf,
  wipe,
} from '../../src/wireguard/keys.js';
import { hex, seededRandom, toHex } from './wg-harness.js';

// RFC 7748 §6.1 (X25519 Diffie-Hellman).
const ALICE_PRIV = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const ALICE_PUB = '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a';
const BOB_PRIV = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
const BOB_PUB = 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f';
const SHARED = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';

describe('X25519', () => {
  it('RFC 7748 §6.1: public keys and shared secret', () => {
    expect(toHex(publicKeyOf(ALICE_PRIV))).toBe(ALICE_PUB);
    expect(toHex(publicKeyOf(BOB_PRIV))).toBe(BOB_PUB);
    expect(toHex(dh(ALICE_PRIV, hex(BOB_PUB))!)).toBe(SHARED);
    expect(toHex(dh(BOB_PRIV, hex(ALICE_PUB))!)).toBe(SHARED);
  });

  it('agrees with tweetnacl on random keys', () => {
    const r = seededRandom('x25519');
    for (let i = 0; i < 8; i++) {
      const a = generatePrivateKey(r);
      const b = generatePrivateKey(r);
      expect(toHex(publicKeyOf(a))).toBe(toHex(nacl.scalarMult.base(a)));
      expect(toHex(new PrivateKey(a).dh(publicKeyOf(b))!)).toBe(toHex(nacl.scalarMult(a, publicKeyOf(b))));
    }
  });

  it('a low-order public key gives no shared secret (undefined, not a throw)', () => {
    expect(dh(ALICE_PRIV, new Uint8Array(32))).toBeUndefined();
    expect(dh(ALICE_PRIV, Uint8Array.of(1, ...new Uint8Array(31)))).toBeUndefined();
    expect(new PrivateKey(ALICE_PRIV).dh(new Uint8Array(5))).toBeUndefined();
  });

  it('clamping as wg genkey does', () => {
    const k = clampPrivateKey(new Uint8Array(32).fill(0xff));
    expect(k[0]).toBe(0xf8);
    expect(k[31]).toBe(0x7f);
    const z = clampPrivateKey(new Uint8Array(32));
    expect(z[31]).toBe(0x40);
    const g = generatePrivateKey();
    expect(g[0] & 7).toBe(0);
    expect(g[31] & 0xc0).toBe(0x40);
    expect(generatePresharedKey()).toHaveLength(32);
  });

  it('wipe zeroes the private bytes and disables DH; the public key stays', () => {
    const k = new PrivateKey(ALICE_PRIV);
    k.wipe();
    expect(k.wiped).toBe(true);
    expect(isZero(k.bytes)).toBe(true);
    expect(k.dh(hex(BOB_PUB))).toBeUndefined();
    expect(toHex(k.publicKey)).toBe(ALICE_PUB);
    expect(toHex(ALICE_PRIV)).not.toBe('00'.repeat(32)); // the caller's copy is the caller's
    const b = Uint8Array.of(1, 2, 3);
    wipe(b, undefined);
    expect([...b]).toEqual([0, 0, 0]);
  });
});

describe("wg's base64 key format", () => {
  it('round trip, and the same text as wg for the RFC key', () => {
    const text = formatKey(ALICE_PRIV);
    expect(text).toBe('dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=');
    expect(toHex(parseKey(`${text}\n`))).toBe(toHex(ALICE_PRIV));
    const r = seededRandom('fmt');
    for (let i = 0; i < 50; i++) {
      const k = r(32);
      expect(toHex(parseKey(formatKey(k)))).toBe(toHex(k));
    }
  });

  it.each([
    ['', /empty/],
    ['   \n', /empty/],
    ['dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC=', /43 characters, not 44/],
    ['dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo==', /45 characters/],
    ['dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=', /not valid base64/], // stray low bits
    ['dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC-=', /not valid base64/], // base64url
    ['dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCoA', /not valid base64/], // no padding
  ])('%j is refused with a one-sentence reason', (text, why) => {
    let err: unknown;
    try {
      parseKey(text, 'peer public key');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KeyFormatError);
    expect(isTunrouteError(err)).toBe(true);
    const msg = (err as Error).message;
    expect(msg).toMatch(why);
    expect(msg).toMatch(/^the peer public key /);
    expect(msg.split(/\.\s/)).toHaveLength(1);
  });
});

describe('constant-time helpers', () => {
  it('constantTimeEqual and isZero', () => {
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2))).toBe(true);
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBe(false);
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false);
    expect(isZero(new Uint8Array(32))).toBe(true);
    expect(isZero(Uint8Array.of(0, 0, 1))).toBe(false);
  });
});

const hasWg = existsSync('/usr/bin/wg');

describe.skipIf(!hasWg)('agreement with wireguard-tools (`wg genkey`, `wg pubkey`)', () => {
  it('our public key of a wg-generated private key is what `wg pubkey` prints, and the other way round', () => {
    for (let i = 0; i < 3; i++) {
      const text = execFileSync('wg', ['genkey'], { encoding: 'utf8' });
      const priv = parseKey(text, 'private key');
      expect(priv[0] & 7).toBe(0);
      const theirs = execFileSync('wg', ['pubkey'], { input: text, encoding: 'utf8' }).trim();
      expect(formatKey(publicKeyOf(priv))).toBe(theirs);
    }
    const ours = formatKey(generatePrivateKey());
    expect(execFileSync('wg', ['pubkey'], { input: `${ours}\n`, encoding: 'utf8' }).trim()).toBe(formatKey(publicKeyOf(parseKey(ours))));
  });
});
