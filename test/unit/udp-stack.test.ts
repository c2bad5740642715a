import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryLink } from '../../src/link/memory.js';
import { emptyLinkStats, type Link } from '../../src/link/link.js';
import { silentLogger } from '../../src/logger.js';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { Ipv4Reassembler } from '../../src/stack/ip-reassembly.js';
import { UdpStack } from '../../src/stack/udp/udp-stack.js';
import type { UdpFlow, UdpFlowListener } from '../../src/stack/udp/flow-table.js';
import { Ipv4Packet, IP_PROTO_ICMP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { emitUdpIpv4, UdpPacket } from '../../src/wire/udp.js';
import { IcmpPacket, ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT } from '../../src/wire/icmp.js';
import { VNET_HDR_LEN } from '../../src/wire/virtio-net.js';

const APP = ipToU32('198.18.0.1')!;
const DST = ipToU32('10.66.1.7')!;
const OTHER = ipToU32('192.0.2.99')!;

function appDatagram(srcPort: number, dst: number, dstPort: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(28 + payload.length);
  emitUdpIpv4({ srcPort, dstPort, payload }, p, 0, APP, dst);
  return p;
}

interface Parsed {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

function parseUdp(p: Uint8Array): Parsed {
  const ip = new Ipv4Packet();
  expect(ip.wrap(p, 0, p.length)).toBeUndefined();
  expect(ip.protocol).toBe(IP_PROTO_UDP);
  const udp = new UdpPacket();
  expect(udp.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
  expect(udp.checksum).not.toBe(0);
  expect(udp.verifyChecksum(ip.src, ip.dst)).toBe(true);
  return { src: ip.src, dst: ip.dst, srcPort: udp.srcPort, dstPort: udp.dstPort, payload: Buffer.from(udp.payload()) };
}

function setup(link: Link = new MemoryLink({ mtu: 1500 })) {
  const clock = new ManualClock(5);
  const stack = new UdpStack({ link, clock, logger: silentLogger() });
  const dispatcher = new PacketDispatcher({ link, icmp: 'reply', logger: silentLogger(), udp: stack.input });
  const got: Array<{ flow: UdpFlow; payload: Buffer }> = [];
  const closed: string[] = [];
  const listener: UdpFlowListener = {
    onDatagram: (payload, flow) => got.push({ flow, payload: Buffer.from(payload) }),
    onClosed: (reason) => closed.push(reason),
  };
  stack.setFlowHandler(() => listener);
  const feed = (p: Uint8Array): void => dispatcher.onPacket(p, 0, p.length);
  return { clock, stack, dispatcher, got, closed, feed, listener };
}

describe('UdpStack: app → flow', () => {
  it('opens one flow per 5-tuple and hands it each datagram (a copy-safe view)', () => {
    const { stack, got, feed } = setup();
    feed(appDatagram(40000, DST, 9000, Buffer.from('one')));
    feed(appDatagram(40000, DST, 9000, Buffer.from('two')));
    feed(appDatagram(40001, DST, 9000, Buffer.from('three')));
    expect(got.map((g) => g.payload.toString())).toEqual(['one', 'two', 'three']);
    expect(got[0].flow).toBe(got[1].flow);
    expect(got[2].flow).not.toBe(got[0].flow);
    expect([got[0].flow.srcIp, got[0].flow.srcPort, got[0].flow.dstIp, got[0].flow.dstPort]).toEqual([APP, 40000, DST, 9000]);
    expect(stack.table.size).toBe(2);
    expect(stack.stats()).toMatchObject({ datagramsIn: 3, bytesIn: 11 });
  });

  it('refuses a flow the handler refuses, and drops multicast and broadcast quietly', () => {
    const { stack, feed, got } = setup();
    stack.setFlowHandler(() => undefined);
    feed(appDatagram(1, DST, 9, new Uint8Array(4)));
    expect(stack.stats().refused).toBe(1);
    expect(stack.table.size).toBe(0);
    stack.setFlowHandler(() => ({ onDatagram: () => got.push({} as never), onClosed: () => {} }));
    feed(appDatagram(5353, ipToU32('224.0.0.251')!, 5353, new Uint8Array(4)));
    feed(appDatagram(68, 0xffffffff, 67, new Uint8Array(4)));
    expect(got).toHaveLength(0);
    expect(stack.stats().unroutable).toBe(2);
  });
});

describe('UdpStack: replies to the app', () => {
  it('builds replies with valid checksums from the flow destination and from any other remote (full cone), in one batch', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { stack, got, feed } = setup(link);
    feed(appDatagram(40000, DST, 9000, Buffer.from('hello')));
    const flow = got[0].flow;
    expect(stack.sendToApp(flow, DST, 9000, Buffer.from('reply'))).toBe(true);
    expect(stack.sendToApp(flow, OTHER, 3478, Buffer.from('from elsewhere'))).toBe(true);
    expect(link.drain()).toHaveLength(0); // staged until the batch ends
    stack.flush();
    const sent = link.drain().map(parseUdp);
    expect(sent).toEqual([
      { src: DST, dst: APP, srcPort: 9000, dstPort: 40000, payload: Buffer.from('reply') },
      { src: OTHER, dst: APP, srcPort: 3478, dstPort: 40000, payload: Buffer.from('from elsewhere') },
    ]);
    expect(flow.packetsDown).toBe(2);
  });

  it('flushes by itself after the current turn', async () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { stack, got, feed } = setup(link);
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    stack.sendToApp(got[0].flow, DST, 9000, Buffer.from('y'));
    await new Promise((r) => setImmediate(r));
    expect(link.drain()).toHaveLength(1);
  });

  it('writes what a received batch staged at its end, together, and arms no timer for it', async () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { stack, got, feed } = setup(link);
    stack.batchStart();
    feed(appDatagram(40000, DST, 9000, Buffer.from('q1')));
    feed(appDatagram(40001, DST, 9000, Buffer.from('q2')));
    for (const g of got) stack.sendToApp(g.flow, DST, 9000, Buffer.from(`a-${g.payload.toString()}`));
    expect(link.drain()).toHaveLength(0);
    stack.batchEnd();
    expect(link.drain().map((p) => parseUdp(p).payload.toString())).toEqual(['a-q1', 'a-q2']);
    // Outside a batch the timer is back: a reply staged now still leaves on its own.
    stack.sendToApp(got[0].flow, DST, 9000, Buffer.from('late'));
    await new Promise((r) => setImmediate(r));
    expect(link.drain()).toHaveLength(1);
  });

  it('fragments a reply larger than the MTU (20 KB), and the pieces reassemble to it', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { clock, stack, got, feed } = setup(link);
    feed(appDatagram(40000, DST, 9000, Buffer.from('big please')));
    const big = Buffer.alloc(20_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    expect(stack.sendToApp(got[0].flow, DST, 9000, big)).toBe(true);
    stack.flush();
    const pieces = link.drain();
    expect(pieces.length).toBe(14);
    const r = new Ipv4Reassembler({ clock });
    let whole: Uint8Array | undefined;
    const ip = new Ipv4Packet();
    for (const p of pieces) {
      expect(p.length).toBeLessThanOrEqual(1500);
      expect(ip.wrap(p, 0, p.length)).toBeUndefined();
      expect(ip.dontFrag).toBe(false);
      expect(ip.ident).not.toBe(0);
      const res = r.input(ip);
      if (res instanceof Uint8Array) whole = res;
    }
    expect(whole).toBeDefined();
    const u = parseUdp(whole!);
    expect(u.payload.equals(big)).toBe(true);
    expect(stack.stats().fragmentedOut).toBe(1);
  });

  it('keeps DF on replies that fit', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { stack, got, feed } = setup(link);
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    stack.sendToApp(got[0].flow, DST, 9000, Buffer.alloc(1472));
    stack.flush();
    const [p] = link.drain();
    expect(p.length).toBe(1500);
    const ip = new Ipv4Packet();
    ip.wrap(p, 0, p.length);
    expect(ip.dontFrag).toBe(true);
  });

  it('drops a reply for a flow that has expired', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { clock, stack, got, feed, closed } = setup(link);
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    clock.advance(60_001);
    expect(stack.sendToApp(got[0].flow, DST, 9000, Buffer.from('late'))).toBe(false);
    expect(closed).toEqual(['idle']);
    expect(stack.stats().replyDropped).toBe(1);
  });

  it('sends ICMP port unreachable quoting the app datagram', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const { stack, got, feed } = setup(link);
    const original = appDatagram(40000, DST, 9000, Buffer.from('anyone there?'));
    feed(original);
    expect(stack.sendUnreachable(got[0].flow, ICMP_UNREACH_PORT)).toBe(true);
    stack.flush();
    const [p] = link.drain();
    const ip = new Ipv4Packet();
    expect(ip.wrap(p, 0, p.length)).toBeUndefined();
    expect([ip.protocol, ip.src, ip.dst]).toEqual([IP_PROTO_ICMP, DST, APP]);
    const icmp = new IcmpPacket();
    expect(icmp.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect([icmp.type, icmp.code]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT]);
    expect(Buffer.from(icmp.data())).toEqual(Buffer.from(original.subarray(0, 28)));
  });
});

describe('UdpStack on a vnet-header link', () => {
  it('puts a "nothing to do" virtio header before every packet, fragments included', () => {
    const sent: Uint8Array[] = [];
    const link: Link = {
      name: 'fake-vnet',
      mtu: 1500,
      vnetHdr: true,
      stats: emptyLinkStats(),
      onReceive: () => {},
      send: (p) => {
        sent.push(new Uint8Array(p));
        return true;
      },
      sendMany: (ps) => {
        for (const p of ps) sent.push(new Uint8Array(p));
        return ps.length;
      },
      close: () => {},
    };
    const clock = new ManualClock(1);
    const stack = new UdpStack({ link, clock, logger: silentLogger() });
    let flow: UdpFlow | undefined;
    stack.setFlowHandler((f) => {
      flow = f;
      return { onDatagram: () => {}, onClosed: () => {} };
    });
    const d = appDatagram(40000, DST, 9000, Buffer.from('q'));
    const ip = new Ipv4Packet();
    ip.wrap(d, 0, d.length);
    stack.input(ip);
    stack.sendToApp(flow!, DST, 9000, Buffer.from('small'));
    stack.sendToApp(flow!, DST, 9000, Buffer.alloc(4000, 1));
    stack.flush();
    expect(sent).toHaveLength(1 + 3);
    for (const p of sent) {
      expect([...p.subarray(0, VNET_HDR_LEN)]).toEqual(new Array(VNET_HDR_LEN).fill(0));
      const v = new Ipv4Packet();
      expect(v.wrap(p, VNET_HDR_LEN, p.length - VNET_HDR_LEN)).toBeUndefined();
    }
    expect(parseUdp(sent[0].subarray(VNET_HDR_LEN)).payload.toString()).toBe('small');
  });
});

describe('UdpStack: close', () => {
  it('ends every flow with reason shutdown', () => {
    const { stack, feed, closed } = setup();
    feed(appDatagram(1, DST, 9, new Uint8Array(1)));
    feed(appDatagram(2, DST, 9, new Uint8Array(1)));
    stack.close();
    expect(closed).toEqual(['shutdown', 'shutdown']);
    feed(appDatagram(3, DST, 9, new Uint8Array(1)));
    expect(stack.table.size).toBe(0);
  });
});
