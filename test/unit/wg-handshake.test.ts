import { describe, expect, it } from 'vitest';
import {
  acceptInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveTransportKeys,
  Handshake,
  openInitiation,
  StaticIdentity,
} from '../../src/wireguard/handshake.js';
import { generatePrivateKey } from '../../src/wireguard/keys.js';
import { INITIATION_LEN, RESPONSE_LEN } from '../../src/wireguard/messages.js';
import { deliver, IP_A, IP_B, icmpEcho, makePair, seededRandom, toHex } from './wg-harness.js';

describe('handshake functions', () => {
  const idI = new StaticIdentity(generatePrivateKey(seededRandom('i')));
  const idR = new StaticIdentity(generatePrivateKey(seededRandom('r')));
  const psk = seededRandom('psk')(32);

  function run(withPsk: boolean) {
    const hsI = new Handshake(idI, idR.publicKey, withPsk ? psk : undefined);
    const hsR = new Handshake(idR, idI.publicKey, withPsk ? psk : undefined);
    const init = createInitiation(idI, hsI, { wallMs: 1_700_000_000_000, random: seededRandom('e-i'), localIndex: 0x11223344 });
    expect(init?.length).toBe(INITIATION_LEN);
    const opened = openInitiation(idR, init as Uint8Array);
    expect(opened).toBeDefined();
    expect(toHex(opened!.remoteStatic)).toBe(toHex(idI.publicKey));
    expect(opened!.sender).toBe(0x11223344);
    expect(acceptInitiation(hsR, opened!, 0)).toBeUndefined();
    const resp = createResponse(hsR, { random: seededRandom('e-r'), localIndex: 0x55667788 });
    expect(resp?.length).toBe(RESPONSE_LEN);
    expect(consumeResponse(idI, hsI, resp as Uint8Array)).toBeUndefined();
    const kI = deriveTransportKeys(hsI)!;
    const kR = deriveTransportKeys(hsR)!;
    return { kI, kR, hsI, hsR };
  }

  it('derives matching transport keys, without and with a preshared key', () => {
    for (const withPsk of [false, true]) {
      const { kI, kR, hsI, hsR } = run(withPsk);
      expect(kI.isInitiator).toBe(true);
      expect(kR.isInitiator).toBe(false);
      expect(toHex(kI.sendKey)).toBe(toHex(kR.recvKey));
      expect(toHex(kI.recvKey)).toBe(toHex(kR.sendKey));
      expect(toHex(kI.sendKey)).not.toBe(toHex(kI.recvKey));
      expect(kI.localIndex).toBe(0x11223344);
      expect(kI.remoteIndex).toBe(0x55667788);
      expect(kR.localIndex).toBe(0x55667788);
      expect(kR.remoteIndex).toBe(0x11223344);
      // The handshake state is erased after derivation.
      expect(hsI.state).toBe('zeroed');
      expect(hsR.state).toBe('zeroed');
      expect(toHex(hsI.chainKey)).toBe('00'.repeat(32));
      expect(hsI.localEphemeral).toBeUndefined();
    }
    expect(toHex(run(false).kI.sendKey)).not.toBe(toHex(run(true).kI.sendKey));
  });

  it('is deterministic for the same randomness and time (a vector can be replayed)', () => {
    const a = new Handshake(idI, idR.publicKey);
    const b = new Handshake(idI, idR.publicKey);
    const m1 = createInitiation(idI, a, { wallMs: 5, random: seededRandom('x'), localIndex: 1 });
    const m2 = createInitiation(idI, b, { wallMs: 5, random: seededRandom('x'), localIndex: 1 });
    expect(toHex(m1!)).toBe(toHex(m2!));
  });

  it('refuses a replayed initiation (timestamp not newer) and a flood within 20 ms', () => {
    const hsI = new Handshake(idI, idR.publicKey);
    const hsR = new Handshake(idR, idI.publicKey);
    const m1 = createInitiation(idI, hsI, { wallMs: 10_000, random: seededRandom('a'), localIndex: 1 })!;
    expect(acceptInitiation(hsR, openInitiation(idR, m1)!, 1000)).toBeUndefined();
    expect(acceptInitiation(hsR, openInitiation(idR, m1)!, 5000)).toBe('replayed_timestamp');
    const m2 = createInitiation(idI, hsI, { wallMs: 11_000, random: seededRandom('b'), localIndex: 2 })!;
    expect(acceptInitiation(hsR, openInitiation(idR, m2)!, 1010)).toBe('flood');
    expect(acceptInitiation(hsR, openInitiation(idR, m2)!, 1021)).toBeUndefined();
    // An older timestamp, even freshly encrypted, is a replay too.
    const m3 = createInitiation(idI, hsI, { wallMs: 9_000, random: seededRandom('c'), localIndex: 3 })!;
    expect(acceptInitiation(hsR, openInitiation(idR, m3)!, 9000)).toBe('replayed_timestamp');
  });

  it('does not open an initiation meant for someone else, or one with a flipped bit', () => {
    const other = new StaticIdentity(generatePrivateKey(seededRandom('other')));
    const hsI = new Handshake(idI, other.publicKey);
    const m = createInitiation(idI, hsI, { wallMs: 1, random: seededRandom('a'), localIndex: 1 })!;
    expect(openInitiation(idR, m)).toBeUndefined();
    expect(openInitiation(other, m)).toBeDefined();
    for (const at of [8, 40, 60, 87]) {
      const bad = new Uint8Array(m);
      bad[at] ^= 1;
      expect(openInitiation(other, bad), `bit flipped at ${at}`).toBeUndefined();
    }
    // Timestamp tampering is caught in the second step.
    const bad = new Uint8Array(m);
    bad[100] ^= 1;
    const hsO = new Handshake(other, idI.publicKey);
    expect(acceptInitiation(hsO, openInitiation(other, bad)!, 0)).toBe('bad_timestamp');
    // A peer whose static key is not the handshake's.
    const hsWrong = new Handshake(other, idR.publicKey);
    expect(acceptInitiation(hsWrong, openInitiation(other, m)!, 0)).toBe('wrong_peer');
  });

  it('refuses a response that is forged, unexpected or for another index', () => {
    const hsI = new Handshake(idI, idR.publicKey);
    const hsR = new Handshake(idR, idI.publicKey);
    const m = createInitiation(idI, hsI, { wallMs: 1, random: seededRandom('a'), localIndex: 7 })!;
    acceptInitiation(hsR, openInitiation(idR, m)!, 0);
    const r = createResponse(hsR, { random: seededRandom('b'), localIndex: 9 })!;
    const forged = new Uint8Array(r);
    forged[50] ^= 0x80;
    expect(consumeResponse(idI, hsI, forged)).toBe('forged');
    const wrongIdx = new Uint8Array(r);
    wrongIdx[8] ^= 1;
    expect(consumeResponse(idI, hsI, wrongIdx)).toBe('wrong_index');
    expect(consumeResponse(idI, hsI, r)).toBeUndefined();
    expect(consumeResponse(idI, hsI, r)).toBe('unexpected');
  });
});

describe('peers in memory', () => {
  it('handshake on first packet, then data both ways', () => {
    const p = makePair();
    const now = p.clock.now();
    const first = p.a.send(now, icmpEcho(IP_A, IP_B, 1));
    expect(first).toHaveLength(1);
    expect(first[0].data[0]).toBe(1); // initiation
    const d = deliver(p, p.a, first);
    // initiation → response → the queued packet (confirms the session to B)
    expect(d.trace.map((t) => `${t.from}:${t.data[0]}`)).toEqual(['a:1', 'b:2', 'a:4']);
    expect(d.toB).toHaveLength(1);
    expect(toHex(d.toB[0])).toBe(toHex(icmpEcho(IP_A, IP_B, 1)));
    expect(p.a.counters.handshakesCompleted).toBe(1);
    expect(p.b.counters.handshakesCompleted).toBe(1);
    expect(p.b.endpoint).toEqual({ address: '192.0.2.1', port: 51820 });
    // B answers with its now confirmed keypair.
    const back = deliver(p, p.b, p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, 1, 1000)));
    expect(back.trace.map((t) => `${t.from}:${t.data[0]}`)).toEqual(['b:4']);
    expect(toHex(back.toA[0])).toBe(toHex(icmpEcho(IP_B, IP_A, 1, 1000)));
    // Padding: 1028-byte packet → 1040 bytes of ciphertext + 16 header + 16 tag.
    expect(back.trace[0].data.length).toBe(16 + 1040 + 16);
  });
});
