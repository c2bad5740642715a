/**
 * The engine's wiring of Link.answerQueries (native/fake_dns.c answers plain A queries at the
 * TUN device): which configs turn it on, what decide() answers, and that every layer counts an
 * answer given at the link as if the query had come up as a packet.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpResolver, FAKE_IP_TTL_S } from '../../src/dns/fake-ip-resolver.js';
import type { LinkDnsDecide } from '../../src/link/link.js';
import { MemoryLink } from '../../src/link/memory.js';
import { silentLogger } from '../../src/logger.js';
import { TerminatingEngine, type EngineOptions } from '../../src/relay/engine.js';

/** A link that answers queries the way the TUN link does, with decide() kept for the test to call. */
class AnsweringLink extends MemoryLink {
  decide: LinkDnsDecide | null | undefined;
  ttl = -1;
  answerQueries(decide: LinkDnsDecide | null, ttl: number): void {
    this.decide = decide;
    this.ttl = ttl;
  }
}

let engines: TerminatingEngine[] = [];
afterEach(async () => {
  for (const e of engines) await e.stop();
  engines = [];
});

function setup(extra: Partial<EngineOptions> = {}, fakeIp = true): { link: AnsweringLink; engine: TerminatingEngine; pool: FakeIpPool } {
  const link = new AnsweringLink({ mtu: 1500 });
  const pool = new FakeIpPool();
  const resolver = new FakeIpResolver({ pool, tunneled: (n) => n.endsWith('.corp.test'), upstream: undefined });
  const engine = new TerminatingEngine({
    link,
    router: { route: () => 'proxy' },
    outbounds: new Map(),
    clock: new ManualClock(),
    logger: silentLogger(),
    icmp: 'drop',
    tcp: { maxFlows: 16 },
    ...(fakeIp ? { fakeIp: { resolver, pool } } : {}),
    ...extra,
  });
  engines.push(engine);
  return { link, engine, pool };
}

describe('the engine and Link.answerQueries', () => {
  it('answers a tunneled name with its fake address, with the fake-IP TTL, and counts it at every layer', () => {
    const { link, engine, pool } = setup();
    expect(link.ttl).toBe(FAKE_IP_TTL_S);
    const decide = link.decide;
    if (typeof decide !== 'function') throw new Error('answerQueries was not called');
    const ip = decide('www.corp.test', 31, 47);
    expect(ip).toBe(pool.peek('www.corp.test'));
    expect(decide('www.corp.test', 31, 47)).toBe(ip); // the same name keeps its address
    const s = engine.stats();
    expect(s.packets.rxPackets).toBe(2);
    expect(s.packets.udpPackets).toBe(2);
    expect([s.udpStack.datagramsIn, s.udpStack.bytesIn, s.udpStack.datagramsOut, s.udpStack.bytesOut]).toEqual([2, 62, 2, 94]);
    expect([s.udp.dnsQueries, s.udp.dnsAnswered, s.udp.bytesUp, s.udp.bytesDown]).toEqual([2, 2, 62, 94]);
    expect(s.fakeIp?.fake).toBe(2);
  });

  it('leaves a name that goes direct, and every query while verify\'s DNS probe is armed, to the stack', () => {
    const { link, engine } = setup();
    const decide = link.decide;
    if (typeof decide !== 'function') throw new Error('answerQueries was not called');
    expect(decide('www.other.test', 31, 47)).toBe(0);
    engine.probes.arm({ tcpSrcPorts: [], dnsName: 'probe-1.verify.invalid', ttlMs: 5000 });
    expect(decide('www.corp.test', 31, 47)).toBe(0);
    const s = engine.stats();
    expect([s.packets.udpPackets, s.udp.dnsQueries, s.fakeIp?.fake]).toEqual([0, 0, 0]);
  });

  it('is not turned on without fake IP, nor when WireGuard tunnels take packets first', () => {
    expect(setup({}, false).link.decide).toBeUndefined();
    expect(setup({ forward: () => false }).link.decide).toBeUndefined();
  });
});
