/**
 * UdpRelay over an in-memory link with a fake outbound: packets are injected as the TUN
 * device would deliver them (fragments reassembled first, as the dispatcher will do), and what
 * the stack writes back is drained and checked byte for byte.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryLink } from '../../src/link/memory.js';
import { silentLogger } from '../../src/logger.js';
import { DnsResolver, type DnsAnswerer } from '../../src/dns/resolver.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpResolver } from '../../src/dns/fake-ip-resolver.js';
import { DNS_RCODE_SERVFAIL, DNS_TYPE_A, DnsMessage, buildDnsQuery } from '../../src/dns/message.js';
import {
  UpstreamError,
  newOutboundStats,
  type Destination,
  type Outbound,
  type TcpUpstream,
  type UdpUpstream,
  type UdpUpstreamHandlers,
  type UpstreamReason,
} from '../../src/outbound/outbound.js';
import { BlockOutbound } from '../../src/outbound/block.js';
import { UdpRelay } from '../../src/relay/udp-relay.js';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { Ipv4Reassembler } from '../../src/stack/ip-reassembly.js';
import { fragmentIpv4 } from '../../src/wire/ipv4-fragment.js';
import { UdpStack } from '../../src/stack/udp/udp-stack.js';
import { Ipv4Packet, IP_PROTO_ICMP, IP_PROTO_UDP, writeIpv4Header } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { UdpPacket, UdpRepr } from '../../src/wire/udp.js';
import {
  IcmpPacket,
  ICMP_DEST_UNREACHABLE,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_PORT,
} from '../../src/wire/icmp.js';
import { directOutbound, startDnsServer, LOOPBACK } from './dns-helpers.js';

const APP = ipToU32('198.18.0.1')!;
const DST = ipToU32('10.66.1.7')!;

// ---------------------------------------------------------------- a fake outbound

class FakeAssociation implements UdpUpstream {
  readonly relay: Destination = { ip: '127.0.0.9', port: 1080 };
  readonly sent: Array<{ dst: Destination; payload: Buffer }> = [];
  handlers: UdpUpstreamHandlers | undefined;
  closed = false;
  setHandlers(h: UdpUpstreamHandlers): void {
    this.handlers = h;
  }
  send(dst: Destination, payload: Uint8Array): boolean {
    if (this.closed) return false;
    this.sent.push({ dst, payload: Buffer.from(payload) });
    return true;
  }
  close(): void {
    this.closed = true;
  }
  /** A datagram from `from` arrives through the proxy. */
  deliver(payload: string | Uint8Array, from: Destination): void {
    this.handlers!.message(typeof payload === 'string' ? Buffer.from(payload) : payload, from);
  }
}

interface Opening {
  resolve(): FakeAssociation;
  reject(reason: UpstreamReason): void;
}

class FakeOutbound implements Outbound {
  readonly kind = 'socks5' as const;
  readonly stats = newOutboundStats();
  readonly associations: FakeAssociation[] = [];
  readonly openings: Opening[] = [];
  /** Open at once (default), or hold each open for the test to settle. */
  auto: 'open' | 'hold' | UpstreamReason = 'open';
  constructor(readonly name = 'proxy') {}
  connectTcp(): Promise<TcpUpstream> {
    return Promise.reject(new UpstreamError('protocol', this.name, 'no TCP in this fake'));
  }
  openUdp(opts: { signal?: AbortSignal } = {}): Promise<UdpUpstream> {
    return new Promise((resolve, reject) => {
      const o: Opening = {
        resolve: () => {
          const a = new FakeAssociation();
          this.associations.push(a);
          resolve(a);
          return a;
        },
        reject: (reason) => reject(new UpstreamError(reason, this.name, `fake: ${reason}`)),
      };
      opts.signal?.addEventListener('abort', () => o.reject('aborted'));
      if (this.auto === 'open') o.resolve();
      else if (this.auto === 'hold') this.openings.push(o);
      else o.reject(this.auto);
    });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------- the harness

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function appDatagram(srcPort: number, dst: number, dstPort: number, payload: Uint8Array, ident = 0, df = true): Uint8Array {
  const repr = { srcPort, dstPort, payload };
  const l = UdpRepr.bufferLen(repr);
  const p = new Uint8Array(20 + l);
  UdpRepr.emit(repr, p, 20, APP, dst);
  writeIpv4Header(p, 0, APP, dst, IP_PROTO_UDP, l, 64, 0, ident, df);
  return p;
}

interface Out {
  kind: 'udp' | 'icmp';
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  icmpType?: number;
  icmpCode?: number;
}

const stopList: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const s of stopList.splice(0)) await s();
});

function setup(opts: { outbound?: Outbound; dns?: DnsAnswerer; retryAfterMs?: number; maxPendingDatagrams?: number } = {}) {
  const clock = new ManualClock(1000);
  const link = new MemoryLink({ mtu: 1500 });
  const log = silentLogger();
  const stack = new UdpStack({ link, clock, logger: log });
  const outbound = opts.outbound ?? new FakeOutbound();
  const relay = new UdpRelay({
    stack,
    router: { route: () => outbound.name },
    outbounds: new Map([[outbound.name, outbound]]),
    clock,
    logger: log,
    dns: opts.dns,
    retryAfterMs: opts.retryAfterMs,
    maxPendingDatagrams: opts.maxPendingDatagrams,
  });
  stack.setFlowHandler(relay.onFlow);
  // What the dispatcher will do once reassembly is wired in: whole datagrams go on as usual.
  const reassembler = new Ipv4Reassembler({ clock });
  const dispatcher = new PacketDispatcher({ link, icmp: 'reply', logger: log, udp: stack.input });
  const ip = new Ipv4Packet();
  const feed = (p: Uint8Array): void => {
    if (ip.wrap(p, 0, p.length) === undefined && ip.isFragment) {
      const whole = reassembler.input(ip);
      if (whole instanceof Uint8Array) dispatcher.onPacket(whole, 0, whole.length);
      return;
    }
    dispatcher.onPacket(p, 0, p.length);
  };
  /** Everything the stack wrote, reassembled and parsed. */
  const drain = (): Out[] => {
    stack.flush();
    const outR = new Ipv4Reassembler({ clock });
    const out: Out[] = [];
    for (let p of link.drain()) {
      const v = new Ipv4Packet();
      expect(v.wrap(p, 0, p.length)).toBeUndefined();
      if (v.isFragment) {
        const w = outR.input(v);
        if (!(w instanceof Uint8Array)) continue;
        p = w;
        v.wrap(p, 0, p.length);
      }
      if (v.protocol === IP_PROTO_UDP) {
        const u = new UdpPacket();
        expect(u.wrap(p, v.payloadOffset, v.payloadLen)).toBeUndefined();
        expect(u.verifyChecksum(v.src, v.dst)).toBe(true);
        out.push({ kind: 'udp', src: v.src, dst: v.dst, srcPort: u.srcPort, dstPort: u.dstPort, payload: Buffer.from(u.payload()) });
      } else {
        expect(v.protocol).toBe(IP_PROTO_ICMP);
        const c = new IcmpPacket();
        expect(c.wrap(p, v.payloadOffset, v.payloadLen)).toBeUndefined();
        const q = new Ipv4Packet();
        q.wrapTruncated(c.buffer, c.dataOffset, c.dataLen);
        const qu = c.buffer;
        const qo = q.payloadOffset;
        out.push({ kind: 'icmp', src: v.src, dst: v.dst, srcPort: (qu[qo] << 8) | qu[qo + 1], dstPort: (qu[qo + 2] << 8) | qu[qo + 3], payload: Buffer.from(c.data()), icmpType: c.type, icmpCode: c.code });
      }
    }
    return out;
  };
  return { clock, link, stack, relay, outbound, feed, drain };
}

// ---------------------------------------------------------------- tests

describe('UdpRelay: datagrams through an association', () => {
  it('opens one association per flow and carries datagrams both ways, replies from any remote (full cone)', async () => {
    const { feed, drain, outbound, relay } = setup();
    const ob = outbound as FakeOutbound;
    feed(appDatagram(40000, DST, 9000, Buffer.from('hello')));
    await settle();
    feed(appDatagram(40000, DST, 9000, Buffer.from('again')));
    expect(ob.associations).toHaveLength(1);
    const a = ob.associations[0];
    expect(a.sent.map((s) => [s.dst, s.payload.toString()])).toEqual([
      [{ ip: '10.66.1.7', port: 9000 }, 'hello'],
      [{ ip: '10.66.1.7', port: 9000 }, 'again'],
    ]);
    a.deliver('reply', { ip: '10.66.1.7', port: 9000 });
    a.deliver('stun', { ip: '192.0.2.50', port: 3478 });
    expect(drain()).toEqual([
      { kind: 'udp', src: DST, dst: APP, srcPort: 9000, dstPort: 40000, payload: Buffer.from('reply') },
      { kind: 'udp', src: ipToU32('192.0.2.50'), dst: APP, srcPort: 3478, dstPort: 40000, payload: Buffer.from('stun') },
    ]);
    // A second app socket is a second flow with its own association.
    feed(appDatagram(40001, DST, 9000, Buffer.from('other')));
    await settle();
    expect(ob.associations).toHaveLength(2);
    expect(relay.stats).toMatchObject({ flowsOpen: 2, associations: 2, datagramsUp: 3, datagramsDown: 2 });
    expect(relay.flowInfo().map((f) => [f.src, f.dst, f.state])).toEqual([
      ['198.18.0.1:40000', '10.66.1.7:9000', 'open'],
      ['198.18.0.1:40001', '10.66.1.7:9000', 'open'],
    ]);
  });

  it('closes one flow by its id (the dashboard\'s close button): its association ends, the other flow stays', async () => {
    const { feed, outbound, relay } = setup();
    const ob = outbound as FakeOutbound;
    feed(appDatagram(40000, DST, 9000, Buffer.from('a')));
    feed(appDatagram(40001, DST, 9000, Buffer.from('b')));
    await settle();
    const [first, second] = relay.flowInfo();
    expect(relay.close(first.id)).toBe(true);
    expect(ob.associations[0].closed).toBe(true);
    expect(ob.associations[1].closed).toBe(false);
    expect(relay.flowInfo().map((f) => f.id)).toEqual([second.id]);
    expect(relay.close(first.id)).toBe(false);
  });

  it('holds datagrams while the association opens (bounded), then sends them in order', async () => {
    const ob = new FakeOutbound();
    ob.auto = 'hold';
    const { feed, relay } = setup({ outbound: ob, maxPendingDatagrams: 3 });
    for (let i = 0; i < 5; i++) feed(appDatagram(40000, DST, 9000, Buffer.from(`d${i}`)));
    expect(ob.openings).toHaveLength(1);
    const a = ob.openings[0].resolve();
    await settle();
    expect(a.sent.map((s) => s.payload.toString())).toEqual(['d0', 'd1', 'd2']);
    expect(relay.stats.dropped).toBe(2);
  });

  it('carries a 20 KB datagram both ways: fragmented in, reassembled; fragmented out, intact', async () => {
    const { feed, drain, outbound } = setup();
    const big = Buffer.alloc(20_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 13 + 7) & 0xff;
    const whole = appDatagram(40000, DST, 9000, big, 0x77, false);
    const pieces = new Uint8Array(whole.length + 20 * 20);
    const lengths: number[] = [];
    fragmentIpv4(whole, 1500, pieces, 0, lengths);
    let o = 0;
    for (const l of lengths) {
      feed(pieces.slice(o, o + l));
      o += l;
    }
    await settle();
    const a = (outbound as FakeOutbound).associations[0];
    expect(a.sent).toHaveLength(1);
    expect(a.sent[0].payload.equals(big)).toBe(true);
    a.deliver(big, { ip: '10.66.1.7', port: 9000 });
    const out = drain();
    expect(out).toHaveLength(1);
    expect(out[0].payload.equals(big)).toBe(true);
  });

  it('closes the association when the flow expires, and opens a new one for the next datagram', async () => {
    const { feed, clock, stack, outbound, relay } = setup();
    const ob = outbound as FakeOutbound;
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    await settle();
    clock.advance(60_001);
    expect(stack.sweep()).toBe(1);
    expect(ob.associations[0].closed).toBe(true);
    expect(relay.stats.associations).toBe(0);
    expect(relay.stats.flowsOpen).toBe(0);
    feed(appDatagram(40000, DST, 9000, Buffer.from('y')));
    await settle();
    expect(ob.associations).toHaveLength(2);
  });

  it('ends the flow when the proxy ends the association', async () => {
    const { feed, outbound, relay, stack } = setup();
    const ob = outbound as FakeOutbound;
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    await settle();
    ob.associations[0].handlers!.closed(new UpstreamError('proxy_down', 'proxy', 'control connection closed'));
    expect(stack.table.size).toBe(0);
    expect(relay.stats.upstreamErrors.proxy_down).toBe(1);
    feed(appDatagram(40000, DST, 9000, Buffer.from('y')));
    await settle();
    expect(ob.associations).toHaveLength(2);
    expect(ob.associations[1].sent[0].payload.toString()).toBe('y');
  });
});

describe('UdpRelay: ICMP errors for the app', () => {
  it('sends port unreachable, quoting the datagram, when the proxy reports a refused destination', async () => {
    const { feed, drain, outbound, clock } = setup();
    const d = appDatagram(40000, DST, 9000, Buffer.from('knock knock'));
    feed(d);
    await settle();
    const a = (outbound as FakeOutbound).associations[0];
    a.handlers!.unreachable!('refused');
    a.handlers!.unreachable!('refused'); // rate-limited: one per second
    let out = drain();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: 'icmp', src: DST, dst: APP, icmpType: ICMP_DEST_UNREACHABLE, icmpCode: ICMP_UNREACH_PORT, srcPort: 40000, dstPort: 9000 });
    expect(out[0].payload.equals(Buffer.from(d.subarray(0, 28)))).toBe(true);
    clock.advance(1000);
    a.handlers!.unreachable!('unreachable');
    out = drain();
    expect(out[0]).toMatchObject({ icmpCode: ICMP_UNREACH_HOST });
  });

  it('maps a failed open to ICMP (protocol → prohibited, refused → port, proxy_down → host) and retries only after a pause', async () => {
    for (const [reason, code] of [['protocol', ICMP_UNREACH_ADMIN_PROHIBITED], ['refused', ICMP_UNREACH_PORT], ['proxy_down', ICMP_UNREACH_HOST]] as const) {
      const ob = new FakeOutbound();
      ob.auto = reason;
      const { feed, drain, clock, relay } = setup({ outbound: ob, retryAfterMs: 5000 });
      let opens = 0;
      const orig = ob.openUdp.bind(ob);
      ob.openUdp = (o) => {
        opens++;
        return orig(o);
      };
      feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
      await settle();
      expect(drain()).toMatchObject([{ kind: 'icmp', icmpCode: code }]);
      feed(appDatagram(40000, DST, 9000, Buffer.from('y')));
      await settle();
      expect(opens).toBe(1);
      expect(relay.stats.upstreamErrors[reason]).toBe(1);
      clock.advance(5000);
      ob.auto = 'open';
      feed(appDatagram(40000, DST, 9000, Buffer.from('z')));
      await settle();
      expect(opens).toBe(2);
      expect(ob.associations[0].sent.map((s) => s.payload.toString())).toEqual(['z']);
    }
  });

  it('answers a blocked destination with ICMP administratively prohibited', () => {
    const { feed, drain, relay } = setup({ outbound: new BlockOutbound('proxy') });
    feed(appDatagram(40000, DST, 9000, Buffer.from('x')));
    expect(drain()).toMatchObject([{ kind: 'icmp', icmpCode: ICMP_UNREACH_ADMIN_PROHIBITED, src: DST, dst: APP }]);
    expect(relay.stats.flowsOpen).toBe(0);
  });
});

describe('UdpRelay: DNS hijack', () => {
  it('answers a query sent to any address through the resolver, from that address, with the app ID', async () => {
    const server = await startDnsServer();
    stopList.push(() => server.close());
    const ob = new FakeOutbound(); // must never see the query
    const dns = new DnsResolver({ upstream: { ip: LOOPBACK, port: server.port }, outbound: directOutbound('ok'), clock: new ManualClock(0) });
    stopList.push(() => dns.close());
    const { feed, drain, relay } = setup({ outbound: ob, dns });
    const anywhere = ipToU32('203.0.113.77')!;
    feed(appDatagram(5353, anywhere, 53, buildDnsQuery('hijacked.test', DNS_TYPE_A, 0xabcd)));
    for (let i = 0; i < 100 && relay.stats.dnsAnswered === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const out = drain();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: 'udp', src: anywhere, srcPort: 53, dst: APP, dstPort: 5353 });
    const m = DnsMessage.parse(new Uint8Array(out[0].payload))!;
    expect([m.id, m.question?.name, m.ancount]).toEqual([0xabcd, 'hijacked.test.', 1]);
    expect(ob.associations).toHaveLength(0);
    expect(server.log).toEqual([{ transport: 'udp', name: 'hijacked.test.', id: expect.any(Number) as unknown }]);
  });

  it('stages an answer known at once (fake-IP) in the same call, with no promise and no upstream', () => {
    const ob = new FakeOutbound();
    const pool = new FakeIpPool();
    const dns = new FakeIpResolver({ pool, tunneled: () => true, upstream: undefined });
    const { feed, drain, relay } = setup({ outbound: ob, dns });
    const anywhere = ipToU32('203.0.113.77')!;
    feed(appDatagram(5353, anywhere, 53, buildDnsQuery('Fast.Test', DNS_TYPE_A, 0x4242)));
    expect(relay.stats.dnsAnswered).toBe(1); // before any turn of the loop
    const out = drain();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: 'udp', src: anywhere, srcPort: 53, dst: APP, dstPort: 5353 });
    const m = DnsMessage.parse(new Uint8Array(out[0].payload))!;
    expect([m.id, m.question?.name, m.ancount]).toEqual([0x4242, 'Fast.Test.', 1]);
    expect(pool.peek('fast.test')).toBeDefined();
    expect(relay.stats).toMatchObject({ dnsQueries: 1, dnsAnswered: 1, datagramsUp: 1, datagramsDown: 1, bytesDown: out[0].payload.length });
    expect(ob.associations).toHaveLength(0);
  });

  it('sends ICMP port unreachable when DNS over TCP is refused, SERVFAIL when the upstream times out', async () => {
    // Refused: nothing listens at the upstream's TCP port, and the outbound has no UDP.
    const refused = new DnsResolver({ upstream: { ip: LOOPBACK, port: 1 }, outbound: directOutbound('absent'), clock: new ManualClock(0) });
    stopList.push(() => refused.close());
    const a = setup({ dns: refused });
    const q = appDatagram(5353, DST, 53, buildDnsQuery('x.test', DNS_TYPE_A, 1));
    a.feed(q);
    for (let i = 0; i < 100 && a.relay.stats.dnsFailed === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const outA = a.drain();
    expect(outA).toMatchObject([{ kind: 'icmp', icmpCode: ICMP_UNREACH_PORT, src: DST, dst: APP, srcPort: 5353, dstPort: 53 }]);
    expect(outA[0].payload.equals(Buffer.from(q.subarray(0, 28)))).toBe(true);

    // Timeout: a server that accepts TCP and never answers.
    const { createServer } = await import('node:net');
    const silent = createServer((s) => s.on('error', () => {}).resume());
    await new Promise<void>((r) => silent.listen(0, LOOPBACK, () => r()));
    stopList.push(() => new Promise<void>((r) => silent.close(() => r())));
    const port = (silent.address() as { port: number }).port;
    const slow = new DnsResolver({ upstream: { ip: LOOPBACK, port }, outbound: directOutbound('absent'), clock: new ManualClock(0), tcpTimeoutMs: 100 });
    stopList.push(() => slow.close());
    const b = setup({ dns: slow });
    b.feed(appDatagram(5353, DST, 53, buildDnsQuery('slow.test', DNS_TYPE_A, 0x5151)));
    for (let i = 0; i < 100 && b.relay.stats.dnsFailed === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const outB = b.drain();
    expect(outB).toHaveLength(1);
    const sf = DnsMessage.parse(new Uint8Array(outB[0].payload))!;
    expect([sf.id, sf.rcode]).toEqual([0x5151, DNS_RCODE_SERVFAIL]);
  });
});
