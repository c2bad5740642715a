import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  COOKIE_REPLY_LEN,
  CookieReplyMessage,
  INITIATION_LEN,
  InitiationMessage,
  messageType,
  RESPONSE_LEN,
  ResponseMessage,
  TRANSPORT_HEADER_LEN,
  TransportHeader,
} from '../../src/wireguard/messages.js';
import { hex, toHex } from './wg-harness.js';

const f = (byte: string, n: number): string => byte.repeat(n);

// Hand-built vectors: every field a different byte, integers little-endian.
const INITIATION = hex('01000000' + '04030201' + f('11', 32) + f('22', 48) + f('33', 28) + f('44', 16) + f('55', 16));
const RESPONSE = hex('02000000' + '04030201' + 'd4c3b2a1' + f('11', 32) + f('22', 16) + f('44', 16) + f('55', 16));
const COOKIE = hex('03000000' + 'efbeadde' + f('66', 24) + f('77', 32));
const TRANSPORT = hex('04000000' + '78563412' + '0807060504030201' + f('88', 32));

function filled(n: number): Uint8Array {
  return new Uint8Array(n).fill(0xa5);
}

describe('handshake initiation (type 1, 148 bytes)', () => {
  it('deconstruct', () => {
    expect(INITIATION.length).toBe(INITIATION_LEN);
    expect(messageType(INITIATION)).toBe(1);
    const r = InitiationMessage.parse(INITIATION)!;
    expect(r.sender).toBe(0x01020304);
    expect(toHex(r.ephemeral)).toBe(f('11', 32));
    expect(toHex(r.encryptedStatic)).toBe(f('22', 48));
    expect(toHex(r.encryptedTimestamp)).toBe(f('33', 28));
    expect(toHex(r.mac1)).toBe(f('44', 16));
    expect(toHex(r.mac2)).toBe(f('55', 16));
  });
  it('construct into a 0xa5-filled buffer', () => {
    const buf = filled(INITIATION_LEN + 4);
    const r = InitiationMessage.parse(INITIATION)!;
    expect(InitiationMessage.emit(r, buf, 2)).toBe(INITIATION_LEN);
    expect(toHex(buf.subarray(2, 2 + INITIATION_LEN))).toBe(toHex(INITIATION));
    expect([buf[0], buf[1], buf[INITIATION_LEN + 2], buf[INITIATION_LEN + 3]]).toEqual([0xa5, 0xa5, 0xa5, 0xa5]);
  });
  it('a real initiation from wireguard-go round-trips', () => {
    const fx = JSON.parse(readFileSync(fileURLToPath(new URL('../fixtures/wg/interop.json', import.meta.url)), 'utf8')) as {
      responder: { exchange: { hex: string }[] };
    };
    const real = hex(fx.responder.exchange[0].hex);
    const buf = filled(INITIATION_LEN);
    InitiationMessage.emit(InitiationMessage.parse(real)!, buf);
    expect(toHex(buf)).toBe(toHex(real));
  });
});

describe('handshake response (type 2, 92 bytes)', () => {
  it('deconstruct and construct', () => {
    expect(RESPONSE.length).toBe(RESPONSE_LEN);
    const r = ResponseMessage.parse(RESPONSE)!;
    expect([r.sender, r.receiver]).toEqual([0x01020304, 0xa1b2c3d4]);
    expect(toHex(r.ephemeral)).toBe(f('11', 32));
    expect(toHex(r.encryptedNothing)).toBe(f('22', 16));
    expect(toHex(r.mac1)).toBe(f('44', 16));
    expect(toHex(r.mac2)).toBe(f('55', 16));
    const buf = filled(RESPONSE_LEN);
    expect(ResponseMessage.emit(r, buf)).toBe(RESPONSE_LEN);
    expect(toHex(buf)).toBe(toHex(RESPONSE));
  });
});

describe('cookie reply (type 3, 64 bytes)', () => {
  it('deconstruct and construct', () => {
    const r = CookieReplyMessage.parse(COOKIE)!;
    expect(r.receiver).toBe(0xdeadbeef);
    expect(toHex(r.nonce)).toBe(f('66', 24));
    expect(toHex(r.encryptedCookie)).toBe(f('77', 32));
    const buf = filled(COOKIE_REPLY_LEN);
    CookieReplyMessage.emit(r, buf);
    expect(toHex(buf)).toBe(toHex(COOKIE));
  });
});

describe('transport data (type 4, 16-byte header)', () => {
  it('deconstruct and construct; the counter is a full 64-bit little-endian integer', () => {
    const r = TransportHeader.parse(TRANSPORT)!;
    expect(r.receiver).toBe(0x12345678);
    expect(r.counter).toBe(0x0102030405060708n);
    const buf = filled(TRANSPORT_HEADER_LEN + 1);
    expect(TransportHeader.emit(r, buf)).toBe(TRANSPORT_HEADER_LEN);
    expect(toHex(buf.subarray(0, 16))).toBe(toHex(TRANSPORT.subarray(0, 16)));
    expect(buf[16]).toBe(0xa5);
    const big = filled(16);
    TransportHeader.emit({ receiver: 0xffffffff, counter: (1n << 64n) - 1n }, big);
    expect(toHex(big)).toBe('04000000' + 'ffffffff' + 'ff'.repeat(8));
    expect(TransportHeader.parse(new Uint8Array([...big, ...new Uint8Array(16)]))!.counter).toBe((1n << 64n) - 1n);
  });
  it('a keepalive is header + tag', () => {
    expect(messageType(TRANSPORT.subarray(0, 32))).toBe(4);
    expect(messageType(TRANSPORT.subarray(0, 31))).toBe('truncated');
  });
});

describe('malformed datagrams are classified, never thrown', () => {
  it.each([
    ['empty', new Uint8Array(0), 'truncated'],
    ['3 bytes', Uint8Array.of(1, 0, 0), 'truncated'],
    ['initiation cut short', INITIATION.subarray(0, 147), 'truncated'],
    ['initiation with a byte extra', Uint8Array.of(...INITIATION, 0), 'bad_length'],
    ['response cut short', RESPONSE.subarray(0, 60), 'truncated'],
    ['response too long', Uint8Array.of(...RESPONSE, 0), 'bad_length'],
    ['cookie reply too long', Uint8Array.of(...COOKIE, 0), 'bad_length'],
    ['non-zero reserved byte', Uint8Array.of(1, 0, 1, 0, ...INITIATION.subarray(4)), 'unknown_type'],
    ['type 0', Uint8Array.of(0, 0, 0, 0, ...new Uint8Array(40)), 'unknown_type'],
    ['type 5', Uint8Array.of(5, 0, 0, 0, ...new Uint8Array(40)), 'unknown_type'],
    ['an IPv4 packet', hex('4500001c000040004011000000000000'), 'unknown_type'],
  ])('%s', (_name, buf, want) => {
    expect(messageType(buf)).toBe(want);
    expect(InitiationMessage.parse(buf)).toBeUndefined();
    expect(ResponseMessage.parse(buf)).toBeUndefined();
    expect(CookieReplyMessage.parse(buf)).toBeUndefined();
    expect(TransportHeader.parse(buf)).toBeUndefined();
  });
  it('emit refuses fields of the wrong size (a programming error)', () => {
    const r = InitiationMessage.parse(INITIATION)!;
    expect(() => InitiationMessage.emit({ ...r, ephemeral: new Uint8Array(31) }, new Uint8Array(148))).toThrow(/ephemeral must be 32 bytes/);
  });
});
