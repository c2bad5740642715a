import { describe, expect, it } from 'vitest';
import { internetChecksum } from '../../src/wire/checksum.js';
import {
  echoReplyInPlace,
  emitIcmpErrorIpv4,
  emitIcmpUnreachableIpv4,
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
  ICMP_TIME_EXCEEDED_TTL,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_FRAG_NEEDED,
  ICMP_UNREACH_PORT,
  IcmpPacket,
  IcmpRepr,
} from '../../src/wire/icmp.js';
import { IP_PROTO_UDP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { UdpPacket } from '../../src/wire/udp.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}
function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// Captured with `tcpdump -xx` on loopback in a private network namespace (lo carrying
// 10.0.0.1 and 10.0.0.2); ICMP checksums are computed in software, so they are as captured.
const A = 0x0a000002;
const B = 0x0a000001;
// `ping -c1 -s20 -p a1b2c3 -I 10.0.0.2 10.0.0.1`: request and the kernel's reply.
const ECHO_REQ = hex(
  '45000030ae464000400178840a0000020a000001' +
    '08 00 72ae 1daa 0001 4130026b00000000c694090000000000b2c3a1b2',
);
const ECHO_REP = hex(
  '450000306cdc00004001f9ee0a0000010a000002' +
    '00 00 7aae 1daa 0001 4130026b00000000c694090000000000b2c3a1b2',
);
// A UDP datagram to a closed port and the kernel's port-unreachable answer (Linux quotes the
// whole original; its UDP checksum was left partial by loopback offload).
const UDP_CLOSED_RAW = hex(
  '450000276edc40004011b7e70a0000020a000001' + '14e99c49 0013 1427 6e6f626f647920686f6d65',
);
const LINUX_UNREACH = hex(
  '45c000436cd900004001f91e0a0000010a000002' +
    '03 03 0d62 00000000' +
    '450000276edc40004011b7e70a0000020a00000114e99c49001314276e6f626f647920686f6d65',
);
// The same datagram with its checksum completed (tcpdump: "0x1427 -> 0x1065").
const UDP_CLOSED = hex(
  '450000276edc40004011b7e70a0000020a000001' + '14e99c49 0013 1065 6e6f626f647920686f6d65',
);
// TCP SYN and the data segment of the TCP capture (checksums completed the same way), and
// `ping -R` (IHL 15).
const SYN = hex(
  '4500003cdde94000400648d00a0000020a000001bacd9c40e181d88200000000a002ffd763d400000204ffd7' +
    '0402080ad064f4b2000000000103030a',
);
const DATA = hex(
  '45000043ddeb4000400648c70a0000020a000001bacd9c40e181d883e7c85e5f801800405a1e00000101080a' +
    'd064f4b2899c4da068656c6c6f2074756e726f7574650a',
);
const ECHO_RR = hex(
  '4f00004cae47400040013c560a0000020a000001' +
    '010727080a000002' + '00'.repeat(32) +
    '0800ce431dab00010001020304050607',
);

// What we send, computed independently (Python, RFC 1071): IP header tos 0, id 0, DF, ttl 64;
// ICMP quoting the original header + 8 bytes.
const OURS_PORT_UNREACH = hex(
  '4500003800004000400126c30a0000010a000002' +
    '0303 3b52 00000000' +
    '450000276edc40004011b7e70a0000020a00000114e99c4900131065',
);
const OURS_ADMIN_PROHIBITED = hex(
  '4500003800004000400126c30a0000010a000002' +
    '030d ebdf 00000000' +
    '4500003cdde94000400648d00a0000020a000001bacd9c40e181d882',
);
const OURS_FRAG_NEEDED = hex(
  '4500003800004000400126c30a0000010a000002' +
    '0304 e66f 0000 0578' +
    '45000043ddeb4000400648c70a0000020a000001bacd9c40e181d883',
);
const OURS_TIME_EXCEEDED_RR = hex(
  '450000600000400040016ef2c0a801010a000002' +
    '0b00 0110 00000000' +
    '4f00004cae47400040013c560a0000020a000001' +
    '010727080a000002' + '00'.repeat(32) +
    '0800ce431dab0001',
);

describe('test vectors', () => {
  it('are whole IPv4 packets with intact checksums', () => {
    const ip = new Ipv4Packet();
    const icmp = new IcmpPacket();
    const udp = new UdpPacket();
    const all = {
      ECHO_REQ, ECHO_REP, LINUX_UNREACH, UDP_CLOSED, SYN, DATA, ECHO_RR,
      OURS_PORT_UNREACH, OURS_ADMIN_PROHIBITED, OURS_FRAG_NEEDED, OURS_TIME_EXCEEDED_RR,
    };
    for (const [name, v] of Object.entries(all)) {
      expect([name, ip.wrap(v, 0, v.length)]).toEqual([name, undefined]);
      expect([name, ip.length]).toEqual([name, v.length]);
      if (ip.protocol === 1) expect([name, icmp.wrap(v, ip.payloadOffset, ip.payloadLen)]).toEqual([name, undefined]);
      if (ip.protocol === 17) {
        udp.wrap(v, ip.payloadOffset, ip.payloadLen);
        expect([name, udp.verifyChecksum(ip.src, ip.dst)]).toEqual([name, true]);
      }
    }
  });
});

describe('IcmpPacket: echo', () => {
  const ip = new Ipv4Packet();
  const icmp = new IcmpPacket();

  it('reads every field of the captured request', () => {
    expect(ip.wrap(ECHO_REQ, 0, ECHO_REQ.length)).toBeUndefined();
    expect(icmp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(icmp.offset).toBe(20);
    expect(icmp.length).toBe(28);
    expect(icmp.type).toBe(ICMP_ECHO_REQUEST);
    expect(icmp.code).toBe(0);
    expect(icmp.checksum).toBe(0x72ae);
    expect(icmp.ident).toBe(0x1daa);
    expect(icmp.seq).toBe(1);
    expect(icmp.isError).toBe(false);
    expect(icmp.dataOffset).toBe(28);
    expect(icmp.dataLen).toBe(20);
    expect(toHex(icmp.data())).toBe('4130026b00000000c694090000000000b2c3a1b2');
    expect(icmp.verifyChecksum()).toBe(true);
    expect(IcmpRepr.parse(icmp)).toEqual({
      type: ICMP_ECHO_REQUEST,
      ident: 0x1daa,
      seq: 1,
      data: hex('4130026b00000000c694090000000000b2c3a1b2'),
    });
  });

  it('emits the captured reply from its Repr into a 0xa5-filled buffer', () => {
    const repr: IcmpRepr = {
      type: ICMP_ECHO_REPLY,
      ident: 0x1daa,
      seq: 1,
      data: hex('4130026b00000000c694090000000000b2c3a1b2'),
    };
    const buf = new Uint8Array(32).fill(0xa5);
    expect(IcmpRepr.bufferLen(repr)).toBe(28);
    expect(IcmpRepr.emit(repr, buf, 2)).toBe(28);
    expect(toHex(buf.subarray(2, 30))).toBe(toHex(ECHO_REP.subarray(20)));
    expect(buf[1]).toBe(0xa5);
    expect(buf[30]).toBe(0xa5);
  });

  it('echoReplyInPlace turns the request into the kernel\'s reply (ICMP part byte for byte)', () => {
    const b = ECHO_REQ.slice();
    expect(ip.wrap(b, 0, b.length)).toBeUndefined();
    expect(icmp.wrap(b, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    echoReplyInPlace(ip, icmp);
    expect(toHex(b.subarray(20))).toBe(toHex(ECHO_REP.subarray(20)));
    expect(ip.src).toBe(B);
    expect(ip.dst).toBe(A);
    expect(ip.verifyChecksum()).toBe(true);
    expect(icmp.verifyChecksum()).toBe(true);
    // The kernel's reply differs only in IP id and DF; with those copied, all bytes match.
    ip.setIdent(0x6cdc);
    ip.setDontFrag(false);
    expect(toHex(b)).toBe(toHex(ECHO_REP));
  });

  it('setters keep the checksum valid', () => {
    const b = ECHO_REQ.slice(20);
    expect(icmp.wrap(b, 0, b.length)).toBeUndefined();
    for (let n = 0; n < 500; n++) {
      icmp.setIdent((n * 7919) & 0xffff);
      icmp.setSeq(n % 3 === 0 ? 0xffff : n);
      icmp.setCode(n & 1);
      icmp.setType(n & 2 ? 0 : 8);
      const c = b.slice();
      c[2] = 0;
      c[3] = 0;
      expect(icmp.checksum).toBe(internetChecksum(c, 0, c.length));
    }
  });

  it('an odd-length message checksums with zero padding', () => {
    const repr: IcmpRepr = { type: ICMP_ECHO_REQUEST, ident: 1, seq: 2, data: hex('010203') };
    const buf = new Uint8Array(11).fill(0xa5);
    expect(IcmpRepr.emit(repr, buf, 0)).toBe(11);
    expect(icmp.wrap(buf, 0, 11)).toBeUndefined();
  });
});

describe('IcmpPacket: errors', () => {
  const icmp = new IcmpPacket();
  const ip = new Ipv4Packet();

  it('reads the kernel\'s port unreachable and the datagram it quotes', () => {
    expect(ip.wrap(LINUX_UNREACH, 0, LINUX_UNREACH.length)).toBeUndefined();
    expect(ip.tos).toBe(0xc0);
    expect(icmp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(icmp.type).toBe(ICMP_DEST_UNREACHABLE);
    expect(icmp.code).toBe(ICMP_UNREACH_PORT);
    expect(icmp.isError).toBe(true);
    expect(icmp.nextHopMtu).toBe(0);
    expect(icmp.dataLen).toBe(39);
    const repr = IcmpRepr.parse(icmp);
    expect(repr).toEqual({ type: ICMP_DEST_UNREACHABLE, code: ICMP_UNREACH_PORT, quoted: UDP_CLOSED_RAW });
    // Match the quote to a flow: the quoted IP header and UDP ports.
    const q = new Ipv4Packet();
    expect(q.wrapTruncated(icmp.buffer, icmp.dataOffset, icmp.dataLen)).toBeUndefined();
    expect(q.protocol).toBe(IP_PROTO_UDP);
    expect(q.src).toBe(A);
    expect(q.dst).toBe(B);
    const u = new UdpPacket();
    expect(u.wrap(q.buffer, q.payloadOffset, q.payloadLen)).toBeUndefined();
    expect(u.srcPort).toBe(5353);
    expect(u.dstPort).toBe(40009);
  });

  it('emitIcmpUnreachableIpv4 quotes header + 8 bytes (port unreachable)', () => {
    const buf = new Uint8Array(64).fill(0xa5);
    expect(emitIcmpUnreachableIpv4(UDP_CLOSED, ICMP_UNREACH_PORT, B, buf, 4)).toBe(56);
    expect(toHex(buf.subarray(4, 60))).toBe(toHex(OURS_PORT_UNREACH));
    expect(buf[3]).toBe(0xa5);
    expect(buf[60]).toBe(0xa5);
    expect(ip.wrap(buf, 4, 56)).toBeUndefined();
    expect(icmp.wrap(buf, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(IcmpRepr.parse(icmp)).toEqual({
      type: ICMP_DEST_UNREACHABLE,
      code: ICMP_UNREACH_PORT,
      quoted: UDP_CLOSED.subarray(0, 28),
    });
  });

  it('administratively prohibited, for a blocked TCP SYN', () => {
    const buf = new Uint8Array(56).fill(0xa5);
    expect(emitIcmpUnreachableIpv4(SYN, ICMP_UNREACH_ADMIN_PROHIBITED, B, buf, 0)).toBe(56);
    expect(toHex(buf)).toBe(toHex(OURS_ADMIN_PROHIBITED));
  });

  it('fragmentation needed carries the next-hop MTU (RFC 1191)', () => {
    const buf = new Uint8Array(56).fill(0xa5);
    expect(emitIcmpUnreachableIpv4(DATA, ICMP_UNREACH_FRAG_NEEDED, B, buf, 0, 1400)).toBe(56);
    expect(toHex(buf)).toBe(toHex(OURS_FRAG_NEEDED));
    expect(icmp.wrap(buf, 20, 36)).toBeUndefined();
    expect(icmp.nextHopMtu).toBe(1400);
    expect(IcmpRepr.parse(icmp)).toEqual({
      type: ICMP_DEST_UNREACHABLE,
      code: ICMP_UNREACH_FRAG_NEEDED,
      nextHopMtu: 1400,
      quoted: DATA.subarray(0, 28),
    });
  });

  it('time exceeded quotes a header with options whole (60 + 8 bytes)', () => {
    const buf = new Uint8Array(96).fill(0xa5);
    const n = emitIcmpErrorIpv4(ECHO_RR, ICMP_TIME_EXCEEDED, ICMP_TIME_EXCEEDED_TTL, 0xc0a80101, buf, 0);
    expect(n).toBe(96);
    expect(toHex(buf)).toBe(toHex(OURS_TIME_EXCEEDED_RR));
  });

  it('quotes fewer than 8 bytes when the original carries less', () => {
    const orig = hex('450000180001000040110000 0a000002 0a000001 0035 0035'.replace(/ /g, ''));
    const p = new Ipv4Packet();
    p.wrapUnchecked(orig, 0, 24);
    p.fillChecksum();
    const buf = new Uint8Array(64).fill(0xa5);
    expect(emitIcmpUnreachableIpv4(orig, ICMP_UNREACH_PORT, B, buf, 0)).toBe(20 + 8 + 24);
    expect(buf[52]).toBe(0xa5);
  });

  it('never answers what RFC 1122 / RFC 1812 §4.3.2.7 forbid', () => {
    const buf = new Uint8Array(128).fill(0xa5);
    const withField = (base: Uint8Array, f: (b: Uint8Array) => void): Uint8Array => {
      const b = base.slice();
      f(b);
      return b;
    };
    const setSrc = (a: number) => (b: Uint8Array) => { b[12] = a >>> 24; b[13] = a >>> 16; b[14] = a >>> 8; b[15] = a; };
    const setDst = (a: number) => (b: Uint8Array) => { b[16] = a >>> 24; b[17] = a >>> 16; b[18] = a >>> 8; b[19] = a; };
    // an ICMP error
    expect(emitIcmpUnreachableIpv4(LINUX_UNREACH, 1, B, buf, 0)).toBe(0);
    // a non-initial fragment
    expect(emitIcmpUnreachableIpv4(withField(UDP_CLOSED, (b) => { b[7] = 1; }), 3, B, buf, 0)).toBe(0);
    // sources that do not name one host
    for (const s of [0, 0x00000001, 0x7f000001, 0xe0000001, 0xf0000001, 0xffffffff]) {
      expect(emitIcmpUnreachableIpv4(withField(UDP_CLOSED, setSrc(s)), 3, B, buf, 0)).toBe(0);
    }
    // multicast and broadcast destinations
    for (const d of [0xe00000fb, 0xffffffff]) {
      expect(emitIcmpUnreachableIpv4(withField(UDP_CLOSED, setDst(d)), 3, B, buf, 0)).toBe(0);
    }
    // not an IPv4 header
    expect(emitIcmpUnreachableIpv4(UDP_CLOSED.subarray(0, 19), 3, B, buf, 0)).toBe(0);
    expect(emitIcmpUnreachableIpv4(withField(UDP_CLOSED, (b) => { b[0] = 0x60; }), 3, B, buf, 0)).toBe(0);
    // an ICMP message too short to show its type
    const icmp0 = hex('4500001400010000400100000a0000020a000001');
    expect(emitIcmpUnreachableIpv4(icmp0, 3, B, buf, 0)).toBe(0);
    expect(buf.every((x) => x === 0xa5)).toBe(true);
    // an echo request is a query: an error about it is fine
    expect(emitIcmpUnreachableIpv4(ECHO_REQ, 1, B, buf, 0)).toBe(56);
    // the first fragment (MF, offset 0) may be answered
    expect(emitIcmpUnreachableIpv4(withField(UDP_CLOSED, (b) => { b[6] |= 0x20; }), 3, B, buf, 0)).toBe(56);
  });
});

describe('IcmpPacket: malformed input is reported, never thrown', () => {
  const icmp = new IcmpPacket();

  it('too_short', () => {
    expect(icmp.wrap(ECHO_REQ, 20, 7)).toBe('too_short');
    expect(icmp.wrap(ECHO_REQ, 44, 8)).toBe('too_short');
    expect(icmp.wrap(ECHO_REQ, -3, 8)).toBe('too_short');
  });

  it('bad_icmp_checksum, unless checking is turned off', () => {
    const b = ECHO_REQ.slice(20);
    b[27] ^= 0x10;
    expect(icmp.wrap(b, 0, b.length)).toBe('bad_icmp_checksum');
    expect(icmp.wrap(b, 0, b.length, false)).toBeUndefined();
    expect(icmp.verifyChecksum()).toBe(false);
    icmp.fillChecksum();
    expect(icmp.wrap(b, 0, b.length)).toBeUndefined();
    // truncating a valid message breaks its checksum too
    expect(icmp.wrap(ECHO_REQ, 20, 27)).toBe('bad_icmp_checksum');
  });

  it('types it does not model parse to undefined (the caller counts unsupported_icmp)', () => {
    const b = new Uint8Array(8);
    for (const [type, code] of [[13, 0], [5, 1], [8, 1], [12, 0]]) {
      b.fill(0);
      b[0] = type;
      b[1] = code;
      const c = internetChecksum(b, 0, 8);
      b[2] = c >>> 8;
      b[3] = c & 0xff;
      expect(icmp.wrap(b, 0, 8)).toBeUndefined();
      expect(IcmpRepr.parse(icmp)).toBeUndefined();
    }
  });
});
