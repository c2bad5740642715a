/**
 * Split tunnels by domain: which names enter the device (routes/domain-routes.ts), the system's
 * resolvers in the plan (routed into the device even inside the LAN; never a loopback stub or
 * an upstream's own address), what --dry-run says about DNS, and the resolv.conf reader.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { configSchema } from '../../src/config/schema.js';
import { domainRoutesOf, domainRoutesOfPlan } from '../../src/routes/domain-routes.js';
import { describePlan, planRoutes, toIpCommand, type RoutePlan } from '../../src/routes/plan.js';
import type { RouteEnv } from '../../src/routes/host.js';
import { parseResolvConf } from '../../src/routes/resolv-conf.js';
import { explainDestination } from '../../src/routes/why.js';
import { isTunrouteError, TunrouteError } from '../../src/errors.js';

const PROXY = 'socks5://203.0.113.5:1080';
const env = (over: Partial<RouteEnv> = {}): RouteEnv => ({
  network: { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false },
  upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }],
  files: new Map(),
  ...over,
});

function plan(flags: FlagValues, e: Partial<RouteEnv> = {}): RoutePlan {
  return planRoutes(loadConfig({ flags: { proxy: PROXY, ...flags } }), env(e));
}

describe('domain routes', () => {
  const c = loadConfig({ flags: { proxy: PROXY, dns: 'fakeip', routeDomain: ['corp.test', '=www.other.test'], excludeDomain: ['public.corp.test'] } });
  const d = domainRoutesOf(c, new Map());

  it('a split tunnel by domain: included names enter, the most specific pattern wins, others stay direct', () => {
    expect(d.split).toBe(true);
    expect(d.tunneled('corp.test')).toBe(true);
    expect(d.tunneled('a.b.corp.test')).toBe(true);
    expect(d.tunneled('www.public.corp.test')).toBe(false);
    expect(d.tunneled('www.other.test')).toBe(true);
    expect(d.tunneled('x.www.other.test')).toBe(false);
    expect(d.tunneled('other.test')).toBe(false);
    expect(d.explain('x.public.corp.test')).toEqual({ tunneled: false, pattern: 'public.corp.test', source: 'routes.excludeDomains[0]' });
    expect(d.explain('nothing.example')).toEqual({ tunneled: false });
  });

  it('only excludes: every name enters but the excluded ones', () => {
    const x = domainRoutesOf(loadConfig({ flags: { proxy: PROXY, dns: 'fakeip', excludeDomain: ['bank.example'] } }), new Map());
    expect(x.split).toBe(false);
    expect(x.tunneled('any.example')).toBe(true);
    expect(x.tunneled('www.bank.example')).toBe(false);
  });

  it('a pattern both included and excluded stays direct', () => {
    const x = domainRoutesOf(loadConfig({ flags: { proxy: PROXY, dns: 'fakeip', routeDomain: ['corp.test'], excludeDomain: ['corp.test'] } }), new Map());
    expect(x.tunneled('corp.test')).toBe(false);
  });

  it('reads domain files (comments, line numbers in sources) and names a bad line without its text', () => {
    const cfg = loadConfig({ flags: { proxy: PROXY, dns: 'fakeip', routeDomainFile: ['corp.txt'], excludeDomainFile: ['keep.txt'] } });
    const files = new Map([
      ['corp.txt', '# office\ncorp.test\n\n*.lab.test  # lab\n'],
      ['keep.txt', 'www.corp.test\n'],
    ]);
    const x = domainRoutesOf(cfg, files);
    expect(x.explain('a.lab.test')).toEqual({ tunneled: true, pattern: '*.lab.test', source: 'corp.txt:4' });
    expect(x.explain('www.corp.test').tunneled).toBe(false);
    const bad = new Map([...files, ['corp.txt', 'ok.test\nsecret password here\n']]);
    let err: unknown;
    try {
      domainRoutesOf(cfg, bad);
    } catch (e) {
      err = e;
    }
    expect(isTunrouteError(err)).toBe(true);
    expect((err as TunrouteError).message).toMatch(/corp\.txt line 2 \(listed in routes\.domainFiles\[0\]\) is not a domain name \(bad character\)/);
    expect((err as TunrouteError).message).not.toMatch(/secret/);
  });

  it('round-trips through the plan (as `up` and `why` rebuild it from the journal)', () => {
    const p = plan({ dns: 'fakeip', routeDomain: ['corp.test'], excludeDomain: ['public.corp.test'] });
    const x = domainRoutesOfPlan(p.dns.domains);
    expect(x.tunneled('a.corp.test')).toBe(true);
    expect(x.tunneled('a.public.corp.test')).toBe(false);
    expect(x.tunneled('other.test')).toBe(false);
  });

  it('routes by domain need dns.mode fakeip', () => {
    const r = configSchema.safeParse({ proxy: PROXY, routes: { includeDomains: ['corp.test'] } } satisfies ConfigInput);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(/need dns\.mode fakeip/);
  });
});

describe('config/example.yaml', () => {
  it('loads, and splits by domain with split DNS', () => {
    const c = loadConfig({ file: new URL('../../config/example.yaml', import.meta.url).pathname });
    expect(c.dns.mode).toBe('fakeip');
    expect(c.dns.servers).toHaveLength(1);
    const p = planRoutes(c, env({ resolvers: { ipv4: ['192.168.1.1'], ipv6: [] } }));
    expect(p.dns.splitByDomain).toBe(true);
    expect(domainRoutesOfPlan(p.dns.domains).tunneled('mail.corp.example')).toBe(true);
    expect(domainRoutesOfPlan(p.dns.domains).tunneled('www.corp.example')).toBe(false);
  });
});

describe('resolv.conf', () => {
  it('reads IPv4 and IPv6 nameservers once each, skipping comments and other lines', () => {
    const r = parseResolvConf('# generated\nsearch lan\nnameserver 192.168.1.1\nnameserver 192.168.1.1\n; x\nnameserver fe80::1%eth0\noptions edns0\nnameserver 10.0.0.53 # office\n');
    expect(r).toEqual({ ipv4: ['192.168.1.1', '10.0.0.53'], ipv6: ['fe80::1%eth0'] });
  });
});

describe('the system resolvers in the plan', () => {
  const resolvers = { ipv4: ['192.168.1.1', '127.0.0.53', '203.0.113.5', '10.0.0.53'], ipv6: [] };

  it('a split tunnel by domain routes each usable resolver (/32, even in the LAN) and nothing else but them', () => {
    const p = plan({ dns: 'fakeip', routeDomain: ['corp.test'] }, { resolvers });
    expect(p.mode).toBe('split');
    expect(p.changes.map((ch) => toIpCommand(ch, 'apply'))).toEqual(['ip route add 10.0.0.53/32 dev tun0 proto 211', 'ip route add 192.168.1.1/32 dev tun0 proto 211']);
    expect(p.dns.resolvers.map((r) => [r.ip, r.routed])).toEqual([
      ['192.168.1.1', true],
      ['127.0.0.53', false],
      ['203.0.113.5', false],
      ['10.0.0.53', true],
    ]);
    expect(p.dns.resolvers[1].why).toMatch(/local stub/);
    expect(p.dns.resolvers[2].why).toMatch(/upstream 'proxy'/);
  });

  it('a full tunnel routes a LAN resolver too, so its queries do not leave', () => {
    const p = plan({ dns: 'hijack' }, { resolvers: { ipv4: ['192.168.1.1'], ipv6: [] } });
    expect(p.mode).toBe('full');
    expect(p.changes.map((ch) => toIpCommand(ch, 'apply'))).toContain('ip route add 192.168.1.1/32 dev tun0 table 7300 proto 211');
    const a = explainDestination(p.explain, { ip: '192.168.1.1', port: 53, proto: 'udp' });
    expect(a.enters).toBe(true);
    expect(a.text).toMatch(/192\.168\.1\.1\/32 is a system resolver/);
  });

  it('nothing is routed with dns off or routeSystemResolvers false', () => {
    expect(plan({ route: ['10.1.0.0/16'] }, { resolvers }).changes).toHaveLength(1);
    const c = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'] } });
    const off = planRoutes({ ...c, dns: { ...c.dns, routeSystemResolvers: false } }, env({ resolvers }));
    expect(off.changes).toHaveLength(1);
    expect(off.dns.resolvers.every((r) => !r.routed)).toBe(true);
  });

  it('--dry-run lists the DNS mode, the resolvers and the domain routes', () => {
    const text = describePlan(plan({ dns: 'fakeip', routeDomain: ['corp.test'], excludeDomain: ['www.corp.test'] }, { resolvers }));
    expect(text).toMatch(/DNS: fakeip, split by domain/);
    expect(text).toMatch(/\+ resolver 192\.168\.1\.1: routed into tun0/);
    expect(text).toMatch(/- resolver 127\.0\.0\.53: not routed — a local stub/);
    expect(text).toMatch(/\+ names corp\.test {2}enter \(routes\.includeDomains\[0\]\)/);
    expect(text).toMatch(/- names www\.corp\.test {2}stay direct \(routes\.excludeDomains\[0\]\)/);
  });
});
