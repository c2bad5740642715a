import { describe, expect, it } from 'vitest';
import { fragmentIpv4, fragmentedSize } from '../../src/wire/ipv4-fragment.js';
import { Ipv4Packet, writeIpv4Header, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { internetChecksum, setU16 } from '../../src/wire/checksum.js';
import { DST, SRC, pattern, udpDatagram } from './ipfrag-helpers.js';

function split(p: Uint8Array, mtu: number): { pieces: Uint8Array[]; written: number } {
  const out = new Uint8Array(fragmentedSize(p.length, (p[0] & 15) * 4, mtu)).fill(0xa5);
  const lengths: number[] = [];
  const r = fragmentIpv4(p, mtu, out, 0, lengths);
  if (typeof r !== 'number') throw new Error(r);
  const pieces: Uint8Array[] = [];
  let o = 0;
  for (const l of lengths) {
    pieces.push(out.slice(o, o + l));
    o += l;
  }
  return { pieces, written: r };
}

describe('fragmentIpv4', () => {
  it('copies a datagram that fits the MTU as it is', () => {
    const d = udpDatagram(pattern(100), 1, true);
    const { pieces } = split(d, 1500);
    expect(pieces).toHaveLength(1);
    expect(pieces[0]).toEqual(d);
  });

  it('cuts a 20 KB datagram into MTU-sized pieces: 8-byte aligned offsets, MF on all but the last, DF clear, valid checksums', () => {
    const payload = pattern(20_000);
    const d = udpDatagram(payload, 0x1234);
    const { pieces, written } = split(d, 1500);
    expect(pieces).toHaveLength(Math.ceil((d.length - 20) / 1480));
    expect(written).toBe(d.length + 20 * (pieces.length - 1));
    let expectOff = 0;
    const data: Uint8Array[] = [];
    pieces.forEach((p, i) => {
      const ip = new Ipv4Packet();
      expect(ip.wrap(p, 0, p.length)).toBeUndefined(); // header checksum and length right
      expect(p.length).toBeLessThanOrEqual(1500);
      expect(ip.ident).toBe(0x1234);
      expect(ip.dontFrag).toBe(false);
      expect(ip.fragOffset).toBe(expectOff);
      expect(ip.fragOffset % 8).toBe(0);
      expect(ip.moreFrags).toBe(i < pieces.length - 1);
      if (i < pieces.length - 1) expect(ip.payloadLen % 8).toBe(0);
      expect([ip.src, ip.dst, ip.protocol]).toEqual([SRC, DST, IP_PROTO_UDP]);
      data.push(ip.payload());
      expectOff += ip.payloadLen;
    });
    expect(Buffer.concat(data).equals(Buffer.from(d.subarray(20)))).toBe(true);
  });

  it('puts an MTU that is not 20 + a multiple of 8 to use with 8-byte aligned pieces', () => {
    const d = udpDatagram(pattern(3000));
    const { pieces } = split(d, 1000); // 980 data bytes → 976 per piece
    for (const p of pieces.slice(0, -1)) expect(p.length).toBe(996);
  });

  it('refuses a DF datagram larger than the MTU (frag_needed) and writes nothing', () => {
    const d = udpDatagram(pattern(2000), 1, true);
    const out = new Uint8Array(4000).fill(0xa5);
    const lengths: number[] = [];
    expect(fragmentIpv4(d, 1500, out, 0, lengths)).toBe('frag_needed');
    expect(lengths).toEqual([]);
    expect(out.every((b) => b === 0xa5)).toBe(true);
  });

  it('refuses garbage and an MTU below 68', () => {
    const lengths: number[] = [];
    const out = new Uint8Array(100);
    expect(fragmentIpv4(new Uint8Array(10), 1500, out, 0, lengths)).toBe('frag_bad');
    expect(fragmentIpv4(udpDatagram(pattern(200)), 60, new Uint8Array(1000), 0, lengths)).toBe('frag_bad');
  });

  it('re-fragments a piece: offsets continue from its own, the last keeps its MF', () => {
    const d = udpDatagram(pattern(3000));
    const first = split(d, 1500).pieces[0]; // offset 0, MF, 1480 data bytes
    const { pieces } = split(first, 576);
    const views = pieces.map((p) => {
      const ip = new Ipv4Packet();
      expect(ip.wrap(p, 0, p.length)).toBeUndefined();
      return ip;
    });
    expect(views.every((ip) => ip.moreFrags)).toBe(true);
    expect(views.map((ip) => ip.fragOffset)).toEqual([0, 552, 1104]);
  });

  it('copies only the options with the copied flag into later pieces', () => {
    // A header with two options: type 0x94 (router alert, copied) and 0x07 (record route, not).
    const opts = [0x94, 0x04, 0x00, 0x00, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0x00];
    const hl = 20 + opts.length;
    const dataLen = 1000;
    const p = new Uint8Array(hl + dataLen);
    writeIpv4Header(p, 0, SRC, DST, IP_PROTO_UDP, hl - 20 + dataLen, 64, 0, 9, false);
    p[0] = 0x40 | (hl >>> 2);
    p.set(opts, 20);
    p.set(pattern(dataLen), hl);
    p[10] = 0;
    p[11] = 0;
    setU16(p, 10, internetChecksum(p, 0, hl));
    const { pieces } = split(p, 500);
    const ip = new Ipv4Packet();
    expect(ip.wrap(pieces[0], 0, pieces[0].length)).toBeUndefined();
    expect(ip.headerLen).toBe(hl);
    expect(ip.wrap(pieces[1], 0, pieces[1].length)).toBeUndefined();
    expect(ip.headerLen).toBe(24);
    expect([...pieces[1].subarray(20, 24)]).toEqual([0x94, 0x04, 0x00, 0x00]);
  });
});
