import { describe, expect, it } from 'vitest';
import { CookieChecker, CookieGenerator, COOKIE_REFRESH_TIME_MS, HandshakeLoadMeter } from '../../src/wireguard/cookie.js';
import { endpointBytes } from '../../src/wireguard/endpoint.js';
import { generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { CookieReplyMessage, COOKIE_REPLY_LEN, INITIATION_LEN, writeU32 } from '../../src/wireguard/messages.js';
import { seededRandom, toHex } from './wg-harness.js';

const responderPub = publicKeyOf(generatePrivateKey(seededRandom('cookie/r')));
const SRC = endpointBytes({ address: '192.0.2.7', port: 40000 });

function message(seed: string): Uint8Array {
  const m = new Uint8Array(INITIATION_LEN);
  m.set(seededRandom(seed)(INITIATION_LEN - 32));
  writeU32(m, 0, 1);
  return m;
}

describe('mac1 and mac2', () => {
  it('mac1 proves the sender knows the responder’s public key', () => {
    const checker = new CookieChecker(responderPub);
    const gen = new CookieGenerator(responderPub);
    const m = message('m1');
    gen.addMacs(m, 0);
    expect(checker.checkMac1(m)).toBe(true);
    expect(toHex(m.subarray(132))).toBe('00'.repeat(16)); // no cookie yet: mac2 zero
    const other = new CookieGenerator(publicKeyOf(generatePrivateKey(seededRandom('x'))));
    const m2 = message('m1');
    other.addMacs(m2, 0);
    expect(checker.checkMac1(m2)).toBe(false);
    m[5] ^= 1;
    expect(checker.checkMac1(m)).toBe(false);
  });

  it('a cookie reply gives the initiator a cookie that makes mac2 valid for its address only, for 2 minutes', () => {
    const checker = new CookieChecker(responderPub);
    const gen = new CookieGenerator(responderPub);
    const m = message('m');
    gen.addMacs(m, 1000);
    expect(checker.checkMac2(m, SRC, 1000)).toBe(false);
    const reply = checker.createReply(m, SRC, 1000, seededRandom('nonce'));
    expect(reply).toHaveLength(COOKIE_REPLY_LEN);
    expect(CookieReplyMessage.parse(reply)!.receiver).toBe(new DataView(m.buffer).getUint32(4, true));
    expect(gen.consumeReply(reply, 1500)).toBe(true);
    expect(gen.hasCookie(1500)).toBe(true);
    const again = message('m-again');
    gen.addMacs(again, 2000);
    expect(checker.checkMac1(again)).toBe(true);
    expect(checker.checkMac2(again, SRC, 2000)).toBe(true);
    expect(checker.checkMac2(again, endpointBytes({ address: '192.0.2.7', port: 40001 }), 2000)).toBe(false);
    // The initiator stops using the cookie after 120 s...
    const late = message('late');
    gen.addMacs(late, 1500 + COOKIE_REFRESH_TIME_MS + 1);
    expect(toHex(late.subarray(132))).toBe('00'.repeat(16));
    // ... and the responder's secret expires after 120 s, so old cookies stop working.
    expect(checker.checkMac2(again, SRC, 1000 + COOKIE_REFRESH_TIME_MS + 1)).toBe(false);
  });

  it('the responder secret rotates: a cookie from the old secret fails after rotation', () => {
    const checker = new CookieChecker(responderPub);
    const gen = new CookieGenerator(responderPub);
    const m = message('rot');
    gen.addMacs(m, 0);
    gen.consumeReply(checker.createReply(m, SRC, 0, seededRandom('s1')), 0);
    const t = COOKIE_REFRESH_TIME_MS + 10;
    const m2 = message('rot2');
    gen.addMacs(m2, t - 20);
    checker.createReply(m2, SRC, t, seededRandom('s2')); // renews the secret
    expect(checker.checkMac2(m2, SRC, t)).toBe(false);
  });

  it('a cookie reply is refused when forged or when nothing was sent (bound to our last mac1)', () => {
    const checker = new CookieChecker(responderPub);
    const gen = new CookieGenerator(responderPub);
    const m = message('f');
    const reply = checker.createReply(m, SRC, 0, seededRandom('n'));
    expect(gen.consumeReply(reply, 0)).toBe(false); // we never sent anything
    gen.addMacs(message('different'), 0);
    expect(gen.consumeReply(reply, 0)).toBe(false); // answers another message's mac1
    gen.addMacs(m, 0);
    const bad = new Uint8Array(checker.createReply(m, SRC, 0, seededRandom('n2')));
    bad[40] ^= 1;
    expect(gen.consumeReply(bad, 0)).toBe(false);
    expect(gen.consumeReply(bad.subarray(0, 63), 0)).toBe(false);
    expect(gen.consumeReply(checker.createReply(m, SRC, 0, seededRandom('n3')), 0)).toBe(true);
  });
});

describe('HandshakeLoadMeter', () => {
  it('turns on above the threshold within a second and stays on for 1 s after', () => {
    const meter = new HandshakeLoadMeter(3);
    for (let i = 0; i < 3; i++) meter.note(100 + i);
    expect(meter.underLoad(103)).toBe(false);
    meter.note(104);
    expect(meter.underLoad(104)).toBe(true);
    expect(meter.underLoad(1103)).toBe(true);
    expect(meter.underLoad(1104)).toBe(false);
    meter.note(5000);
    expect(meter.underLoad(5000)).toBe(false);
  });
});
