/**
 * `tunroute why NAME[:PORT]` against a plan: by name or direct, which domain route, which
 * outbound (the real router), which resolver, and the fake address the running tunroute holds.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { planRoutes } from '../../src/routes/plan.js';
import { explainName, parseNameDestination } from '../../src/routes/why-name.js';
import { Router } from '../../src/router/router.js';
import type { Config } from '../../src/config/schema.js';

const PROXY = 'socks5://203.0.113.5:1080';
function planOf(flags: FlagValues, extra: Partial<Config> = {}) {
  const c = { ...loadConfig({ flags: { proxy: PROXY, ...flags } }), ...extra };
  const p = planRoutes(c, {
    network: { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false },
    upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }],
    files: new Map(),
    resolvers: { ipv4: ['192.168.1.1'], ipv6: [] },
  });
  return { p, router: new Router({ rules: p.explain.rules, defaultOutbound: p.explain.defaultOutbound }) };
}

describe('parseNameDestination', () => {
  it('reads NAME and NAME:PORT, canonical; an address or IPv6 is not a name', () => {
    expect(parseNameDestination('WWW.Corp.Test.:443')).toEqual({ name: 'www.corp.test', port: 443, proto: 'tcp' });
    expect(parseNameDestination('bücher.example', 'udp')).toEqual({ name: 'xn--bcher-kva.example', port: undefined, proto: 'udp' });
    expect(parseNameDestination('10.1.2.3:80')).toBeUndefined();
    expect(parseNameDestination('[2001:db8::1]:80')).toBeUndefined();
    expect(parseNameDestination('2001:db8::1')).toBeUndefined();
  });
});

describe('explainName', () => {
  it('a tunneled name: the domain route, the fake address held now, the domain rule and the split-DNS server', () => {
    const base = loadConfig({ flags: { proxy: PROXY, dns: 'fakeip' } });
    const { p, router } = planOf(
      { dns: 'fakeip', routeDomain: ['corp.test'] },
      {
        outbounds: [{ name: 'office', type: 'block' }],
        rules: [{ domains: ['lab.corp.test'], outbound: 'office' }],
        dns: { ...base.dns, servers: [{ domains: ['corp.test'], server: { host: '10.0.0.53', port: 53, kind: 'ipv4', addr: 0x0a000035 }, outbound: 'office' }] },
      },
    );
    const a = explainName('tun0', p.dns, parseNameDestination('x.lab.corp.test:22')!, router, { ip: '198.18.0.7', inUse: true });
    expect(a.byName).toBe(true);
    expect(a.outbound?.outbound).toBe('office');
    expect(a.text).toMatch(/enters tun0 by name: corp\.test \(routes\.includeDomains\[0\]\) covers it/);
    expect(a.text).toMatch(/Now it holds 198\.18\.0\.7 \(used by a live flow\)/);
    expect(a.text).toMatch(/goes to 'office' by rule 0/);
    expect(a.text).toMatch(/answered by 10\.0\.0\.53:53 through 'office' \(dns\.servers\[0\]\)/);
  });

  it('a name outside the split: answered by the system resolver, direct', () => {
    const { p, router } = planOf({ dns: 'fakeip', routeDomain: ['corp.test'] });
    const a = explainName('tun0', p.dns, parseNameDestination('other.test')!, router, {});
    expect(a.byName).toBe(false);
    expect(a.text).toMatch(/does not enter tun0 by name: no routes\.includeDomains/);
    expect(a.text).toMatch(/real address by the system's resolver 192\.168\.1\.1/);
  });

  it('a full fake-IP tunnel: every name; without fakeip no name is routed by name', () => {
    const full = planOf({ dns: 'fakeip' });
    expect(explainName('tun0', full.p.dns, parseNameDestination('any.example')!, full.router).text).toMatch(/every name does \(a full fake-IP tunnel\)/);
    const hijack = planOf({ dns: 'hijack' });
    const a = explainName('tun0', hijack.p.dns, parseNameDestination('any.example')!, hijack.router);
    expect(a.byName).toBe(false);
    expect(a.text).toMatch(/not routed by name \(dns\.mode hijack\).*\nDNS: its queries are answered by 1\.1\.1\.1:53/);
  });
});
