/**
 * Names that go through a WireGuard tunnel are asked of the tunnel's resolver (dns/tunnel-dns.ts,
 * dns-setup.ts): routed by the domain rules, or every name in a full tunnel over WireGuard; a
 * tunnel without a usable DNS server answers SERVFAIL and says once which setting is missing.
 * No socket is opened here (the resolvers through the device are exercised by e2e/wg-dns).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NoTunnelDnsAnswerer, TunnelDnsAnswerer } from '../../src/dns/tunnel-dns.js';
import { DnsMessage, DNS_RCODE_SERVFAIL, DNS_TYPE_A, buildDnsQuery } from '../../src/dns/message.js';
import type { DnsAnswerer, DnsResolveResult } from '../../src/dns/resolver.js';
import { buildDns } from '../../src/dns-setup.js';
import { buildOutbounds, buildRouter } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { expandTunnels } from '../../src/config/tunnels.js';
import { formatKey, generatePrivateKey } from '../../src/wireguard/keys.js';
import { monotonicClock } from '../../src/clock.js';
import { silentLogger } from '../../src/logger.js';
import type { DnsPlan } from '../../src/routes/plan.js';
import { TunrouteError } from '../../src/errors.js';
import { capturingLogger } from '../helpers/capture-log.js';

class Recording implements DnsAnswerer {
  readonly asked: Array<{ name: string | undefined; max: number | undefined }> = [];
  constructor(private readonly label: string) {}
  resolve(query: Uint8Array, max?: number): Promise<DnsResolveResult> {
    this.asked.push({ name: DnsMessage.parse(query)?.question?.name, max });
    return Promise.resolve({ kind: 'error', reason: 'timeout', message: this.label });
  }
}

const query = (name: string): Uint8Array => buildDnsQuery(name, DNS_TYPE_A, 0x4242);

describe('TunnelDnsAnswerer', () => {
  it("sends a tunnel's names to its answerer and everything else on, with the caller's size limit", async () => {
    const office = new Recording('office');
    const next = new Recording('next');
    const a = new TunnelDnsAnswerer({ tunnelOf: (n) => (n === 'corp.test' || n.endsWith('.corp.test') ? 'office' : undefined), tunnels: new Map([['office', office]]), next });
    await a.resolve(query('www.CORP.test.'), 65535);
    await a.resolve(query('example.test'));
    expect(office.asked).toEqual([{ name: 'www.CORP.test.', max: 65535 }]);
    expect(next.asked).toEqual([{ name: 'example.test.', max: undefined }]);
    expect(a.stats.tunneled).toBe(1);
  });

  it("passes the next answerer's fast path through for names no tunnel takes, never for a tunnel's", () => {
    const office = new Recording('office');
    const fast = Object.assign(new Recording('next'), {
      answerNow: (q: Uint8Array, out: Uint8Array): number => {
        out.set(q);
        return q.length;
      },
    });
    const a = new TunnelDnsAnswerer({ tunnelOf: (n) => (n.endsWith('.corp.test') ? 'office' : undefined), tunnels: new Map([['office', office]]), next: fast });
    const out = new Uint8Array(512);
    expect(a.answerNow(query('www.corp.test'), out)).toBe(0);
    expect(a.answerNow(query('example.test'), out)).toBe(query('example.test').length);
    // Without a fast path behind it, none in front of it either.
    const slow = new TunnelDnsAnswerer({ tunnelOf: () => undefined, tunnels: new Map(), next: new Recording('next') });
    expect(slow.answerNow(query('example.test'), out)).toBe(0);
  });

  it("passes the next answerer's addressNow through for names no tunnel takes, never for a tunnel's", () => {
    const fast = Object.assign(new Recording('next'), { addressNow: (name: string): number => name.length });
    const a = new TunnelDnsAnswerer({ tunnelOf: (n) => (n.endsWith('.corp.test') ? 'office' : undefined), tunnels: new Map([['office', new Recording('office')]]), next: fast });
    expect(a.addressNow('www.corp.test')).toBeUndefined();
    expect(a.addressNow('example.test')).toBe('example.test'.length);
    expect(new TunnelDnsAnswerer({ tunnelOf: () => undefined, tunnels: new Map(), next: new Recording('next') }).addressNow('example.test')).toBeUndefined();
  });

  it('NoTunnelDnsAnswerer answers SERVFAIL and logs its sentence once', async () => {
    const { log, lines } = capturingLogger();
    const a = new NoTunnelDnsAnswerer("tunnel 'wg' has no IPv4 DNS server: …", log);
    for (const name of ['a.test', 'b.test']) {
      const r = await a.resolve(query(name));
      expect(r.kind).toBe('answer');
      if (r.kind === 'answer') expect(DnsMessage.parse(r.answer)?.rcode).toBe(DNS_RCODE_SERVFAIL);
    }
    expect(lines().filter((l) => l.msg.startsWith("tunnel 'wg'")).length).toBe(1);
    expect((await a.resolve(new Uint8Array(3))).kind).toBe('drop');
  });
});

describe('buildDns with a WireGuard outbound', () => {
  let dir = '';
  afterEach(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  async function setup(input: Record<string, unknown>) {
    dir = mkdtempSync(join(tmpdir(), 'tr-tunnel-dns-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify(input));
    const { config } = await expandTunnels(loadConfig({ file }));
    const { log, lines } = capturingLogger();
    const router = buildRouter(config);
    const plan: DnsPlan = { mode: config.dns.mode, resolvers: [], domains: [], splitByDomain: false };
    const build = () =>
      buildDns({ config, dnsPlan: plan, router, outbounds: buildOutbounds(config, silentLogger(), monotonicClock), defaultDevice: () => undefined, clock: monotonicClock, log });
    return { build, lines };
  }

  const wg = (extra: Record<string, unknown>, allowedIPs = ['10.8.0.0/16']) => ({
    name: 'office',
    type: 'wireguard',
    privateKey: formatKey(generatePrivateKey()),
    address: '10.8.0.2/16',
    peers: [{ publicKey: formatKey(generatePrivateKey()), endpoint: '192.0.2.1:51820', allowedIPs }],
    ...extra,
  });

  it("a domain rule naming a tunnel without DNS: its names get SERVFAIL (never another resolver), others go on", async () => {
    const { build, lines } = await setup({ proxy: 'socks5://127.0.0.1:9', outbounds: [wg({})], rules: [{ domains: ['corp.test'], outbound: 'office' }], dns: { mode: 'hijack' } });
    const dns = build()!;
    try {
      const r = await dns.answerer.resolve(query('git.corp.test'));
      expect(r.kind === 'answer' && DnsMessage.parse(r.answer)?.rcode).toBe(DNS_RCODE_SERVFAIL);
      expect(lines().map((l) => l.msg)).toContain("tunnel 'office' has no IPv4 DNS server: names that go through it get SERVFAIL (tunroute never asks the local network for them): set DNS = in its wg-quick file, or dns: [ADDRESS] on outbound 'office'.");
      expect(dns.upstream).toBeDefined();
    } finally {
      dns.close();
      dns.upstream?.close();
    }
  });

  it('a DNS server outside the AllowedIPs is not used: SERVFAIL, and the line says why', async () => {
    const { build, lines } = await setup({ proxy: 'socks5://127.0.0.1:9', outbounds: [wg({ dns: ['10.9.0.1', 'corp.test'] })], rules: [{ domains: ['corp.test'], outbound: 'office' }], dns: { mode: 'fakeip' } });
    const dns = build()!;
    try {
      const r = await dns.answerer.resolve(query('corp.test'));
      expect(r.kind === 'answer' && DnsMessage.parse(r.answer)?.rcode).toBe(DNS_RCODE_SERVFAIL);
      expect(lines().some((l) => l.msg.startsWith("tunnel 'office': its DNS server 10.9.0.1:53 routes to 'proxy', not into the tunnel"))).toBe(true);
      // A name the rule does not cover still gets a fake address.
      const other = await dns.answerer.resolve(query('example.test'));
      expect(other.kind === 'answer' && other.via).toBe('local');
      expect(dns.fakeIp?.pool.stats.entries).toBe(1);
    } finally {
      dns.close();
      dns.upstream?.close();
    }
  });

  it('a full tunnel over WireGuard needs no proxy for DNS: every name goes to the tunnel', async () => {
    const input = { outbounds: [wg({}, ['0.0.0.0/0'])], dns: { mode: 'hijack' } };
    const { build } = await setup(input);
    const dns = build()!;
    try {
      expect(dns.upstream).toBeUndefined();
      const r = await dns.answerer.resolve(query('anything.example'));
      expect(r.kind === 'answer' && DnsMessage.parse(r.answer)?.rcode).toBe(DNS_RCODE_SERVFAIL);
    } finally {
      dns.close();
    }
    // Without a tunnel, the same config has nowhere to send queries: the error names the fix.
    const { build: noTunnel } = await setup({ dns: { mode: 'hijack' } });
    expect(() => noTunnel()).toThrow(TunrouteError);
  });

  it('the dns field takes addresses and search domains, and refuses anything else', async () => {
    await expect(setup({ outbounds: [wg({ dns: ['10.8.0.1', 'fd00::53', 'corp.example'] })] })).resolves.toBeDefined();
    await expect(setup({ outbounds: [wg({ dns: ['10.8.0.1:53 x'] })] })).rejects.toThrow(/outbounds\[0\]\.dns\[0\].*is not an IP address \(a DNS server\) or a domain name/);
  });
});

describe('why NAME for a name that goes through a WireGuard tunnel', () => {
  it("names the tunnel's DNS server and says the answer is real; other names are unchanged", async () => {
    const { explainName } = await import('../../src/routes/why-name.js');
    const { Router } = await import('../../src/router/router.js');
    const router = new Router({ rules: [{ domains: ['corp.test'], outbound: 'office' }], defaultOutbound: 'proxy' });
    const plan: DnsPlan = { mode: 'fakeip', resolvers: [], domains: [], splitByDomain: false, fakeIpRange: '198.18.0.0/15', tunnels: [{ outbound: 'office', server: '10.8.0.1' }] };
    const a = explainName('tun0', plan, { name: 'git.corp.test', port: 443, proto: 'tcp' }, router);
    expect(a.byName).toBe(false);
    expect(a.resolver).toBe("10.8.0.1:53 through tunnel 'office'");
    expect(a.text).toMatch(/goes through WireGuard tunnel 'office'/);
    expect(a.text).toMatch(/real address \(no fake address\)/);
    const none = explainName('tun0', { ...plan, tunnels: [{ outbound: 'office' }] }, { name: 'corp.test', proto: 'tcp' }, router);
    expect(none.resolver).toMatch(/has no IPv4 DNS server, so its names get SERVFAIL/);
    const other = explainName('tun0', plan, { name: 'news.example', proto: 'tcp' }, router);
    expect(other.byName).toBe(true);
  });
});
