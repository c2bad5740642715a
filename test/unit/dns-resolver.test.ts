/**
 * The hijack resolver against a scripted DNS server on 127.0.0.1: directly (an outbound that
 * needs no proxy), then through a real dante (UDP ASSOCIATE) and a real microsocks (no UDP:
 * DNS over TCP through CONNECT), when they are installed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { DnsCache } from '../../src/dns/cache.js';
import { DNS_TYPE_A, DnsMessage, buildDnsQuery, DNS_RCODE_NXDOMAIN } from '../../src/dns/message.js';
import { DnsResolver, type DnsResolveResult } from '../../src/dns/resolver.js';
import type { Outbound } from '../../src/outbound/outbound.js';
import { Socks5UdpOutbound } from '../../src/outbound/socks5-udp.js';
import { parseSocks5Url } from '../../src/outbound/socks5-url.js';
import { LOOPBACK, directOutbound, startDnsServer } from './dns-helpers.js';
import { hasBinary, startLoopbackDante, startLoopbackMicrosocks, type LoopbackDaemon } from '../helpers/loopback-daemons.js';

type Server = Awaited<ReturnType<typeof startDnsServer>>;

function answerOf(r: DnsResolveResult): DnsMessage {
  if (r.kind !== 'answer') throw new Error(`expected an answer, got ${JSON.stringify(r)}`);
  return DnsMessage.parse(r.answer)!;
}

const resolvers: DnsResolver[] = [];
function resolver(server: Server, outbound: Outbound, extra: Partial<ConstructorParameters<typeof DnsResolver>[0]> = {}) {
  const clock = new ManualClock(0);
  const r = new DnsResolver({ upstream: { ip: LOOPBACK, port: server.port }, outbound, clock, udpTimeoutMs: 300, tcpTimeoutMs: 2000, ...extra });
  resolvers.push(r);
  return { r, clock };
}
afterEach(() => {
  for (const r of resolvers.splice(0)) r.close();
});

describe('DnsResolver over UDP (the proxy can carry UDP)', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startDnsServer();
  });
  afterAll(() => server.close());

  it("answers through one shared association, with the app's ID", async () => {
    const ob = directOutbound('ok');
    const { r } = resolver(server, ob);
    const answers = await Promise.all([1, 2, 3, 4, 5].map((i) => r.resolve(buildDnsQuery(`host${i}.test`, DNS_TYPE_A, 1000 + i))));
    answers.forEach((a, i) => {
      const m = answerOf(a);
      expect(m.id).toBe(1001 + i);
      expect(m.question?.name).toBe(`host${i + 1}.test.`);
      expect(a.kind === 'answer' && a.via).toBe('udp');
    });
    expect(ob.udpOpens).toBe(1);
    expect(ob.tcpConnects).toBe(0);
    expect(r.transport).toBe('udp');
  });

  it('retries a truncated (TC=1) UDP answer over TCP, and cuts it to TC=1 for a client without EDNS', async () => {
    const ob = directOutbound('ok');
    const { r } = resolver(server, ob);
    server.log.length = 0;
    // With EDNS 4096 the client takes the whole TCP answer…
    const big = answerOf(await r.resolve(buildDnsQuery('big.test', DNS_TYPE_A, 7, 4096)));
    expect(big.truncated).toBe(false);
    expect(big.ancount).toBe(40);
    expect(big.id).toBe(7);
    expect(server.log.map((l) => l.transport)).toEqual(['udp', 'tcp']);
    expect(r.stats.truncatedRetries).toBe(1);
    // …without EDNS (512 bytes) it gets TC=1 from the cache, and would ask us over TCP.
    const small = answerOf(await r.resolve(buildDnsQuery('big.test', DNS_TYPE_A, 8)));
    expect(small.truncated).toBe(true);
    expect(small.ancount).toBe(0);
    expect(r.stats.truncatedForApp).toBe(1);
    expect(r.transport).toBe('udp'); // a TC answer does not change the transport
  });

  it('falls back to TCP for a query UDP does not answer', async () => {
    const ob = directOutbound('ok');
    const { r } = resolver(server, ob, { udpAttempts: 2 });
    const res = await r.resolve(buildDnsQuery('udp-silent.test', DNS_TYPE_A, 9));
    expect(res.kind === 'answer' && res.via).toBe('tcp');
    expect(r.stats.udpTimeouts).toBe(2);
  });

  it('serves repeats from the cache until the TTL runs out', async () => {
    const ob = directOutbound('ok');
    const { r, clock } = resolver(server, ob);
    server.log.length = 0;
    answerOf(await r.resolve(buildDnsQuery('ttl5.test', DNS_TYPE_A, 1)));
    const hit = await r.resolve(buildDnsQuery('TTL5.test', DNS_TYPE_A, 2));
    expect(hit.kind === 'answer' && hit.via).toBe('cache');
    expect(answerOf(hit).id).toBe(2);
    expect(server.log).toHaveLength(1);
    clock.advance(5001);
    const again = await r.resolve(buildDnsQuery('ttl5.test', DNS_TYPE_A, 3));
    expect(again.kind === 'answer' && again.via).toBe('udp');
    expect(server.log).toHaveLength(2);
    const nx = answerOf(await r.resolve(buildDnsQuery('nx.test', DNS_TYPE_A, 4)));
    expect(nx.rcode).toBe(DNS_RCODE_NXDOMAIN);
  });

  it('works without a cache', async () => {
    const { r } = resolver(server, directOutbound('ok'), { cache: false });
    await r.resolve(buildDnsQuery('a.test', DNS_TYPE_A, 1));
    const again = await r.resolve(buildDnsQuery('a.test', DNS_TYPE_A, 2));
    expect(again.kind === 'answer' && again.via).toBe('udp');
    expect(r.cache).toBeUndefined();
  });

  it('drops what is not a query', async () => {
    const { r } = resolver(server, directOutbound('ok'));
    expect(await r.resolve(new Uint8Array(5))).toEqual({ kind: 'drop', why: 'malformed' });
    const response = buildDnsQuery('a.test', DNS_TYPE_A, 1);
    response[2] |= 0x80;
    expect(await r.resolve(response)).toEqual({ kind: 'drop', why: 'malformed' });
    expect(r.stats.malformed).toBe(2);
  });

  it('ignores answers from elsewhere, with unknown IDs or another question', async () => {
    const ob = directOutbound('ok');
    const { r } = resolver(server, ob);
    await r.resolve(buildDnsQuery('warmup.test', DNS_TYPE_A, 1));
    const assoc = ob.associations[0];
    // Feed forged answers straight into the association's handler path: from a wrong port.
    const forged = buildDnsQuery('warmup.test', DNS_TYPE_A, 1);
    forged[2] |= 0x80;
    const { createSocket } = await import('node:dgram');
    const s = createSocket('udp4');
    await new Promise<void>((res) => s.bind(0, LOOPBACK, () => res()));
    await new Promise<void>((res) => s.send(forged, assoc.relay.port, assoc.relay.ip, () => res()));
    await new Promise((res) => setTimeout(res, 50));
    s.close();
    expect(r.stats.ignored).toBe(1);
  });
});

describe('DnsResolver over TCP (the proxy cannot carry UDP)', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startDnsServer();
  });
  afterAll(() => server.close());

  it('goes straight to TCP when the outbound has no openUdp', async () => {
    const ob = directOutbound('absent');
    const { r } = resolver(server, ob);
    expect(r.transport).toBe('tcp');
    const res = await r.resolve(buildDnsQuery('plain.test', DNS_TYPE_A, 77));
    expect(res.kind === 'answer' && res.via).toBe('tcp');
    expect(answerOf(res).id).toBe(77);
  });

  it("falls back to TCP when UDP ASSOCIATE is refused ('protocol'), and remembers it", async () => {
    const ob = directOutbound('protocol');
    const { r } = resolver(server, ob);
    const a = await r.resolve(buildDnsQuery('one.test', DNS_TYPE_A, 1));
    expect(a.kind === 'answer' && a.via).toBe('tcp');
    expect(r.transport).toBe('tcp');
    await r.resolve(buildDnsQuery('two.test', DNS_TYPE_A, 2));
    expect(ob.udpOpens).toBe(1); // not asked again
    expect(ob.tcpConnects).toBe(2);
  });

  it('gives up UDP after queries in a row that only TCP answered', async () => {
    const ob = directOutbound('ok');
    const { r } = resolver(server, ob, { udpTimeoutMs: 50, udpAttempts: 1 });
    server.udpDown = true;
    try {
      for (let i = 0; i < 5; i++) await r.resolve(buildDnsQuery(`q${i}.test`, DNS_TYPE_A, i));
      expect(r.transport).toBe('tcp');
      const before = r.stats.udpTimeouts;
      await r.resolve(buildDnsQuery('after.test', DNS_TYPE_A, 9));
      expect(r.stats.udpTimeouts).toBe(before);
    } finally {
      server.udpDown = false;
    }
  });

  it("reports a refused DNS-over-TCP connect as 'refused' (the caller sends ICMP port unreachable)", async () => {
    const s = createServer();
    await new Promise<void>((res) => s.listen(0, LOOPBACK, () => res()));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((res) => s.close(() => res()));
    const r = new DnsResolver({ upstream: { ip: LOOPBACK, port }, outbound: directOutbound('absent'), clock: new ManualClock(0) });
    resolvers.push(r);
    const res = await r.resolve(buildDnsQuery('x.test', DNS_TYPE_A, 1));
    expect(res.kind).toBe('error');
    expect(res.kind === 'error' && res.reason).toBe('refused');
    expect(r.stats.failures.refused).toBe(1);
  });
});

// ---------------------------------------------------------------- through real proxies

const HAVE_DANTED = hasBinary('danted');
const HAVE_MICROSOCKS = hasBinary('microsocks');

describe.skipIf(!HAVE_DANTED)(`DnsResolver through dante (UDP ASSOCIATE) ${HAVE_DANTED ? '' : '(SKIPPED: no danted)'}`, () => {
  let server: Server;
  let dir = '';
  let dante: LoopbackDaemon | undefined;
  let url = '';
  beforeAll(async () => {
    server = await startDnsServer();
    dir = mkdtempSync(join(tmpdir(), 'tunroute-dns-dante-'));
    dante = await startLoopbackDante(dir);
    url = dante.url;
  });
  afterAll(async () => {
    await server.close();
    await dante?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('answers over UDP ASSOCIATE, and big answers via CONNECT', async () => {
    const ob = new Socks5UdpOutbound({ name: 'dante', proxy: parseSocks5Url(url) });
    const { r } = resolver(server, ob, { cache: new DnsCache({ clock: new ManualClock(0) }) });
    server.log.length = 0;
    const a = await r.resolve(buildDnsQuery('via-dante.test', DNS_TYPE_A, 4321));
    expect(a.kind === 'answer' && a.via).toBe('udp');
    expect(answerOf(a).id).toBe(4321);
    expect(r.transport).toBe('udp');
    const big = await r.resolve(buildDnsQuery('big.test', DNS_TYPE_A, 5, 4096));
    expect(big.kind === 'answer' && big.via).toBe('tcp');
    expect(answerOf(big).ancount).toBe(40);
    expect(server.log.map((l) => l.transport)).toEqual(['udp', 'udp', 'tcp']);
    r.close();
    await ob.close();
  });
});

describe.skipIf(!HAVE_MICROSOCKS)(`DnsResolver through microsocks (no UDP) ${HAVE_MICROSOCKS ? '' : '(SKIPPED: no microsocks)'}`, () => {
  let server: Server;
  let ms: LoopbackDaemon | undefined;
  let url = '';
  beforeAll(async () => {
    server = await startDnsServer();
    ms = await startLoopbackMicrosocks();
    url = ms.url;
  });
  afterAll(async () => {
    await server.close();
    await ms?.stop();
  });

  it('falls back to DNS over TCP through CONNECT and remembers it', async () => {
    const ob = new Socks5UdpOutbound({ name: 'ms', proxy: parseSocks5Url(url) });
    const { r } = resolver(server, ob);
    const a = await r.resolve(buildDnsQuery('via-microsocks.test', DNS_TYPE_A, 11));
    expect(a.kind === 'answer' && a.via).toBe('tcp');
    expect(answerOf(a).id).toBe(11);
    expect(r.transport).toBe('tcp');
    await r.resolve(buildDnsQuery('second.test', DNS_TYPE_A, 12));
    expect(ob.stats.udp?.attempts).toBe(1);
    expect(ob.stats.tcpEstablished).toBe(2);
    await ob.close();
  });
});
