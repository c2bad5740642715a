/**
 * What the tunnel does to a packet besides sealing it: TUN offloads undone (TCP super-packets
 * cut into segments with full checksums, partial checksums completed), the tunnel MTU enforced
 * (ICMP "fragmentation needed" for DF, fragments otherwise), MSS clamped on SYNs both ways, and
 * the NAT mapping ICMP errors' quotes back to the device address.
 */
import { describe, expect, it } from 'vitest';
import { checksumAdjust, getU16, internetChecksum, pseudoHeaderSum, setU16, sum16 } from '../../src/wire/checksum.js';
import { emitIcmpUnreachableIpv4, ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED, ICMP_UNREACH_PORT, IcmpPacket } from '../../src/wire/icmp.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, Ipv4Packet, writeIpv4Header } from '../../src/wire/ipv4.js';
import { emitTcpIpv4, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, TcpPacket } from '../../src/wire/tcp.js';
import { emitUdpIpv4, UdpPacket } from '../../src/wire/udp.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, VNET_HDR_LEN, writeVnetNone, writeVnetTcp } from '../../src/wire/virtio-net.js';
import { clampMss } from '../../src/wireguard/mss.js';
import { natInbound, natOutbound } from '../../src/wireguard/nat.js';
import { icmpEcho } from './wg-harness.js';
import { C_ADDR, DEV, makeTunnelPair, S_ADDR, sendThrough, wrapped } from './wg-tunnel-harness.js';

function pattern(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/** A TCP/IPv4 packet behind a virtio header: partial checksum, TSO with `gsoSize` (0: none). */
function superPacket(payload: Uint8Array, gsoSize: number, flags = TCP_ACK | TCP_PSH | TCP_FIN): Uint8Array {
  const buf = new Uint8Array(VNET_HDR_LEN + 40 + payload.length);
  const n = emitTcpIpv4(
    { srcPort: 40000, dstPort: 80, seq: 0xfffff000, ack: 1, flags, window: 1000, options: {}, payload },
    buf,
    VNET_HDR_LEN,
    DEV,
    S_ADDR,
    64,
    100,
    true,
  );
  writeVnetTcp(buf, 0, 20, 20, gsoSize);
  return buf.subarray(0, VNET_HDR_LEN + n);
}

function tcpOf(p: Uint8Array): { ip: Ipv4Packet; tcp: TcpPacket } {
  const ip = wrapped(p);
  const tcp = new TcpPacket();
  expect(tcp.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
  return { ip, tcp };
}

function mssOf(p: Uint8Array): number | undefined {
  const { tcp } = tcpOf(p);
  for (let i = tcp.optionsOffset; i < tcp.payloadOffset; ) {
    const k = p[i];
    if (k === 0) break;
    if (k === 1) {
      i++;
      continue;
    }
    if (k === 2) return getU16(p, i + 2);
    i += p[i + 1];
  }
  return undefined;
}

describe('offloads undone before sealing', () => {
  it('a TCP super-packet is cut into gso_size segments: seq, IP id, flags and both checksums right, payload intact', () => {
    const t = makeTunnelPair({ vnet: true });
    const payload = pattern(4000);
    sendThrough(t.client, superPacket(payload, 1380), VNET_HDR_LEN, 0);
    t.net.pump();
    const segs = t.serverLink.take().map(tcpOf);
    expect(segs.map((s) => s.ip.length)).toEqual([1420, 1420, 40 + 4000 - 2 * 1380]);
    expect(segs.map((s) => s.tcp.seq)).toEqual([0xfffff000, (0xfffff000 + 1380) >>> 0, (0xfffff000 + 2760) >>> 0]);
    expect(segs.map((s) => s.ip.ident)).toEqual([100, 101, 102]);
    expect(segs.map((s) => [s.tcp.fin, s.tcp.psh])).toEqual([
      [false, false],
      [false, false],
      [true, true],
    ]);
    for (const s of segs) {
      expect(s.ip.src).toBe(C_ADDR); // and NAT on every segment
      expect(s.ip.verifyChecksum()).toBe(true);
      expect(s.tcp.verifyChecksum(s.ip.src, s.ip.dst)).toBe(true);
    }
    const joined = Buffer.concat(segs.map((s) => s.tcp.buffer.subarray(s.tcp.payloadOffset, s.tcp.payloadOffset + s.tcp.payloadLen)));
    expect(new Uint8Array(joined)).toEqual(payload);
    expect(t.client.stats().gsoSplit).toBe(1);
  });

  it('a super-packet whose segments would exceed the tunnel MTU gets one ICMP "fragmentation needed" (MTU 1420) and is dropped', () => {
    const t = makeTunnelPair({ vnet: true });
    sendThrough(t.client, superPacket(pattern(6000), 1460), VNET_HDR_LEN, 0);
    t.net.pump();
    expect(t.serverLink.sent).toEqual([]);
    expect(t.clientLink.headers).toEqual([new Uint8Array(10)]);
    const [e] = t.clientLink.take();
    const ip = wrapped(e);
    const icmp = new IcmpPacket();
    expect(icmp.wrap(e, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect([icmp.type, icmp.code, getU16(e, ip.payloadOffset + 6), ip.src, ip.dst]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED, 1420, S_ADDR, DEV]);
    expect(t.client.stats().dropped.too_big).toBe(1);
  });

  it('a partial checksum (NEEDS_CSUM, no GSO) is completed, for TCP and UDP', () => {
    const t = makeTunnelPair({ vnet: true });
    sendThrough(t.client, superPacket(pattern(100), 0, TCP_ACK), VNET_HDR_LEN, 0);
    // UDP with a partial checksum: the field holds the pseudo-header sum, csum_start 20, offset 6.
    const u = new Uint8Array(VNET_HDR_LEN + 28 + 50);
    emitUdpIpv4({ srcPort: 1, dstPort: 2, payload: pattern(50) }, u, VNET_HDR_LEN, DEV, S_ADDR);
    setU16(u, VNET_HDR_LEN + 26, pseudoHeaderSum(DEV, S_ADDR, IP_PROTO_UDP, 58));
    writeVnetNone(u, 0);
    u[0] = VNET_F_NEEDS_CSUM;
    setU16(u, 6, 0); // le16 csum_start = 20
    u[6] = 20;
    u[8] = 6;
    sendThrough(t.client, u, VNET_HDR_LEN, 0);
    t.net.pump();
    const [tcpP, udpP] = t.serverLink.take();
    const a = tcpOf(tcpP);
    expect(a.tcp.verifyChecksum(a.ip.src, a.ip.dst)).toBe(true);
    const ip = wrapped(udpP);
    const udp = new UdpPacket();
    expect(udp.wrap(udpP, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(udp.verifyChecksum(ip.src, ip.dst)).toBe(true);
  });

  it('a GSO kind that is never enabled (UDP_L4) is dropped and counted', () => {
    const t = makeTunnelPair({ vnet: true });
    const u = new Uint8Array(VNET_HDR_LEN + 28 + 50);
    emitUdpIpv4({ srcPort: 1, dstPort: 2, payload: pattern(50) }, u, VNET_HDR_LEN, DEV, S_ADDR);
    u[1] = VNET_GSO_UDP_L4;
    sendThrough(t.client, u, VNET_HDR_LEN, 0);
    t.net.pump();
    expect(t.net.log).toEqual([]);
    expect(t.client.stats().dropped.unsupported_gso).toBe(1);
  });
});

describe('the tunnel MTU', () => {
  it('a DF packet above the MTU is refused with ICMP fragmentation needed; without DF it is fragmented and arrives whole', () => {
    const t = makeTunnelPair();
    const big = icmpEcho(DEV, S_ADDR, 1, 1600); // DF set by the helper
    sendThrough(t.client, big);
    const [e] = t.clientLink.take();
    const ip = wrapped(e);
    expect([e[ip.payloadOffset], e[ip.payloadOffset + 1], getU16(e, ip.payloadOffset + 6)]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_FRAG_NEEDED, 1420]);

    const payload = pattern(3000);
    const u = new Uint8Array(28 + payload.length);
    emitUdpIpv4({ srcPort: 1, dstPort: 2, payload }, u, 0, DEV, S_ADDR);
    setU16(u, 6, 0); // clear DF
    setU16(u, 10, 0);
    setU16(u, 10, internetChecksum(u, 0, 20));
    sendThrough(t.client, u);
    t.net.pump();
    const frags = t.serverLink.take().map(wrapped);
    expect(frags.length).toBe(3);
    expect(frags.every((f) => f.length <= 1420 && f.src === C_ADDR && f.verifyChecksum())).toBe(true);
    expect(frags.map((f) => f.fragOffset)).toEqual([0, 1400, 2800]);
    // Put the datagram back together: its UDP checksum (adjusted by the NAT) holds.
    const data = Buffer.concat(frags.map((f) => f.buffer.subarray(f.payloadOffset, f.offset + f.length)));
    expect(sum16(data, 0, data.length, pseudoHeaderSum(C_ADDR, S_ADDR, IP_PROTO_UDP, data.length))).toBe(0xffff);
    expect(new Uint8Array(data.subarray(8))).toEqual(payload);
    expect(t.client.stats().fragmented).toBe(1);
  });
});

describe('MSS clamping', () => {
  function syn(src: number, dst: number, mss: number, flags = TCP_SYN): Uint8Array {
    const buf = new Uint8Array(64);
    const n = emitTcpIpv4({ srcPort: 40000, dstPort: 80, seq: 1, ack: 0, flags, window: 65535, options: { mss, wscale: 7, sackPermitted: true } }, buf, 0, src, dst);
    return buf.subarray(0, n);
  }

  it('lowers the MSS of a SYN going in and a SYN-ACK coming out to MTU − 40, keeping the checksum right', () => {
    const t = makeTunnelPair();
    sendThrough(t.client, syn(DEV, S_ADDR, 1460));
    t.net.pump();
    const [atServer] = t.serverLink.take();
    expect(mssOf(atServer)).toBe(1380);
    const a = tcpOf(atServer);
    expect(a.tcp.verifyChecksum(a.ip.src, a.ip.dst)).toBe(true);
    sendThrough(t.server, syn(S_ADDR, C_ADDR, 8960, TCP_SYN | TCP_ACK));
    t.net.pump();
    const [atClient] = t.clientLink.take();
    expect(mssOf(atClient)).toBe(1380);
    const b = tcpOf(atClient);
    expect(b.tcp.verifyChecksum(b.ip.src, b.ip.dst)).toBe(true);
    // Each side clamps what it sends and what it receives; here each clamped once.
    expect([t.client.stats().mssClamped, t.server.stats().mssClamped]).toEqual([1, 1]);
  });

  it('leaves smaller MSS values, non-SYN segments and other protocols alone; an odd-aligned option is handled', () => {
    const small = syn(DEV, S_ADDR, 1200);
    expect(clampMss(small, 0, small.length, 1380)).toBe(false);
    const ack = syn(DEV, S_ADDR, 1460, TCP_ACK);
    expect(clampMss(ack, 0, ack.length, 1380)).toBe(false);
    // Options: NOP, MSS 1460, NOP, NOP, NOP (the MSS value sits at an odd offset).
    const p = new Uint8Array(48);
    const opts = [1, 2, 4, 0x05, 0xb4, 1, 1, 1];
    p.set([0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x70, TCP_SYN, 0xff, 0xff, 0, 0, 0, 0, ...opts], 20);
    writeIpv4Header(p, 0, DEV, S_ADDR, IP_PROTO_TCP, 28, 64, 0, 0, true);
    setU16(p, 36, internetChecksum(p, 20, 28, pseudoHeaderSum(DEV, S_ADDR, IP_PROTO_TCP, 28)));
    expect(clampMss(p, 0, p.length, 1380)).toBe(true);
    expect(getU16(p, 43)).toBe(1380);
    expect(sum16(p, 20, 28, pseudoHeaderSum(DEV, S_ADDR, IP_PROTO_TCP, 28))).toBe(0xffff);
  });
});

describe('NAT', () => {
  it('an ICMP error from the tunnel about our packet is mapped back: destination and the quoted source, all checksums right', () => {
    const orig = new Uint8Array(28 + 10);
    emitUdpIpv4({ srcPort: 5000, dstPort: 9, payload: pattern(10) }, orig, 0, DEV, S_ADDR);
    expect(natOutbound(orig, 0, orig.length, DEV, C_ADDR)).toBe(true);
    const err = new Uint8Array(128);
    const n = emitIcmpUnreachableIpv4(orig, ICMP_UNREACH_PORT, S_ADDR, err, 0);
    const e = err.subarray(0, n);
    expect(natInbound(e, 0, n, DEV, C_ADDR)).toBe(true);
    const ip = wrapped(e);
    expect(ip.dst).toBe(DEV);
    const icmp = new IcmpPacket();
    expect(icmp.wrap(e, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    const quoted = new Ipv4Packet();
    expect(quoted.wrapTruncated(e, ip.payloadOffset + 8, n - 28)).toBeUndefined();
    expect(quoted.src).toBe(DEV);
    expect(quoted.verifyChecksum()).toBe(true);
  });

  it('a packet from another source leaves unchanged; a UDP datagram without checksum keeps none', () => {
    const p = new Uint8Array(28 + 4);
    emitUdpIpv4({ srcPort: 1, dstPort: 2, payload: pattern(4) }, p, 0, C_ADDR + 5, S_ADDR);
    const before = p.slice();
    expect(natOutbound(p, 0, p.length, DEV, C_ADDR)).toBe(false);
    expect(p).toEqual(before);
    emitUdpIpv4({ srcPort: 1, dstPort: 2, payload: pattern(4) }, p, 0, DEV, S_ADDR);
    setU16(p, 26, 0);
    expect(natOutbound(p, 0, p.length, DEV, C_ADDR)).toBe(true);
    expect(getU16(p, 26)).toBe(0);
    expect(checksumAdjust(0x1234, 0, 0)).toBe(0x1234);
  });
});
