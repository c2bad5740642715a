import { describe, expect, it } from 'vitest';
import { pseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { emitUdpIpv4, UdpPacket, UdpRepr } from '../../src/wire/udp.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}
function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// Captured with `tcpdump -xx` on loopback in a private network namespace: 10.0.0.2:5353 >
// 10.0.0.1:40001 "udp payload!", IP id 28379, DF. Loopback offloads the UDP checksum; the
// field holds tcpdump's computed value ("bad udp cksum 0x1428 -> 0x97c3"), confirmed by an
// independent Python RFC 1071 sum.
const A = 0x0a000002;
const B = 0x0a000001;
const PKT = hex(
  '450000286edb40004011b7e70a0000020a000001' +
    '14e9 9c41 0014 97c3' +
    '756470207061796c6f616421',
);
const UDP = PKT.subarray(20);
const REPR: UdpRepr = { srcPort: 5353, dstPort: 40001, payload: new TextEncoder().encode('udp payload!') };

describe('UdpPacket: deconstruct', () => {
  const udp = new UdpPacket();

  it('reads every field of the captured datagram', () => {
    const ip = new Ipv4Packet();
    expect(ip.wrap(PKT, 0, PKT.length)).toBeUndefined();
    expect(udp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(udp.offset).toBe(20);
    expect(udp.length).toBe(20);
    expect(udp.srcPort).toBe(5353);
    expect(udp.dstPort).toBe(40001);
    expect(udp.lengthField).toBe(20);
    expect(udp.checksum).toBe(0x97c3);
    expect(udp.payloadOffset).toBe(28);
    expect(udp.payloadLen).toBe(12);
    expect(new TextDecoder().decode(udp.payload())).toBe('udp payload!');
    expect(udp.verifyChecksum(A, B)).toBe(true);
    expect(udp.verifyChecksum(A, 0x0a000003)).toBe(false);
    expect(UdpRepr.parse(udp)).toEqual(REPR);
  });

  it('a Length shorter than the bytes present trims the view', () => {
    const b = new Uint8Array(30);
    b.set(UDP);
    expect(udp.wrap(b, 0, 30)).toBeUndefined();
    expect(udp.length).toBe(20);
    expect(udp.payloadLen).toBe(12);
    expect(udp.verifyChecksum(A, B)).toBe(true);
  });
});

describe('UdpRepr: construct', () => {
  it('emits the captured datagram into a 0xa5-filled buffer', () => {
    const buf = new Uint8Array(24).fill(0xa5);
    expect(UdpRepr.bufferLen(REPR)).toBe(20);
    expect(UdpRepr.emit(REPR, buf, 1, A, B)).toBe(20);
    expect(toHex(buf.subarray(1, 21))).toBe(toHex(UDP));
    expect(buf[0]).toBe(0xa5);
    expect(buf[21]).toBe(0xa5);
  });

  it('emitUdpIpv4 writes the whole captured packet', () => {
    const buf = new Uint8Array(44).fill(0xa5);
    expect(emitUdpIpv4(REPR, buf, 2, A, B, 64, 28379)).toBe(40);
    expect(toHex(buf.subarray(2, 42))).toBe(toHex(PKT));
    expect(buf[1]).toBe(0xa5);
    expect(buf[42]).toBe(0xa5);
  });

  it('sends a computed checksum of 0 as 0xffff, which verifies', () => {
    // Choose two payload bytes that make the data sum to 0xffff: the checksum computes to 0.
    const probe = new Uint8Array(10);
    const base: UdpRepr = { srcPort: 1000, dstPort: 2000, payload: new Uint8Array(2) };
    UdpRepr.emit(base, probe, 0, A, B);
    const w = (probe[6] << 8) | probe[7]; // checksum of the zero payload
    const zero: UdpRepr = { ...base, payload: Uint8Array.of(w >>> 8, w & 0xff) };
    const buf = new Uint8Array(10).fill(0xa5);
    UdpRepr.emit(zero, buf, 0, A, B);
    expect((buf[6] << 8) | buf[7]).toBe(0xffff);
    const udp = new UdpPacket();
    expect(udp.wrap(buf, 0, 10)).toBeUndefined();
    expect(udp.verifyChecksum(A, B)).toBe(true);
    udp.fillChecksum(A, B);
    expect(udp.checksum).toBe(0xffff);
  });

  it('an empty payload', () => {
    const buf = new Uint8Array(8).fill(0xa5);
    expect(UdpRepr.emit({ srcPort: 53, dstPort: 53, payload: new Uint8Array(0) }, buf, 0, A, B)).toBe(8);
    const udp = new UdpPacket();
    expect(udp.wrap(buf, 0, 8)).toBeUndefined();
    expect(udp.payloadLen).toBe(0);
    expect(udp.verifyChecksum(A, B)).toBe(true);
  });
});

describe('UdpPacket: checksum rules', () => {
  const udp = new UdpPacket();

  it('0 means "no checksum" over IPv4 and is accepted', () => {
    const b = UDP.slice();
    b[6] = 0;
    b[7] = 0;
    expect(udp.wrap(b, 0, b.length)).toBeUndefined();
    expect(udp.verifyChecksum(A, B)).toBe(true);
  });

  it('a corrupted payload fails the checksum', () => {
    const b = UDP.slice();
    b[12] ^= 1;
    expect(udp.wrap(b, 0, b.length)).toBeUndefined();
    expect(udp.verifyChecksum(A, B)).toBe(false);
  });

  it('setters keep a present checksum exact and leave an absent one absent', () => {
    const b = UDP.slice();
    udp.wrap(b, 0, b.length);
    let x = 7;
    for (let n = 0; n < 1000; n++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      if (n & 1) udp.setSrcPort(n % 9 === 0 ? 0 : x & 0xffff);
      else udp.setDstPort(n % 7 === 0 ? 0xffff : x >>> 16);
      const c = b.slice();
      c[6] = 0;
      c[7] = 0;
      const full = ~sum16(c, 0, 20, pseudoHeaderSum(A, B, 17, 20)) & 0xffff;
      expect(udp.checksum).toBe(full === 0 ? 0xffff : full);
    }
    udp.adjustChecksumForAddress(B, 0x08080808);
    expect(udp.verifyChecksum(A, 0x08080808)).toBe(true);

    const z = UDP.slice();
    z[6] = 0;
    z[7] = 0;
    udp.wrap(z, 0, z.length);
    udp.setSrcPort(1);
    udp.adjustChecksumForAddress(A, B);
    expect(udp.checksum).toBe(0);
  });
});

describe('UdpPacket: malformed input is reported, never thrown', () => {
  const udp = new UdpPacket();

  it('too_short', () => {
    expect(udp.wrap(UDP, 0, 7)).toBe('too_short');
    expect(udp.wrap(UDP.subarray(0, 7), 0, 20)).toBe('too_short');
    expect(udp.wrap(UDP, 13, 20)).toBe('too_short');
  });

  it('bad_udp_length: the Length field lies', () => {
    const b = UDP.slice();
    b[4] = 0;
    b[5] = 7; // below the header
    expect(udp.wrap(b, 0, 20)).toBe('bad_udp_length');
    b[5] = 0;
    expect(udp.wrap(b, 0, 20)).toBe('bad_udp_length');
    b[5] = 21; // one more than present
    expect(udp.wrap(b, 0, 20)).toBe('bad_udp_length');
    b[4] = 0xff;
    b[5] = 0xff;
    expect(udp.wrap(b, 0, 20)).toBe('bad_udp_length');
    expect(udp.wrap(UDP, 0, 19)).toBe('bad_udp_length'); // IP says fewer bytes than UDP claims
  });

  it('a failed wrap leaves an empty view', () => {
    expect(udp.wrap(UDP, 0, 20)).toBeUndefined();
    expect(udp.wrap(UDP, 0, 3)).toBe('too_short');
    expect(udp.length).toBe(0);
  });
});
