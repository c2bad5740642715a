import { describe, expect, it } from 'vitest';
import { pseudoHeaderSum, sum16 } from '../../src/wire/checksum.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import {
  emitTcpIpv4,
  emitTcpIpv4Head,
  TCP_ACK,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  TcpOptionValues,
  tcpOptionsLen,
  TcpPacket,
  TcpRepr,
} from '../../src/wire/tcp.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}
function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// Captured with `tcpdump -xx` on loopback in a private network namespace (lo carrying
// 10.0.0.1 and 10.0.0.2). Loopback offloads TCP checksums, so the captured field held the
// partial pseudo-header sum; it is replaced by the value tcpdump computed ("incorrect ->
// 0x63d4"), which an independent Python RFC 1071 sum confirms.
const A = 0x0a000002; // client 10.0.0.2
const B = 0x0a000001; // server 10.0.0.1

// SYN 47821 > 40000 seq 3783383170 win 65495 [mss 65495,sackOK,TS val 3496277170 ecr 0,nop,wscale 10]
const SYN_PKT = hex(
  '4500003cdde94000400648d00a0000020a000001' +
    'bacd 9c40 e181d882 00000000 a002 ffd7 63d4 0000' +
    '0204ffd7 0402080ad064f4b200000000 0103030a',
);
// [P.] seq 1:16 ack 1 win 64 [nop,nop,TS val 3496277170 ecr 2308722080] "hello tunroute\n"
const DATA_PKT = hex(
  '45000043ddeb4000400648c70a0000020a000001' +
    'bacd 9c40 e181d883 e7c85e5f 8018 0040 5a1e 0000' +
    '0101080ad064f4b2899c4da0' +
    '68656c6c6f2074756e726f7574650a',
);
const SYN = SYN_PKT.subarray(20);
const DATA = DATA_PKT.subarray(20);

const SYN_REPR: TcpRepr = {
  srcPort: 47821,
  dstPort: 40000,
  seq: 3783383170,
  ack: 0,
  flags: TCP_SYN,
  window: 65495,
  urgent: 0,
  options: { mss: 65495, sackPermitted: true, timestamp: [3496277170, 0], wscale: 10 },
  payload: new Uint8Array(0),
};

const DATA_REPR: TcpRepr = {
  srcPort: 47821,
  dstPort: 40000,
  seq: 3783383171,
  ack: 3888668255,
  flags: TCP_PSH | TCP_ACK,
  window: 64,
  urgent: 0,
  options: { timestamp: [3496277170, 2308722080] },
  payload: new TextEncoder().encode('hello tunroute\n'),
};

describe('TcpPacket: deconstruct captured segments', () => {
  const tcp = new TcpPacket();
  const opts = new TcpOptionValues();

  it('reads every field of the SYN', () => {
    expect(tcp.wrap(SYN, 0, SYN.length)).toBeUndefined();
    expect(tcp.length).toBe(40);
    expect(tcp.srcPort).toBe(47821);
    expect(tcp.dstPort).toBe(40000);
    expect(tcp.seq).toBe(3783383170);
    expect(tcp.ack).toBe(0);
    expect(tcp.headerLen).toBe(40);
    expect(tcp.flags).toBe(TCP_SYN);
    expect([tcp.syn, tcp.fin, tcp.rst, tcp.psh, tcp.hasAck, tcp.urg, tcp.ece, tcp.cwr]).toEqual([
      true, false, false, false, false, false, false, false,
    ]);
    expect(tcp.window).toBe(65495);
    expect(tcp.checksum).toBe(0x63d4);
    expect(tcp.urgent).toBe(0);
    expect(tcp.optionsOffset).toBe(20);
    expect(tcp.optionsLen).toBe(20);
    expect(tcp.payloadOffset).toBe(40);
    expect(tcp.payloadLen).toBe(0);
    expect(tcp.segmentLen).toBe(1);
    expect(tcp.verifyChecksum(A, B)).toBe(true);
    expect(tcp.verifyChecksum(A, 0x0a000003)).toBe(false);
    tcp.readOptions(opts);
    expect(opts.mss).toBe(65495);
    expect(opts.wscale).toBe(10);
    expect(opts.sackPermitted).toBe(true);
    expect(opts.sackCount).toBe(0);
    expect(opts.hasTimestamp).toBe(true);
    expect(opts.tsval).toBe(3496277170);
    expect(opts.tsecr).toBe(0);
  });

  it('reads the data segment, with its payload, through the IPv4 view', () => {
    const ip = new Ipv4Packet();
    expect(ip.wrap(DATA_PKT, 0, DATA_PKT.length)).toBeUndefined();
    expect(tcp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(tcp.seq).toBe(3783383171);
    expect(tcp.ack).toBe(3888668255);
    expect(tcp.flags).toBe(TCP_PSH | TCP_ACK);
    expect(tcp.hasAck && tcp.psh).toBe(true);
    expect(tcp.headerLen).toBe(32);
    expect(tcp.payloadOffset).toBe(52);
    expect(tcp.payloadLen).toBe(15);
    expect(tcp.segmentLen).toBe(15);
    expect(new TextDecoder().decode(tcp.payload())).toBe('hello tunroute\n');
    expect(tcp.verifyChecksum(ip.src, ip.dst)).toBe(true);
    tcp.readOptions(opts); // reused: the SYN's values must not leak into this one
    expect(opts.mss).toBe(-1);
    expect(opts.wscale).toBe(-1);
    expect(opts.sackPermitted).toBe(false);
    expect(opts.hasTimestamp).toBe(true);
    expect(opts.tsval).toBe(3496277170);
    expect(opts.tsecr).toBe(2308722080);
  });

  it('parses into Reprs', () => {
    tcp.wrap(SYN, 0, SYN.length);
    expect(TcpRepr.parse(tcp)).toEqual(SYN_REPR);
    tcp.wrap(DATA, 0, DATA.length);
    expect(TcpRepr.parse(tcp)).toEqual(DATA_REPR);
  });
});

describe('TcpRepr: construct', () => {
  it('emits the captured SYN byte for byte into a 0xa5-filled buffer', () => {
    const buf = new Uint8Array(48).fill(0xa5);
    expect(TcpRepr.bufferLen(SYN_REPR)).toBe(40);
    expect(TcpRepr.emit(SYN_REPR, buf, 3, A, B)).toBe(40);
    expect(toHex(buf.subarray(3, 43))).toBe(toHex(SYN));
    expect(buf[2]).toBe(0xa5);
    expect(buf[43]).toBe(0xa5);
  });

  it('emits the captured data segment', () => {
    const buf = new Uint8Array(47).fill(0xa5);
    expect(TcpRepr.emit(DATA_REPR, buf, 0, A, B)).toBe(47);
    expect(toHex(buf)).toBe(toHex(DATA));
  });

  it('emitTcpIpv4Head writes the same headers as a partial-checksum emitTcpIpv4, without the payload', () => {
    const whole = new Uint8Array(200).fill(0xee);
    const head = new Uint8Array(200).fill(0xee);
    const n = emitTcpIpv4(DATA_REPR, whole, 0, A, B, 64, 7, true);
    const h = emitTcpIpv4Head(DATA_REPR, DATA_REPR.payload!.length, head, 0, A, B, 64, 7);
    expect(h).toBe(n - DATA_REPR.payload!.length);
    expect(Buffer.from(head.subarray(0, h))).toEqual(Buffer.from(whole.subarray(0, h)));
    expect(head[h]).toBe(0xee); // the payload's place is left alone
  });

  it('emitTcpIpv4 writes the whole captured packet (IP header included)', () => {
    const buf = new Uint8Array(80).fill(0xa5);
    expect(emitTcpIpv4(DATA_REPR, buf, 1, A, B, 64, 0xddeb)).toBe(67);
    expect(toHex(buf.subarray(1, 68))).toBe(toHex(DATA_PKT));
    expect(buf[0]).toBe(0xa5);
    expect(buf[68]).toBe(0xa5);
    const buf2 = new Uint8Array(60).fill(0xa5);
    expect(emitTcpIpv4(SYN_REPR, buf2, 0, A, B, 64, 0xdde9)).toBe(60);
    expect(toHex(buf2)).toBe(toHex(SYN_PKT));
  });

  it('setters on a 0xa5 buffer give the captured header, checksum included', () => {
    const buf = new Uint8Array(40).fill(0xa5);
    buf.set(SYN.subarray(20), 20); // options
    buf[12] = 0xa0; // data offset 10
    buf[16] = 0;
    buf[17] = 0;
    const tcp = new TcpPacket();
    tcp.wrapUnchecked(buf, 0, 40);
    tcp.setSrcPort(47821);
    tcp.setDstPort(40000);
    tcp.setSeq(3783383170);
    tcp.setAck(0);
    tcp.setFlags(TCP_SYN);
    tcp.setWindow(65495);
    tcp.setUrgent(0);
    tcp.fillChecksum(A, B);
    expect(toHex(buf)).toBe(toHex(SYN));
  });

  it('writes every flag bit where RFC 9293 puts it', () => {
    const all = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG | TCP_ECE | TCP_CWR;
    expect(all).toBe(0xff);
    const buf = new Uint8Array(20).fill(0xa5);
    TcpRepr.emit({ ...DATA_REPR, flags: TCP_CWR | TCP_FIN, options: {}, payload: undefined }, buf, 0, A, B);
    expect(buf[12]).toBe(0x50); // data offset 5, reserved bits zero
    expect(buf[13]).toBe(0x81);
  });

  it('SACK blocks round-trip; those that do not fit in 40 bytes are left out', () => {
    const sack: Array<[number, number]> = [
      [1000, 2000], [3000, 4000], [0xfffffff0, 0x10], [5, 6],
    ];
    const noTs: TcpRepr = { ...DATA_REPR, options: { sack }, payload: undefined };
    expect(tcpOptionsLen(noTs.options)).toBe(4 + 32);
    const buf = new Uint8Array(80).fill(0xa5);
    const n = TcpRepr.emit(noTs, buf, 0, A, B);
    expect(n).toBe(56);
    const tcp = new TcpPacket();
    expect(tcp.wrap(buf, 0, n)).toBeUndefined();
    expect(tcp.verifyChecksum(A, B)).toBe(true);
    expect(TcpRepr.parse(tcp).options).toEqual({ sack });

    const withTs: TcpRepr = { ...noTs, options: { timestamp: [1, 2], sack } };
    expect(tcpOptionsLen(withTs.options)).toBe(40); // 12 + 4 + 3 × 8
    const m = TcpRepr.emit(withTs, buf.fill(0xa5), 0, A, B);
    expect(m).toBe(60);
    expect(tcp.wrap(buf, 0, m)).toBeUndefined();
    expect(TcpRepr.parse(tcp).options).toEqual({ timestamp: [1, 2], sack: sack.slice(0, 3) });
  });

  it('lays options out as Linux does', () => {
    const cases: Array<[TcpRepr['options'], string]> = [
      [{}, ''],
      [{ mss: 1460 }, '020405b4'],
      [{ sackPermitted: true }, '01010402'],
      [{ wscale: 7 }, '01030307'],
      [{ timestamp: [1, 2] }, '0101080a0000000100000002'],
      [{ mss: 1460, sackPermitted: true, timestamp: [1, 2], wscale: 7 }, '020405b40402080a000000010000000201030307'],
      [{ mss: 1460, sackPermitted: true, wscale: 7 }, '020405b40101040201030307'],
    ];
    const tcp = new TcpPacket();
    for (const [options, want] of cases) {
      const buf = new Uint8Array(60).fill(0xa5);
      const n = TcpRepr.emit({ ...DATA_REPR, options, payload: undefined }, buf, 0, A, B);
      expect(n).toBe(20 + want.length / 2);
      expect(toHex(buf.subarray(20, n))).toBe(want);
      expect(tcp.wrap(buf, 0, n)).toBeUndefined();
      expect(TcpRepr.parse(tcp).options).toEqual(options);
    }
  });
});

describe('TcpPacket: incremental setters', () => {
  it('every setter keeps the checksum equal to a full recompute', () => {
    const buf = DATA.slice();
    const tcp = new TcpPacket();
    expect(tcp.wrap(buf, 0, buf.length)).toBeUndefined();
    let x = 0x9e3779b9;
    for (let n = 0; n < 2000; n++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      switch (n % 7) {
        case 0: tcp.setSeq(n % 11 === 0 ? 0xffffffff : x); break;
        case 1: tcp.setAck(n % 13 === 0 ? 0 : x ^ 0x5a5a5a5a); break;
        case 2: tcp.setSrcPort(x & 0xffff); break;
        case 3: tcp.setDstPort(x >>> 16); break;
        case 4: tcp.setFlags(x & 0xff); break;
        case 5: tcp.setWindow(n % 3 === 0 ? 0xffff : x & 0xffff); break;
        default: tcp.setUrgent(x & 0x3); break;
      }
      const copy = buf.slice();
      copy[16] = 0;
      copy[17] = 0;
      expect(tcp.checksum).toBe(~sum16(copy, 0, copy.length, pseudoHeaderSum(A, B, 6, copy.length)) & 0xffff);
    }
    expect(tcp.verifyChecksum(A, B)).toBe(true);
  });

  it('adjustChecksumForAddress follows an address rewrite', () => {
    const buf = DATA.slice();
    const tcp = new TcpPacket();
    tcp.wrap(buf, 0, buf.length);
    tcp.adjustChecksumForAddress(A, 0xc0a80105);
    expect(tcp.verifyChecksum(0xc0a80105, B)).toBe(true);
    expect(tcp.verifyChecksum(A, B)).toBe(false);
  });
});

describe('TcpPacket: malformed input is reported, never thrown', () => {
  const tcp = new TcpPacket();

  /** A 20-byte header followed by the given option bytes (data offset set to cover them). */
  function withOptions(opts: string, offsetWords?: number): Uint8Array {
    const o = hex(opts);
    const b = new Uint8Array(20 + o.length);
    b.set(DATA.subarray(0, 20));
    b.set(o, 20);
    b[12] = (offsetWords ?? (20 + o.length) / 4) << 4;
    return b;
  }

  it('too_short', () => {
    expect(tcp.wrap(SYN, 0, 19)).toBe('too_short');
    expect(tcp.wrap(SYN.subarray(0, 19), 0, 40)).toBe('too_short');
    expect(tcp.wrap(SYN, 30, 40)).toBe('too_short');
  });

  it('bad_tcp_offset: below 5 words, or past the segment', () => {
    const b = SYN.slice();
    b[12] = 0x40;
    expect(tcp.wrap(b, 0, 40)).toBe('bad_tcp_offset');
    b[12] = 0x00;
    expect(tcp.wrap(b, 0, 40)).toBe('bad_tcp_offset');
    b[12] = 0xb0; // 44 bytes > 40
    expect(tcp.wrap(b, 0, 40)).toBe('bad_tcp_offset');
    expect(tcp.wrap(SYN, 0, 39)).toBe('bad_tcp_offset');
  });

  it.each([
    ['length 0', '02000000'],
    ['length 1', '08010000'],
    ['length runs past the header', '0204ffd7080a0000'],
    ['a kind with no length byte at the end', '01010102'],
    ['MSS with length 3', '02030501'],
    ['window scale with length 4', '03040a00'],
    ['SACK-permitted with length 4', '04040000'],
    ['SACK with a partial block', '050b' + '00'.repeat(9) + '00'],
    ['SACK with no block', '0502' + '0000'],
    ['timestamps with length 8', '0808' + '00'.repeat(6)],
  ])('bad_tcp_options: %s', (_name, opts) => {
    expect(tcp.wrap(withOptions(opts), 0, 20 + opts.length / 2)).toBe('bad_tcp_options');
  });

  it('skips unknown options by their length and stops at EOL', () => {
    // kind 30 (MPTCP) length 4, then MSS; EOL followed by garbage that would be malformed.
    const b = withOptions('1e04abcd020405b4' + '00ff0000');
    expect(tcp.wrap(b, 0, b.length)).toBeUndefined();
    const o = new TcpOptionValues();
    tcp.readOptions(o);
    expect(o.mss).toBe(1460);
    expect(TcpRepr.parse(tcp).options).toEqual({ mss: 1460 });
  });

  it('a failed wrap leaves an empty view', () => {
    expect(tcp.wrap(SYN, 0, 40)).toBeUndefined();
    expect(tcp.wrap(SYN, 0, 10)).toBe('too_short');
    expect(tcp.length).toBe(0);
  });

  it('a corrupted byte fails the checksum', () => {
    const b = DATA.slice();
    b[30] ^= 0x40;
    expect(tcp.wrap(b, 0, b.length)).toBeUndefined();
    expect(tcp.verifyChecksum(A, B)).toBe(false);
  });
});
