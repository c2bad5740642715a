import { describe, expect, it } from 'vitest';
import { internetChecksum, sum16 } from '../../src/wire/checksum.js';
import { IP_PROTO_ICMP, IP_PROTO_TCP, Ipv4Packet, Ipv4Repr } from '../../src/wire/ipv4.js';
import { cidrContains, cidrToString, ipToU32, normalizeCidr, parseCidr, prefixMask, u32ToIp } from '../../src/net/ipv4.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}
function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// Captured with `tcpdump -xx` on loopback in a private network namespace (lo carrying
// 10.0.0.1 and 10.0.0.2). The TCP checksum is tcpdump's computed value (lo offloads it);
// every IP header checksum is as captured.
//   SYN 10.0.0.2:47821 > 10.0.0.1:40000, id 56809, DF, ttl 64, length 60
const SYN = hex(
  '4500003c dde9 4000 4006 48d0 0a000002 0a000001' +
    'bacd9c40e181d88200000000a002ffd763d400000204ffd70402080ad064f4b2000000000103030a',
);
//   `ping -R`: echo request with a record-route option, IHL 15, length 76
const ECHO_RR = hex(
  '4f00004cae47400040013c560a0000020a000001' +
    '010727080a000002' + '00'.repeat(32) +
    '0800ce431dab00010001020304050607',
);

describe('Ipv4Packet: deconstruct a captured SYN', () => {
  const ip = new Ipv4Packet();

  it('wraps and reads every field', () => {
    expect(ip.wrap(SYN, 0, SYN.length)).toBeUndefined();
    expect(ip.buffer).toBe(SYN);
    expect(ip.offset).toBe(0);
    expect(ip.length).toBe(60);
    expect(ip.version).toBe(4);
    expect(ip.headerLen).toBe(20);
    expect(ip.tos).toBe(0);
    expect(ip.dscp).toBe(0);
    expect(ip.ecn).toBe(0);
    expect(ip.totalLen).toBe(60);
    expect(ip.ident).toBe(56809);
    expect(ip.flags).toBe(0b010);
    expect(ip.dontFrag).toBe(true);
    expect(ip.moreFrags).toBe(false);
    expect(ip.fragOffset).toBe(0);
    expect(ip.isFragment).toBe(false);
    expect(ip.ttl).toBe(64);
    expect(ip.protocol).toBe(IP_PROTO_TCP);
    expect(ip.checksum).toBe(0x48d0);
    expect(ip.src).toBe(0x0a000002);
    expect(ip.dst).toBe(0x0a000001);
    expect(u32ToIp(ip.src)).toBe('10.0.0.2');
    expect(ip.payloadOffset).toBe(20);
    expect(ip.payloadLen).toBe(40);
    expect(ip.optionsOffset).toBe(20);
    expect(ip.optionsLen).toBe(0);
    expect(toHex(ip.payload())).toBe(toHex(SYN.subarray(20)));
    expect(ip.verifyChecksum()).toBe(true);
  });

  it('reads a header with options (IHL 15, record route)', () => {
    expect(ECHO_RR.length).toBe(76);
    expect(ip.wrap(ECHO_RR, 0, ECHO_RR.length)).toBeUndefined();
    expect(ip.headerLen).toBe(60);
    expect(ECHO_RR[ip.payloadOffset]).toBe(8); // echo request
    expect(sum16(ECHO_RR, 60, 16)).toBe(0xffff); // the ICMP message is intact
    expect(ip.optionsLen).toBe(40);
    expect(ECHO_RR[ip.optionsOffset + 1]).toBe(7); // RR option kind after a NOP
    expect(ip.protocol).toBe(IP_PROTO_ICMP);
    expect(ip.payloadOffset).toBe(60);
    expect(ip.payloadLen).toBe(16);
    expect(ip.ident).toBe(0xae47);
  });

  it('reads a packet at an odd offset inside a larger buffer', () => {
    const big = new Uint8Array(200).fill(0xa5);
    big.set(SYN, 33);
    expect(ip.wrap(big, 33, 167)).toBeUndefined();
    expect(ip.length).toBe(60); // trimmed to Total Length
    expect(ip.payloadOffset).toBe(53);
    expect(ip.src).toBe(0x0a000002);
    expect(ip.verifyChecksum()).toBe(true);
  });

  it('parses into a Repr', () => {
    ip.wrap(SYN, 0, SYN.length);
    expect(Ipv4Repr.parse(ip)).toEqual({
      src: 0x0a000002,
      dst: 0x0a000001,
      protocol: 6,
      payloadLen: 40,
      ttl: 64,
      tos: 0,
      ident: 56809,
      dontFrag: true,
    });
  });
});

describe('Ipv4Packet: construct', () => {
  it('Repr.emit writes the captured header byte for byte into a 0xa5-filled buffer', () => {
    const buf = new Uint8Array(24).fill(0xa5);
    const repr: Ipv4Repr = {
      src: ipToU32('10.0.0.2')!,
      dst: ipToU32('10.0.0.1')!,
      protocol: IP_PROTO_TCP,
      payloadLen: 40,
      ttl: 64,
      ident: 56809,
      dontFrag: true,
    };
    expect(Ipv4Repr.bufferLen(repr)).toBe(20);
    expect(Ipv4Repr.emit(repr, buf, 2)).toBe(20);
    expect(toHex(buf.subarray(2, 22))).toBe(toHex(SYN.subarray(0, 20)));
    expect(buf[0]).toBe(0xa5);
    expect(buf[1]).toBe(0xa5);
    expect(buf[22]).toBe(0xa5);
  });

  it('setters on a 0xa5 buffer plus fillChecksum give the captured header', () => {
    const buf = new Uint8Array(60).fill(0xa5);
    buf[0] = 0x45;
    buf.set(SYN.subarray(20), 20);
    const ip = new Ipv4Packet();
    ip.wrapUnchecked(buf, 0, 60);
    ip.setTos(0);
    ip.setTotalLen(60);
    ip.setIdent(56809);
    buf[6] = 0; // flags/offset word: clear the 0xa5 filler, then set DF through the setter
    buf[7] = 0;
    ip.setDontFrag(true);
    ip.setTtl(64);
    ip.setProtocol(IP_PROTO_TCP);
    ip.setSrc(0x0a000002);
    ip.setDst(0x0a000001);
    ip.fillChecksum();
    expect(toHex(buf)).toBe(toHex(SYN));
    expect(ip.wrap(buf, 0, 60)).toBeUndefined();
  });

  it('setSrc / setDst / setTtl and the others keep the checksum equal to a full recompute', () => {
    const buf = SYN.slice();
    const ip = new Ipv4Packet();
    expect(ip.wrap(buf, 0, buf.length)).toBeUndefined();
    let x = 0x12345678;
    for (let n = 0; n < 2000; n++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      switch (n % 7) {
        case 0: ip.setSrc(x); break;
        case 1: ip.setDst(n % 3 === 0 ? 0xffffffff : x ^ 0xdeadbeef); break;
        case 2: ip.setTtl(x & 0xff); break;
        case 3: ip.setTos(x >>> 24); break;
        case 4: ip.setIdent(n % 5 === 0 ? 0 : x & 0xffff); break;
        case 5: ip.setDontFrag((x & 1) === 1); break;
        default: ip.setProtocol(n % 2 ? 6 : 17); break;
      }
      const copy = buf.slice(0, 20);
      copy[10] = 0;
      copy[11] = 0;
      expect(ip.checksum).toBe(internetChecksum(copy, 0, 20));
    }
    expect(ip.verifyChecksum()).toBe(true);
  });
});

describe('Ipv4Packet: malformed input is reported, never thrown', () => {
  const ip = new Ipv4Packet();

  function mutate(f: (b: Uint8Array) => void, from: Uint8Array = SYN): Uint8Array {
    const b = from.slice();
    f(b);
    return b;
  }
  function refill(b: Uint8Array): void {
    b[10] = 0;
    b[11] = 0;
    const c = internetChecksum(b, 0, (b[0] & 0x0f) * 4 <= b.length ? (b[0] & 0x0f) * 4 : 20);
    b[10] = c >>> 8;
    b[11] = c & 0xff;
  }

  it('too_short: fewer than 20 bytes (by buffer or by len)', () => {
    expect(ip.wrap(SYN.subarray(0, 19), 0, 19)).toBe('too_short');
    expect(ip.wrap(SYN, 0, 19)).toBe('too_short');
    expect(ip.wrap(SYN, 41, 100)).toBe('too_short');
    expect(ip.wrap(SYN, 100, 20)).toBe('too_short');
    expect(ip.wrap(SYN, -1, 20)).toBe('too_short');
    expect(ip.wrap(new Uint8Array(0), 0, 0)).toBe('too_short');
  });

  it('bad_version', () => {
    expect(ip.wrap(mutate((b) => { b[0] = 0x65; refill(b); }), 0, 60)).toBe('bad_version');
    expect(ip.wrap(mutate((b) => { b[0] = 0x05; }), 0, 60)).toBe('bad_version');
  });

  it('bad_ihl: below 5, or a header longer than the bytes present', () => {
    expect(ip.wrap(mutate((b) => { b[0] = 0x44; }), 0, 60)).toBe('bad_ihl');
    expect(ip.wrap(mutate((b) => { b[0] = 0x40; }), 0, 60)).toBe('bad_ihl');
    expect(ip.wrap(ECHO_RR, 0, 59)).toBe('bad_ihl');
  });

  it('bad_total_length: beyond the buffer, or shorter than the header', () => {
    expect(ip.wrap(SYN, 0, 59)).toBe('bad_total_length');
    expect(ip.wrap(SYN.subarray(0, 59), 0, 60)).toBe('bad_total_length');
    expect(ip.wrap(mutate((b) => { b[2] = 0; b[3] = 61; refill(b); }), 0, 60)).toBe('bad_total_length');
    expect(ip.wrap(mutate((b) => { b[2] = 0; b[3] = 19; refill(b); }), 0, 60)).toBe('bad_total_length');
    expect(ip.wrap(mutate((b) => { b[2] = 0; b[3] = 59; }, ECHO_RR), 0, 76)).toBe('bad_total_length');
  });

  it('accepts a buffer longer than Total Length and trims the view to it', () => {
    const b = new Uint8Array(100);
    b.set(SYN);
    expect(ip.wrap(b, 0, 100)).toBeUndefined();
    expect(ip.length).toBe(60);
    expect(ip.payloadLen).toBe(40);
  });

  it('bad_header_checksum, unless checking is turned off', () => {
    const b = mutate((x) => { x[8] = 63; });
    expect(ip.wrap(b, 0, 60)).toBe('bad_header_checksum');
    expect(ip.wrap(b, 0, 60, false)).toBeUndefined();
    expect(ip.verifyChecksum()).toBe(false);
    ip.fillChecksum();
    expect(ip.wrap(b, 0, 60)).toBeUndefined();
    const c = mutate((x) => { x[11] ^= 1; });
    expect(ip.wrap(c, 0, 60)).toBe('bad_header_checksum');
  });

  it('a failed wrap leaves an empty view, not the previous packet', () => {
    expect(ip.wrap(SYN, 0, 60)).toBeUndefined();
    expect(ip.wrap(SYN, 0, 10)).toBe('too_short');
    expect(ip.length).toBe(0);
  });

  it('flags fragments (MF, or a non-zero offset) without dropping them', () => {
    const mf = mutate((b) => { b[6] = 0x20; b[7] = 0; refill(b); });
    expect(ip.wrap(mf, 0, 60)).toBeUndefined();
    expect(ip.isFragment).toBe(true);
    expect(ip.moreFrags).toBe(true);
    expect(ip.dontFrag).toBe(false);
    const last = mutate((b) => { b[6] = 0x00; b[7] = 0xb9; refill(b); });
    expect(ip.wrap(last, 0, 60)).toBeUndefined();
    expect(ip.isFragment).toBe(true);
    expect(ip.fragOffset).toBe(185 * 8);
    const big = mutate((b) => { b[6] = 0x3f; b[7] = 0xff; refill(b); });
    expect(ip.wrap(big, 0, 60)).toBeUndefined();
    expect(ip.fragOffset).toBe(0x1fff * 8);
    expect(ip.flags).toBe(0b001);
  });

  it('wrapTruncated accepts a quoted header with its data cut short', () => {
    const quote = SYN.subarray(0, 28);
    expect(ip.wrap(quote, 0, 28)).toBe('bad_total_length');
    expect(ip.wrapTruncated(quote, 0, 28)).toBeUndefined();
    expect(ip.length).toBe(28);
    expect(ip.totalLen).toBe(60);
    expect(ip.payloadLen).toBe(8);
    expect(ip.wrapTruncated(SYN, 0, 19)).toBe('too_short');
    expect(ip.wrapTruncated(mutate((b) => { b[0] = 0x46; }), 0, 23)).toBe('bad_ihl');
    expect(ip.wrapTruncated(mutate((b) => { b[0] = 0x55; }), 0, 60)).toBe('bad_version');
    expect(ip.wrapTruncated(mutate((b) => { b[3] = 10; }), 0, 60)).toBe('bad_total_length');
  });
});

describe('IPv4 addresses and CIDRs', () => {
  it('ipToU32 / u32ToIp round-trip', () => {
    expect(ipToU32('10.0.0.1')).toBe(0x0a000001);
    expect(ipToU32('0.0.0.0')).toBe(0);
    expect(ipToU32('255.255.255.255')).toBe(0xffffffff);
    expect(ipToU32('192.168.1.254')).toBe(0xc0a801fe);
    expect(u32ToIp(0xc0a801fe)).toBe('192.168.1.254');
    expect(u32ToIp(0xffffffff)).toBe('255.255.255.255');
    expect(u32ToIp(0)).toBe('0.0.0.0');
    for (const s of ['1.2.3.4', '100.64.0.1', '8.8.8.8', '224.0.0.251']) expect(u32ToIp(ipToU32(s)!)).toBe(s);
  });

  const reject = [
    '', '1', '1.2.3', '1.2.3.4.5', '1.2.3.', '.1.2.3', '1..2.3', '256.0.0.0', '1.2.3.256',
    '01.2.3.4', '1.2.3.04', '00.0.0.0', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4\n', 'a.b.c.d', '1.2.3.4a',
    '+1.2.3.4', '-1.2.3.4', '1.2.3.0x1', '1,2,3,4', '１.2.3.4', '1.2.3.1000',
  ];
  it.each(reject)('ipToU32 rejects %j', (s) => {
    expect(ipToU32(s)).toBeUndefined();
  });

  const cidrs: Array<[string, { addr: number; prefix: number } | undefined]> = [
    ['10.0.0.0/8', { addr: 0x0a000000, prefix: 8 }],
    ['0.0.0.0/0', { addr: 0, prefix: 0 }],
    ['192.168.1.7/32', { addr: 0xc0a80107, prefix: 32 }],
    ['10.1.2.3/8', { addr: 0x0a010203, prefix: 8 }], // host bits kept; see normalizeCidr
    ['100.64.0.0/10', { addr: 0x64400000, prefix: 10 }],
    ['10.0.0.0', undefined],
    ['10.0.0.0/', undefined],
    ['10.0.0.0/33', undefined],
    ['10.0.0.0/-1', undefined],
    ['10.0.0.0/08', undefined],
    ['10.0.0.0/100', undefined],
    ['10.0.0.0/8/8', undefined],
    ['10.0.0/8', undefined],
    ['10.0.0.0 /8', undefined],
    ['10.0.0.0/ 8', undefined],
    ['10.0.0.0/8 ', undefined],
    ['x10.0.0.0/8', undefined],
    ['/8', undefined],
    ['256.0.0.0/8', undefined],
    ['10.0.0.0/a', undefined],
  ];
  it.each(cidrs)('parseCidr(%j)', (s, want) => {
    expect(parseCidr(s)).toEqual(want);
  });

  it('normalizeCidr masks host bits; prefixMask and cidrContains agree', () => {
    expect(normalizeCidr({ addr: 0x0a010203, prefix: 8 })).toEqual({ addr: 0x0a000000, prefix: 8 });
    expect(normalizeCidr({ addr: 0xffffffff, prefix: 0 })).toEqual({ addr: 0, prefix: 0 });
    expect(normalizeCidr({ addr: 0xffffffff, prefix: 32 })).toEqual({ addr: 0xffffffff, prefix: 32 });
    expect(normalizeCidr(parseCidr('192.168.77.1/20')!)).toEqual({ addr: 0xc0a84000, prefix: 20 });
    expect(prefixMask(0)).toBe(0);
    expect(prefixMask(1)).toBe(0x80000000);
    expect(prefixMask(24)).toBe(0xffffff00);
    expect(prefixMask(32)).toBe(0xffffffff);
    const c = parseCidr('172.16.0.0/12')!;
    expect(cidrContains(c, ipToU32('172.31.255.255')!)).toBe(true);
    expect(cidrContains(c, ipToU32('172.32.0.0')!)).toBe(false);
    expect(cidrContains({ addr: 0, prefix: 0 }, 0xffffffff)).toBe(true);
    expect(cidrToString(normalizeCidr(parseCidr('10.9.8.7/16')!))).toBe('10.9.0.0/16');
  });

  it('the header checksum helper agrees with the independent sum', () => {
    expect(sum16(SYN, 0, 20)).toBe(0xffff);
  });
});
