/**
 * DNS over TCP while hijacking (relay/tcp-dns.ts), without root: an "app" stack and tunroute's
 * stack joined by an in-memory link. TCP to port 53 is answered by the DNS answerer through the
 * relay's hook; the outbound is never asked for a connection.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TcpRelay } from '../../src/relay/tcp-relay.js';
import { DnsOverTcp } from '../../src/relay/tcp-dns.js';
import { Router } from '../../src/router/router.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpResolver } from '../../src/dns/fake-ip-resolver.js';
import { DnsMessage, buildDnsQuery, DNS_TYPE_A, DNS_TYPE_MX, DNS_RCODE_SERVFAIL } from '../../src/dns/message.js';
import { frameDnsMessage, DnsTcpReader } from '../../src/dns/tcp-framing.js';
import type { DnsAnswerer, DnsResolveResult } from '../../src/dns/resolver.js';
import { newOutboundStats, type Outbound } from '../../src/outbound/outbound.js';
import { monotonicClock, type Clock } from '../../src/clock.js';
import { silentLogger } from '../../src/logger.js';
import { ipToU32, u32ToIp } from '../../src/net/ipv4.js';
import type { CloseReason } from '../../src/stack/tcp/types.js';
import type { TcpConnection } from '../../src/stack/tcp/connection.js';
import { stackPair } from '../helpers/stack-pair.js';
import { capturingLogger } from '../helpers/capture-log.js';

const APP_IP = ipToU32('10.0.0.2')!;
const RESOLVER_IP = ipToU32('8.8.8.8')!;

let cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups) c();
  cleanups = [];
});

/** An answerer for what the fake-IP resolver forwards: held until the test releases it. */
class HeldAnswerer implements DnsAnswerer {
  readonly waiting: Array<{ query: Uint8Array; max: number | undefined; done: (r: DnsResolveResult) => void }> = [];
  resolve(query: Uint8Array, max?: number): Promise<DnsResolveResult> {
    return new Promise((done) => this.waiting.push({ query, max, done }));
  }
}

function rig(opts: { maxInFlight?: number; idleMs?: number } = {}) {
  const log = silentLogger();
  const pair = stackPair(log);
  const { stack, appStack } = pair;
  let skew = 0;
  const clock: Clock = { now: () => monotonicClock.now() + skew };
  const pool = new FakeIpPool();
  const upstream = new HeldAnswerer();
  const answerer = new FakeIpResolver({ pool, tunneled: () => true, upstream });
  let connects = 0;
  const proxy: Outbound = {
    name: 'proxy',
    kind: 'socks5',
    stats: newOutboundStats(),
    connectTcp: () => {
      connects++;
      return Promise.reject(new Error('no upstream for DNS over TCP'));
    },
    close: async () => {},
  };
  const dnsTcp = new DnsOverTcp({ stack, dns: answerer, clock, logger: log, ...opts });
  const relay = new TcpRelay({ stack, router: new Router({ rules: [], defaultOutbound: 'proxy' }), outbounds: new Map([['proxy', proxy]]), clock: monotonicClock, logger: log, dnsTcp });
  stack.setSynHandler(relay.onSyn);
  cleanups.push(() => {
    dnsTcp.closeAll();
    pair.close();
  });

  /** An app connection to RESOLVER_IP:53: what it sent, the answers it read, how it ended. */
  function open(first: Uint8Array) {
    const reader = new DnsTcpReader();
    const answers: DnsMessage[] = [];
    let finSeen = false;
    let ended: CloseReason | undefined;
    const waiters: Array<() => void> = [];
    const wake = (): void => {
      for (const w of waiters.splice(0)) w();
    };
    const conn: TcpConnection = appStack.table.connect(monotonicClock.now(), APP_IP, RESOLVER_IP, {
      localPort: 40000 + Math.floor(Math.random() * 20000),
      remotePort: 53,
      iss: appStack.random32(),
      mss: 1460,
      listener: {
        onEstablished() {
          conn.write(first);
          appStack.schedule();
        },
        onData(chunk: Uint8Array) {
          const held = reader.buffered + chunk.length;
          reader.push(chunk);
          // The answers are kept: copies, since consumed bytes may be overwritten by the stack;
          // bytes the reader still holds (a partial answer) are not consumed yet.
          for (let m = reader.next(); m.kind === 'message'; m = reader.next()) answers.push(DnsMessage.parse(m.message.slice())!);
          conn.consumed(held - reader.buffered);
          appStack.schedule();
          wake();
        },
        onPeerFin() {
          finSeen = true;
          conn.shutdownWrite();
          appStack.schedule();
          wake();
        },
        onClosed(reason: CloseReason) {
          ended = reason;
          wake();
        },
      },
    });
    appStack.schedule();
    const until = async (cond: () => boolean): Promise<void> => {
      for (let i = 0; i < 300 && !cond(); i++) await new Promise<void>((res) => { waiters.push(res); setTimeout(res, 10); });
      expect(cond()).toBe(true);
    };
    return {
      answers,
      until,
      get finSeen() { return finSeen; },
      get ended() { return ended; },
      send(b: Uint8Array) {
        conn.write(b);
        appStack.schedule();
      },
      close() {
        conn.shutdownWrite();
        appStack.schedule();
      },
    };
  }
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 5; i++) await new Promise((res) => setTimeout(res, 5));
  };
  return { dnsTcp, relay, pool, upstream, open, settle, connects: () => connects, advance: (ms: number) => (skew += ms) };
}

const q = (name: string, id: number, type = DNS_TYPE_A): Uint8Array => buildDnsQuery(name, type, id);
const cat = (...p: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(p));

describe('DNS over TCP while hijacking', () => {
  it('answers pipelined queries on one connection from the same answerer as UDP, with no upstream connection', async () => {
    const r = rig();
    const app = r.open(cat(frameDnsMessage(q('a.test', 1)), frameDnsMessage(q('b.test', 2))));
    await app.until(() => app.answers.length === 2);
    expect(app.answers.map((a) => a.id)).toEqual([1, 2]);
    expect(app.answers.map((a) => a.records?.filter((x) => x.section === 'answer').length)).toEqual([1, 1]);
    expect(r.pool.nameOf(r.pool.lookup('a.test')!)).toBe('a.test');
    // A third query later on the same connection, split across two writes (prefix cut).
    const third = frameDnsMessage(q('c.test', 3));
    app.send(third.subarray(0, 1));
    await r.settle();
    app.send(third.subarray(1));
    await app.until(() => app.answers.length === 3);
    expect(app.answers[2].id).toBe(3);
    expect(r.connects()).toBe(0);
    expect(r.relay.stats.flowsTotal).toBe(0);
    expect(r.dnsTcp.stats).toMatchObject({ connectionsTotal: 1, queries: 3, answered: 3, malformed: 0 });
    expect(r.dnsTcp.flowInfo()[0]).toMatchObject({ dst: `${u32ToIp(RESOLVER_IP)}:53`, outbound: 'dns' });
    // The app closes: we close too, once nothing is in flight.
    app.close();
    await app.until(() => app.ended !== undefined);
    expect(app.ended).toBe('normal');
    await r.settle();
    expect(r.dnsTcp.stats.connectionsOpen).toBe(0);
  });

  it('asks the forwarding answerer for the whole answer (TCP limit), and answers SERVFAIL when it fails', async () => {
    const r = rig();
    const app = r.open(frameDnsMessage(q('mail.test', 7, DNS_TYPE_MX)));
    await app.until(() => r.upstream.waiting.length === 1);
    expect(r.upstream.waiting[0].max).toBe(65535);
    r.upstream.waiting[0].done({ kind: 'error', reason: 'timeout', message: 'no answer' });
    await app.until(() => app.answers.length === 1);
    expect(app.answers[0].id).toBe(7);
    expect(app.answers[0].rcode).toBe(DNS_RCODE_SERVFAIL);
    expect(r.dnsTcp.stats.failed).toBe(1);
  });

  it('holds at most maxInFlight queries of a connection; the rest wait unread', async () => {
    const r = rig({ maxInFlight: 2 });
    const app = r.open(cat(...[1, 2, 3, 4, 5].map((id) => frameDnsMessage(q(`m${id}.test`, id, DNS_TYPE_MX)))));
    await app.until(() => r.upstream.waiting.length === 2);
    await r.settle();
    expect(r.upstream.waiting.length).toBe(2);
    // Answer them out of order: each answer frees a slot for the next query.
    const answer = (i: number): void => {
      const w = r.upstream.waiting[i];
      const m = DnsMessage.parse(w.query)!;
      w.done({ kind: 'answer', answer: Uint8Array.from(Buffer.concat([Buffer.from([m.bytes[0], m.bytes[1], 0x81, 0x80]), Buffer.from(m.bytes.subarray(4))])), via: 'udp' });
    };
    answer(1);
    await app.until(() => r.upstream.waiting.length === 3);
    answer(0);
    answer(2);
    await app.until(() => r.upstream.waiting.length === 5);
    answer(3);
    answer(4);
    await app.until(() => app.answers.length === 5);
    expect(app.answers.map((a) => a.id)).toEqual([2, 1, 3, 4, 5]);
  });

  it('resets a connection whose length prefix no query can have, and counts it', async () => {
    const r = rig();
    const app = r.open(cat(frameDnsMessage(q('ok.test', 9)), Uint8Array.of(0x00, 0x03, 1, 2, 3)));
    await app.until(() => app.ended !== undefined);
    expect(app.ended).toBe('reset');
    expect(r.dnsTcp.stats.malformed).toBe(1);
    // A query too large for the bound (4 KiB) breaks the framing the same way.
    const big = r.open(Uint8Array.of(0x20, 0x00));
    await big.until(() => big.ended !== undefined);
    expect(r.dnsTcp.stats.malformed).toBe(2);
  });

  it('drops a query the answerer cannot parse, and keeps the connection', async () => {
    const r = rig();
    const junk = new Uint8Array(20).fill(0xff);
    const app = r.open(cat(frameDnsMessage(junk), frameDnsMessage(q('after.test', 4))));
    await app.until(() => app.answers.length === 1);
    expect(app.answers[0].id).toBe(4);
    expect(r.dnsTcp.stats.malformed).toBe(1);
  });

  it('closes a connection idle for idleMs with FIN (the sweep), and resets one that stays open', async () => {
    const r = rig({ idleMs: 10_000 });
    const app = r.open(frameDnsMessage(q('idle.test', 5)));
    await app.until(() => app.answers.length === 1);
    r.dnsTcp.sweep();
    await r.settle();
    expect(app.finSeen).toBe(false);
    r.advance(10_000);
    r.dnsTcp.sweep();
    await app.until(() => app.ended !== undefined);
    expect(app.ended).toBe('normal');
    expect(r.dnsTcp.stats.idleClosed).toBe(1);
  });

  it('refuses connections beyond maxConnections with RST', async () => {
    const r = rig();
    const { log, lines } = capturingLogger();
    const small = new DnsOverTcp({ stack: r.dnsTcp.o.stack, dns: r.upstream, clock: monotonicClock, logger: log, maxConnections: 0 });
    let rejected = 0;
    const took = small.take({ srcIp: APP_IP, srcPort: 1, dstIp: RESOLVER_IP, dstPort: 53, syn: undefined as never, accept: () => { throw new Error('accepted'); }, reject: () => { rejected++; } });
    expect(took).toBe(true);
    expect(rejected).toBe(1);
    expect(small.stats.refusedLimit).toBe(1);
    // At the limit: RST and one log line (not one per refused SYN).
    small.take({ srcIp: APP_IP, srcPort: 2, dstIp: RESOLVER_IP, dstPort: 53, syn: undefined as never, accept: () => { throw new Error('accepted'); }, reject: () => { rejected++; } });
    expect(rejected).toBe(2);
    expect(lines().map((l) => l.msg)).toEqual(['DNS-over-TCP connection limit (0) reached: new connections to port 53 get RST until some close']);
    expect(small.take({ srcIp: APP_IP, srcPort: 1, dstIp: RESOLVER_IP, dstPort: 80, syn: undefined as never, accept: () => { throw new Error('accepted'); }, reject: () => {} })).toBe(false);
  });
});
