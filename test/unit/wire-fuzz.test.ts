import { describe, expect, it } from 'vitest';
import type { DropReason } from '../../src/wire/drop.js';
import {
  emitIcmpUnreachableIpv4,
  emitTcpIpv4,
  IcmpPacket,
  IcmpRepr,
  IP_PROTO_ICMP,
  Ipv4Packet,
  Ipv4Repr,
  TcpOptionValues,
  TcpPacket,
  TcpRepr,
  UdpPacket,
  UdpRepr,
} from '../../src/wire/index.js';
import { mulberry32 } from '../helpers/random.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s, 'hex'));
}

// Valid packets to mutate (captured on loopback; see the per-format tests).
const SEEDS = [
  // TCP SYN with MSS, SACK-permitted, timestamps, window scale
  '4500003cdde94000400648d00a0000020a000001bacd9c40e181d88200000000a002ffd763d400000204ffd70402080ad064f4b2000000000103030a',
  // TCP data with timestamps
  '45000043ddeb4000400648c70a0000020a000001bacd9c40e181d883e7c85e5f801800405a1e00000101080ad064f4b2899c4da068656c6c6f2074756e726f7574650a',
  // UDP
  '450000286edb40004011b7e70a0000020a00000114e99c41001497c3756470207061796c6f616421',
  // ICMP port unreachable quoting a UDP datagram
  '45c000436cd900004001f91e0a0000010a00000203030d6200000000450000276edc40004011b7e70a0000020a00000114e99c49001314276e6f626f647920686f6d65',
  // ICMP echo request
  '45000030ae464000400178840a0000020a000001080072ae1daa00014130026b00000000c694090000000000b2c3a1b2',
  // echo request with IP options (IHL 15)
  '4f00004cae47400040013c560a0000020a000001010727080a000002' + '00'.repeat(32) + '0800ce431dab00010001020304050607',
].map(hex);

/** Read every accessor; none may throw, whatever the view points at. */
function touchIp(p: Ipv4Packet): number {
  return (
    p.version + p.headerLen + p.tos + p.dscp + p.ecn + p.totalLen + p.ident + p.flags +
    Number(p.dontFrag) + Number(p.moreFrags) + p.fragOffset + Number(p.isFragment) + p.ttl +
    p.protocol + p.checksum + p.src + p.dst + p.payloadOffset + p.payloadLen + p.optionsOffset +
    p.optionsLen + p.length + p.offset + p.payload().length + Number(p.verifyChecksum())
  );
}
function touchTcp(t: TcpPacket, o: TcpOptionValues): number {
  t.readOptions(o);
  return (
    t.srcPort + t.dstPort + t.seq + t.ack + t.headerLen + t.flags + Number(t.fin) + Number(t.syn) +
    Number(t.rst) + Number(t.psh) + Number(t.hasAck) + Number(t.urg) + Number(t.ece) + Number(t.cwr) +
    t.window + t.checksum + t.urgent + t.optionsOffset + t.optionsLen + t.payloadOffset +
    t.payloadLen + t.segmentLen + t.payload().length + Number(t.verifyChecksum(1, 2)) + o.mss +
    o.wscale + o.sackCount + o.tsval + o.tsecr
  );
}
function touchUdp(u: UdpPacket): number {
  return (
    u.srcPort + u.dstPort + u.lengthField + u.checksum + u.payloadOffset + u.payloadLen +
    u.payload().length + Number(u.verifyChecksum(1, 2))
  );
}
function touchIcmp(c: IcmpPacket): number {
  return (
    c.type + c.code + c.checksum + c.ident + c.seq + c.nextHopMtu + Number(c.isError) +
    c.dataOffset + c.dataLen + c.data().length + Number(c.verifyChecksum())
  );
}

describe('fuzz: 100,000 random and mutated buffers through every wrap()', () => {
  it('never throws, and whatever is accepted is self-consistent', () => {
    const rand = mulberry32(0x5eed); // the same 100,000 cases on every run
    const int = (n: number): number => Math.floor(rand() * n);
    const ip = new Ipv4Packet();
    const tcp = new TcpPacket();
    const udp = new UdpPacket();
    const icmp = new IcmpPacket();
    const opts = new TcpOptionValues();
    const out = new Uint8Array(70_000);
    const seen = new Map<DropReason | 'ok', number>();
    const note = (r: DropReason | undefined): void => {
      const k = r ?? 'ok';
      seen.set(k, (seen.get(k) ?? 0) + 1);
    };
    let sink = 0;
    // Views that claim bytes they do not have (checked on every accepted wrap).
    let outOfBounds = 0;
    const inBounds = (b: Uint8Array, o: number, l: number, hl: number): void => {
      if (!(o >= 0 && l >= hl && o + l <= b.length)) outOfBounds++;
    };

    for (let n = 0; n < 100_000; n++) {
      // Build a case: a seed with mutations, or pure noise.
      let pkt: Uint8Array;
      const kind = n % 10;
      if (kind === 0) {
        pkt = new Uint8Array(int(100));
        for (let i = 0; i < pkt.length; i++) pkt[i] = int(256);
      } else {
        const seed = SEEDS[int(SEEDS.length)];
        pkt = seed.slice(0, kind === 1 ? int(seed.length + 1) : seed.length);
        const flips = 1 + int(4);
        for (let f = 0; f < flips && pkt.length > 0; f++) {
          // Bias mutations towards headers, where the length and offset fields live.
          const at = rand() < 0.7 ? int(Math.min(pkt.length, 64)) : int(pkt.length);
          const r = rand();
          pkt[at] = r < 0.4 ? int(256) : r < 0.6 ? pkt[at] ^ (1 << int(8)) : r < 0.8 ? 0 : 0xff;
        }
        if (kind === 2 && pkt.length > 0) pkt[0] = (pkt[0] & 0xf0) | int(16); // any IHL
        if (kind === 3 && pkt.length > 32) pkt[32] = (pkt[32] & 0x0f) | (int(16) << 4); // TCP offset
      }
      // Place it at an odd or even offset of a larger buffer, with slack or a short len.
      const off = int(8);
      const buf = new Uint8Array(off + pkt.length + int(16));
      buf.set(pkt, off);
      const len = rand() < 0.1 ? int(pkt.length + 1) : pkt.length + int(4);

      note(ip.wrap(buf, off, len, rand() < 0.8));
      sink += touchIp(ip);
      if (ip.length > 0) {
        inBounds(ip.buffer, ip.offset, ip.length, ip.headerLen);
        if (ip.headerLen < 20 || ip.length > len) outOfBounds++;
        const repr = Ipv4Repr.parse(ip);
        sink += repr.payloadLen;
        note(tcp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen));
        note(udp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen));
        note(icmp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen, rand() < 0.5));
      }
      if (ip.wrapTruncated(buf, off, len) === undefined) {
        inBounds(ip.buffer, ip.offset, ip.length, ip.headerLen);
        note(undefined);
      }
      sink += touchIp(ip);

      // Transport views straight over the raw bytes too, at a random start.
      const k = int(Math.max(1, pkt.length));
      const r1 = tcp.wrap(buf, off + k, len - k);
      note(r1);
      sink += touchTcp(tcp, opts);
      if (r1 === undefined) {
        inBounds(tcp.buffer, tcp.offset, tcp.length, tcp.headerLen);
        if (tcp.headerLen < 20 || tcp.length > len - k) outOfBounds++;
        const repr = TcpRepr.parse(tcp);
        const w = emitTcpIpv4(repr, out, 3, 0x0a000002, 0x0a000001);
        expect(ip.wrap(out, 3, w)).toBeUndefined();
        expect(tcp.wrap(out, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
        expect(tcp.verifyChecksum(0x0a000002, 0x0a000001)).toBe(true);
        expect(tcp.seq).toBe(repr.seq);
      }
      const r2 = udp.wrap(buf, off + k, len - k);
      note(r2);
      sink += touchUdp(udp);
      if (r2 === undefined) {
        inBounds(udp.buffer, udp.offset, udp.length, 8);
        sink += UdpRepr.parse(udp).payload.length;
      }
      const r3 = icmp.wrap(buf, off + k, len - k, rand() < 0.5);
      sink += touchIcmp(icmp);
      if (r3 === undefined) {
        inBounds(icmp.buffer, icmp.offset, icmp.length, 8);
        sink += IcmpRepr.parse(icmp)?.type ?? 0;
      }

      // The error builder takes arbitrary bytes; what it emits must be a valid packet.
      const e = emitIcmpUnreachableIpv4(pkt, int(16), 0x0a000001, out, 0);
      if (e > 0) {
        expect(ip.wrap(out, 0, e)).toBeUndefined();
        expect(ip.protocol).toBe(IP_PROTO_ICMP);
        expect(icmp.wrap(out, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
      }
    }

    expect(Number.isNaN(sink)).toBe(false);
    expect(outOfBounds).toBe(0);
    // The cases reached every verdict the wraps can give.
    for (const r of [
      'ok', 'too_short', 'bad_version', 'bad_ihl', 'bad_total_length', 'bad_header_checksum',
      'bad_tcp_offset', 'bad_tcp_options', 'bad_udp_length', 'bad_icmp_checksum',
    ] as const) {
      expect([r, (seen.get(r) ?? 0) > 50]).toEqual([r, true]);
    }
  });
});
