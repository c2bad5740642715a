import { describe, expect, it } from 'vitest';
import { computeRouteSet } from '../../src/net/cidr-set.js';
import { planRoutes, toIpBatch, toIpCommand, describePlan, invert, prefixesContain, KILL_SWITCH_METRIC, type RoutePlan } from '../../src/routes/plan.js';
import { parseNetworkView, type RouteEnv, type NetworkView } from '../../src/routes/host.js';
import { parseCidrFile } from '../../src/routes/sources.js';
import { resolveUpstreams, upstreamsOf, pinUpstreams, type ResolvedUpstream } from '../../src/routes/upstreams.js';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { cidrToString, parseCidr, u32ToIp, ipToU32, type Cidr } from '../../src/net/ipv4.js';
import { isTunrouteError, TunrouteError } from '../../src/errors.js';
import { parseSocks5Url } from '../../src/outbound/socks5-url.js';
import { formatProxyUrl, parseProxyUrl, type HttpProxyUrl } from '../../src/outbound/proxy-url.js';
import type { Config } from '../../src/config/schema.js';

const P = (s: string): Cidr => parseCidr(s)!;
const S = (ps: Cidr[]): string[] => ps.map((p) => `${u32ToIp(p.addr)}/${p.prefix}`);

describe('computeRouteSet', () => {
  it('keeps disjoint prefixes and sorts them', () => {
    expect(S(computeRouteSet([P('10.2.0.0/16'), P('10.1.0.0/16')]))).toEqual(['10.1.0.0/16', '10.2.0.0/16']);
  });
  it('merges adjacent prefixes into their parent', () => {
    expect(S(computeRouteSet([P('10.0.0.0/25'), P('10.0.0.128/25')]))).toEqual(['10.0.0.0/24']);
  });
  it('absorbs a prefix nested in another', () => {
    expect(S(computeRouteSet([P('10.0.0.0/8'), P('10.5.5.0/24')]))).toEqual(['10.0.0.0/8']);
  });
  it('masks host bits', () => {
    expect(S(computeRouteSet([P('10.66.1.7/24')]))).toEqual(['10.66.1.0/24']);
  });
  it('carves an exclude out of an include', () => {
    expect(S(computeRouteSet([P('10.0.0.0/24')], [P('10.0.0.0/26')]))).toEqual(['10.0.0.64/26', '10.0.0.128/25']);
    expect(S(computeRouteSet([P('10.0.0.0/24')], [P('10.0.0.64/26')]))).toEqual([
      '10.0.0.0/26',
      '10.0.0.128/25',
    ]);
  });
  it('handles the whole address space and a carve at its top', () => {
    expect(S(computeRouteSet([P('0.0.0.0/0')]))).toEqual(['0.0.0.0/0']);
    expect(S(computeRouteSet([P('0.0.0.0/0')], [P('128.0.0.0/1')]))).toEqual(['0.0.0.0/1']);
    expect(S(computeRouteSet([P('255.255.255.255/32')]))).toEqual(['255.255.255.255/32']);
  });
  it('an exclude covering everything leaves nothing', () => {
    expect(computeRouteSet([P('10.0.0.0/8')], [P('0.0.0.0/0')])).toEqual([]);
  });
  it('covers exactly include minus exclude (random cross-check)', () => {
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
    for (let round = 0; round < 50; round++) {
      // Work inside 10.0.0.0/20 so a brute-force membership check stays cheap.
      const mk = (): Cidr => {
        const prefix = 20 + Math.floor(rnd() * 13);
        const addr = ((10 << 24) | Math.floor(rnd() * 4096)) >>> 0;
        return { addr: (addr & (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0)) >>> 0, prefix };
      };
      const inc = Array.from({ length: 8 }, mk);
      const exc = Array.from({ length: 4 }, mk);
      const out = computeRouteSet(inc, exc);
      const inP = (a: number, p: Cidr): boolean => a >>> (32 - p.prefix) === p.addr >>> (32 - p.prefix) || p.prefix === 0;
      const wrong: number[] = [];
      for (let a = 10 << 24; a < (10 << 24) + 4096; a++) {
        const want = inc.some((p) => inP(a, p)) && !exc.some((p) => inP(a, p));
        if (out.some((p) => inP(a, p)) !== want) wrong.push(a);
      }
      expect(wrong).toEqual([]);
      // Minimal: no two outputs overlap and none could merge with its neighbour.
      for (let i = 1; i < out.length; i++) expect(out[i].addr).toBeGreaterThan(out[i - 1].addr);
    }
  });
});


// ---------------------------------------------------------------------------------------------
// The planner, fed a fixed environment: no host is read.

const LAN_NET: NetworkView = { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: true };
const PROXY_UP: ResolvedUpstream = { name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] };

function env(over: Partial<RouteEnv> = {}): RouteEnv {
  return { network: LAN_NET, upstreams: [], files: new Map(), ...over };
}

function plan(flags: FlagValues, e: Partial<RouteEnv> = {}, file?: Partial<Config>): RoutePlan {
  const c = loadConfig({ flags });
  return planRoutes(file ? { ...c, ...file } : c, env(e));
}

const lines = (p: RoutePlan): string[] => p.changes.map((c) => toIpCommand(c, 'apply'));

function errorOf(fn: () => unknown): TunrouteError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TunrouteError) return e;
    throw e;
  }
  throw new Error('expected a TunrouteError');
}

describe('parseCidrFile', () => {
  it('reads one CIDR per line with comments, blank lines, bare addresses and host bits', () => {
    const text = '# office\n10.1.0.0/16\n\n  10.2.3.4   # one host\n10.9.9.9/24\r\n';
    expect(parseCidrFile(text, 'office.txt', 'routes.includeFiles[0]').labeled().map((l) => [S([l.prefix])[0], l.source])).toEqual([
      ['10.1.0.0/16', 'office.txt:2'],
      ['10.2.3.4/32', 'office.txt:4'],
      ['10.9.9.0/24', 'office.txt:5'],
    ]);
  });
  it('names the file and line of a bad entry', () => {
    const e = errorOf(() => parseCidrFile('10.0.0.0/8\nexample.com\n', 'list.txt', 'routes.excludeFiles[1]'));
    expect(e.code).toBe('TR_BAD_CONFIG');
    expect(e.message).toBe('list.txt line 2 (listed in routes.excludeFiles[1]): the line (not shown: it holds more than digits, "." and "/") is not an IPv4 CIDR like 10.0.0.0/8; fix the line or comment it out with #.');
    // A line of digits, dots and slashes cannot be a secret's: it is quoted.
    expect(errorOf(() => parseCidrFile('10.0.0.300/8\n', 'list.txt', 'routes.includeFiles[0]')).message).toContain('line 1 (listed in routes.includeFiles[0]): "10.0.0.300/8" is not an IPv4 CIDR');
  });
});

describe('parseNetworkView', () => {
  it('finds the default route with the lowest metric and the subnets on its device', () => {
    const json = JSON.stringify([
      { dst: 'default', gateway: '192.168.1.1', dev: 'wlan0', protocol: 'dhcp', metric: 600, flags: [] },
      { dst: 'default', gateway: '10.0.0.1', dev: 'eth0', metric: 100, flags: [] },
      { dst: '10.0.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.0.0.5', flags: [] },
      { dst: '10.0.5.0/24', dev: 'eth0', scope: 'link', flags: [] },
      { dst: '192.168.1.0/24', dev: 'wlan0', protocol: 'kernel', scope: 'link', flags: [] },
      { type: 'blackhole', dst: '10.0.7.0/24', flags: [] },
      { dst: '172.16.0.0/12', gateway: '10.0.0.254', dev: 'eth0', flags: [] },
    ]);
    expect(parseNetworkView(json, true)).toEqual({ defaultRoute: { dev: 'eth0', via: '10.0.0.1' }, lan: ['10.0.0.0/24', '10.0.5.0/24'], ipv6: true });
  });
  it('adds a gateway outside every subnet (onlink) as a /32', () => {
    const json = JSON.stringify([
      { dst: 'default', gateway: '100.64.0.1', dev: 'eth0', flags: ['onlink'] },
      { dst: '10.0.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', flags: [] },
    ]);
    expect(parseNetworkView(json, false).lan).toEqual(['10.0.0.0/24', '100.64.0.1/32']);
  });
  it('without a default route there is no LAN', () => {
    expect(parseNetworkView('[{"dst":"10.0.0.0/24","dev":"eth0","scope":"link","flags":[]}]', false)).toEqual({ lan: [], ipv6: false });
  });
});

describe('planRoutes: split tunnel', () => {
  const p = plan({ route: ['10.66.1.0/24', '10.66.2.0/24', '10.66.3.0/24'] });

  it('sets up the device, then adds merged routes to the main table, marked proto 211', () => {
    expect(p.mode).toBe('split');
    expect(p.table).toBe('main');
    expect(toIpBatch(p.up, 'apply')).toEqual([
      'link set dev tun0 mtu 1500 txqueuelen 5000',
      'address add 198.18.0.1/15 dev tun0',
      'link set dev tun0 up',
      'route add 10.66.1.0/24 dev tun0 proto 211',
      'route add 10.66.2.0/23 dev tun0 proto 211',
    ]);
  });
  it('removes exactly the routes it added, in reverse', () => {
    expect(toIpBatch(p.down, 'undo')).toEqual(['route del 10.66.2.0/23 dev tun0 proto 211', 'route del 10.66.1.0/24 dev tun0 proto 211']);
    expect(invert(p.up)).toEqual(p.down);
  });
  it('carves excludes out of includes', () => {
    const q = plan({ route: ['10.0.0.0/24'], exclude: ['10.0.0.64/26'] });
    expect(S(q.prefixes)).toEqual(['10.0.0.0/26', '10.0.0.128/25']);
    expect(q.direct).toEqual([{ cidr: '10.0.0.64/26', source: 'routes.exclude[0]' }]);
  });
  it('keeps the LAN, loopback, link-local and multicast out even of a split tunnel', () => {
    const q = plan({ route: ['192.168.0.0/16', '127.0.0.0/8', '169.254.0.0/16'] });
    expect(S(q.prefixes)).toEqual(['192.168.0.0/24', '192.168.2.0/23', '192.168.4.0/22', '192.168.8.0/21', '192.168.16.0/20', '192.168.32.0/19', '192.168.64.0/18', '192.168.128.0/17']);
    expect(q.direct.map((d) => d.source)).toEqual(['loopback', 'link-local', 'LAN on eth0 (default route via 192.168.1.1)']);
    expect(plan({ route: ['192.168.0.0/16'], lan: 'off' }).prefixes.length).toBe(1);
  });
  it('reads CIDR files (includes and excludes) and merges them with the flags', () => {
    const files = new Map([
      ['inc.txt', '# nets\n10.1.0.0/16\n10.2.0.0/16\n10.3.0.0/16 # adjacent to .2\n'],
      ['exc.txt', '10.3.128.0/17\n'],
    ]);
    const q = plan({ route: ['10.4.0.0/16'], routeFile: ['inc.txt'], excludeFile: ['exc.txt'] }, { files });
    expect(S(q.prefixes)).toEqual(['10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/17', '10.4.0.0/16']);
    expect(q.explain.include).toEqual([['10.4.0.0/16', 'routes.include[0]']]);
    // Line n's CIDR at slot n - 1: the journal holds one string per file, not a pair per line.
    expect(q.explain.includeFiles).toEqual([{ file: 'inc.txt', cidrs: '\n10.1.0.0/16\n10.2.0.0/16\n10.3.0.0/16' }]);
    expect(q.explain.excludeFiles).toEqual([{ file: 'exc.txt', cidrs: '10.3.128.0/17' }]);
    expect(q.direct).toEqual([{ cidr: '10.3.128.0/17', source: 'exc.txt:1' }]);
  });
  it('has no IPv6 or rule changes and no guard', () => {
    expect(p.ipv6).toBe('untouched');
    expect(p.changes.every((c) => c.op === 'route' && c.family === 4)).toBe(true);
  });
  it('a split tunnel goes to a table of its own when one is named', () => {
    const q = plan({ route: ['10.66.0.0/16'], table: 4242 });
    expect(lines(q)).toEqual(['ip route add 10.66.0.0/16 dev tun0 table 4242 proto 211', 'ip rule add lookup 4242 priority 7301 protocol 211']);
  });
});

describe('planRoutes: full tunnel', () => {
  const p = plan({ proxy: 'socks5://203.0.113.5:1080' }, { upstreams: [PROXY_UP] });

  it('is a full tunnel in table 7300 behind an ip rule', () => {
    expect(p.mode).toBe('full');
    expect(p.table).toBe(7300);
    const rules = lines(p).filter((l) => l.includes(' rule '));
    expect(rules).toEqual(['ip rule add lookup 7300 priority 7301 protocol 211', 'ip -6 rule add lookup 7300 priority 7301 protocol 211']);
  });
  it('routes everything except loopback, link-local, multicast, the LAN and the upstream', () => {
    const inTun = (ip: string): boolean => prefixesContain(p.prefixes, ipToU32(ip)!) !== undefined;
    for (const ip of ['1.1.1.1', '8.8.8.8', '10.1.2.3', '192.168.2.1', '203.0.113.4', '203.0.113.6', '223.255.255.255', '240.0.0.1']) expect(inTun(ip), ip).toBe(true);
    for (const ip of ['127.0.0.1', '169.254.1.1', '224.0.0.251', '239.1.1.1', '255.255.255.255', '0.1.2.3', '192.168.1.77', '203.0.113.5']) expect(inTun(ip), ip).toBe(false);
    expect(p.direct.map((d) => d.cidr)).toEqual(['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '255.255.255.255/32', '203.0.113.5/32', '192.168.1.0/24']);
  });
  it("never routes an upstream's address into the device, whatever the includes say", () => {
    const q = plan({ proxy: 'socks5://10.9.8.7:1080', route: ['10.0.0.0/8'] }, { upstreams: [{ ...PROXY_UP, host: '10.9.8.7', addrs: ['10.9.8.7'] }] });
    expect(prefixesContain(q.prefixes, ipToU32('10.9.8.7')!)).toBeUndefined();
    expect(prefixesContain(q.prefixes, ipToU32('10.9.8.6')!)).toBeDefined();
    expect(q.direct.find((d) => d.cidr === '10.9.8.7/32')?.source).toBe("upstream 'proxy' (socks5 10.9.8.7:1080): tunroute's own connections");
  });
  it('blocks IPv6 except link-local and multicast (the leak guard)', () => {
    expect(p.ipv6).toBe('guarded');
    expect(lines(p).filter((l) => l.startsWith('ip -6 route'))).toEqual([
      'ip -6 route add unreachable ::/0 table 7300 proto 211',
      'ip -6 route add throw fe80::/10 table 7300 proto 211',
      'ip -6 route add throw ff00::/8 table 7300 proto 211',
    ]);
  });
  it('leaves IPv6 alone with the guard off, or where the kernel has none', () => {
    const off = plan({ proxy: 'socks5://203.0.113.5:1080', ipv6Guard: false }, { upstreams: [PROXY_UP] });
    expect(off.ipv6).toBe('untouched');
    expect(off.changes.some((c) => c.family === 6)).toBe(false);
    const none = plan({ proxy: 'socks5://203.0.113.5:1080' }, { upstreams: [PROXY_UP], network: { ...LAN_NET, ipv6: false } });
    expect(none.ipv6).toBe('unavailable');
    expect(none.changes.some((c) => c.family === 6)).toBe(false);
    expect(none.notes).toContain('this kernel has no IPv6: nothing to guard.');
  });
  it('excludes users with uidrange rules before the lookup, for both families', () => {
    const q = plan({ proxy: 'socks5://203.0.113.5:1080', excludeUid: [1000, [2000, 2099]] }, { upstreams: [PROXY_UP] });
    expect(lines(q).filter((l) => l.includes(' rule '))).toEqual([
      'ip rule add uidrange 1000-1000 lookup main priority 7300 protocol 211',
      'ip rule add uidrange 2000-2099 lookup main priority 7300 protocol 211',
      'ip rule add lookup 7300 priority 7301 protocol 211',
      'ip -6 rule add uidrange 1000-1000 lookup main priority 7300 protocol 211',
      'ip -6 rule add uidrange 2000-2099 lookup main priority 7300 protocol 211',
      'ip -6 rule add lookup 7300 priority 7301 protocol 211',
    ]);
  });
  it('excluding users turns a split tunnel to policy routing, and refuses the main table', () => {
    expect(plan({ route: ['10.0.0.0/8'], excludeUid: [1000] }).table).toBe(7300);
    const e = errorOf(() => plan({ route: ['10.0.0.0/8'], excludeUid: [1000], table: 'main' }));
    expect(e.code).toBe('TR_BAD_CONFIG');
    expect(e.message).toContain('needs policy routing');
  });
  it('kill switch: every tunnel route has an unreachable twin of the lowest priority', () => {
    const q = plan({ route: ['10.1.0.0/16', '10.3.0.0/16'], killSwitch: true });
    expect(lines(q)).toEqual([
      'ip route add 10.1.0.0/16 dev tun0 proto 211',
      'ip route add 10.3.0.0/16 dev tun0 proto 211',
      `ip route add unreachable 10.1.0.0/16 proto 211 metric ${KILL_SWITCH_METRIC}`,
      `ip route add unreachable 10.3.0.0/16 proto 211 metric ${KILL_SWITCH_METRIC}`,
    ]);
    expect(toIpBatch(q.down, 'undo')[0]).toBe(`route del unreachable 10.3.0.0/16 proto 211 metric ${KILL_SWITCH_METRIC}`);
  });
  it('in the main table: the halves of the address space, and the IPv6 guard as ::/1 + 8000::/1', () => {
    const q = plan({ proxy: 'socks5://203.0.113.5:1080', table: 'main' }, { upstreams: [PROXY_UP], network: { lan: [], ipv6: true } });
    expect(q.changes.some((c) => c.op === 'rule')).toBe(false);
    expect(S(q.prefixes).slice(0, 3)).toEqual(['1.0.0.0/8', '2.0.0.0/7', '4.0.0.0/6']);
    expect(lines(q).filter((l) => l.startsWith('ip -6'))).toEqual(['ip -6 route add unreachable ::/1 proto 211', 'ip -6 route add unreachable 8000::/1 proto 211']);
  });
  it('says when there is no default route (no LAN to keep direct)', () => {
    const q = plan({ proxy: 'socks5://203.0.113.5:1080' }, { upstreams: [PROXY_UP], network: { lan: [], ipv6: false } });
    expect(q.notes).toContain('no IPv4 default route: there is no LAN to keep direct.');
  });
  it('with neither proxy nor routes: only the device', () => {
    const q = plan({});
    expect(q.mode).toBe('none');
    expect(q.changes).toEqual([]);
    expect(q.up).toHaveLength(3);
  });
});

describe('upstreams', () => {
  it('resolves a host name, keeps every address out, and pins the outbound to the first', async () => {
    const c = loadConfig({ flags: { proxy: 'socks5://bob:s%40cret@proxy.example:1080' } });
    const refs = upstreamsOf(c);
    const ups = await resolveUpstreams(refs, async (h) => (h === 'proxy.example' ? ['198.51.100.7', '198.51.100.8'] : []));
    expect(ups).toEqual([{ name: 'proxy', kind: 'socks5', host: 'proxy.example', port: 1080, addrs: ['198.51.100.7', '198.51.100.8'] }]);
    const p = planRoutes(c, env({ upstreams: ups }));
    for (const a of ['198.51.100.7', '198.51.100.8']) expect(prefixesContain(p.prefixes, ipToU32(a)!)).toBeUndefined();
    expect(p.direct.filter((d) => d.source.startsWith('upstream')).map((d) => d.source)).toEqual([
      "upstream 'proxy' (socks5 proxy.example → 198.51.100.7:1080): tunroute's own connections",
      "upstream 'proxy' (socks5 proxy.example → 198.51.100.8:1080): tunroute's own connections",
    ]);
    expect(formatProxyUrl(pinUpstreams(c, refs, ups).proxy!, { redact: false })).toBe('socks5://bob:s%40cret@198.51.100.7:1080');
  });
  it('covers every socks5 outbound, not only --proxy', async () => {
    const c = { ...loadConfig({}), outbounds: [{ name: 'office', type: 'socks5' as const, url: parseSocks5Url('socks5://192.0.2.10:1080'), connectTimeoutMs: 1000 }] };
    const ups = await resolveUpstreams(upstreamsOf(c));
    const p = planRoutes(c, env({ upstreams: ups }));
    expect(p.mode).toBe('full');
    expect(prefixesContain(p.prefixes, ipToU32('192.0.2.10')!)).toBeUndefined();
  });
  it('covers HTTP CONNECT proxies too: a full tunnel, their address kept out, their name pinned', async () => {
    const c = { ...loadConfig({ flags: { proxy: 'http://u:pw@proxy.corp:3128' } }), outbounds: [{ name: 'office', type: 'http' as const, url: parseProxyUrl('http://192.0.2.11:8080') as HttpProxyUrl, connectTimeoutMs: 1000 }] };
    const refs = upstreamsOf(c);
    const ups = await resolveUpstreams(refs, async () => ['198.51.100.9']);
    expect(ups.map((u) => [u.name, u.kind, u.addrs[0]])).toEqual([
      ['proxy', 'http', '198.51.100.9'],
      ['office', 'http', '192.0.2.11'],
    ]);
    const p = planRoutes(c, env({ upstreams: ups }));
    expect(p.mode).toBe('full');
    for (const a of ['198.51.100.9', '192.0.2.11']) expect(prefixesContain(p.prefixes, ipToU32(a)!)).toBeUndefined();
    expect(formatProxyUrl(pinUpstreams(c, refs, ups).proxy!, { redact: false })).toBe('http://u:pw@198.51.100.9:3128');
  });
  it('a name that does not resolve stops up before anything changes, in one sentence', async () => {
    const c = loadConfig({ flags: { proxy: 'socks5://nowhere.invalid:1080' } });
    const fail = Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
    const e = await resolveUpstreams(upstreamsOf(c), () => Promise.reject(fail)).catch((x: unknown) => x);
    expect(isTunrouteError(e) && e.code).toBe('TR_UPSTREAM');
    expect((e as Error).message).toContain('Cannot resolve nowhere.invalid (proxy, ENOTFOUND)');
  });
});

describe('describePlan', () => {
  it('prints the full-tunnel plan a person can check before anything changes', () => {
    const p = plan({ proxy: 'socks5://203.0.113.5:1080', excludeUid: [1000] }, { upstreams: [PROXY_UP] });
    const text = describePlan(p, { journal: '/run/tunroute/routes-tun0.json' });
    expect(text).toContain('device tun0 — full tunnel: everything except the direct destinations below');
    expect(text).toContain('routes in table 7300, consulted by ip rule priority 7301 (before the main table)');
    expect(text).toContain("  - 203.0.113.5/32      upstream 'proxy' (socks5 203.0.113.5:1080): tunroute's own connections");
    expect(text).toContain('  - 192.168.1.0/24      LAN on eth0 (default route via 192.168.1.1)');
    expect(text).toContain('users whose traffic never enters tun0: uid 1000 (ip rule priority 7300 → main table)');
    expect(text).toContain('IPv6: blocked by the leak guard');
    expect(text).toContain('kill switch: off');
    expect(text).toContain('  ip rule add uidrange 1000-1000 lookup main priority 7300 protocol 211');
    expect(text).toContain('(/run/tunroute/routes-tun0.json lists them meanwhile)');
  });
  it('prints a small split plan exactly', () => {
    expect(describePlan(plan({ route: ['10.66.1.0/24', '10.66.1.128/25'], exclude: ['10.66.1.0/26'] }))).toBe(
      [
        'device tun0 — split tunnel: only the listed CIDRs',
        '  set mtu 1500, txqueuelen 5000',
        '  add address 198.18.0.1/15',
        '  bring the device up',
        'routes into tun0 (2; routes in the main table):',
        '  + 10.66.1.64/26',
        '  + 10.66.1.128/25',
        "stays direct (the host's own routes carry it):",
        '  - 10.66.1.0/26  routes.exclude[0]',
        'IPv6: untouched (split tunnel)',
        'kill switch: off — if tunroute dies, tunneled traffic goes direct again (the watchdog removes the rest)',
        'changes (2, applied with ip -batch in this order):',
        '  ip route add 10.66.1.64/26 dev tun0 proto 211',
        '  ip route add 10.66.1.128/25 dev tun0 proto 211',
        'on exit or `tunroute down`: every change above is deleted, in reverse order; the device vanishes with tunroute.',
      ].join('\n'),
    );
  });
  it('can shorten a long plan', () => {
    const files = new Map([['big.txt', Array.from({ length: 50 }, (_, i) => `10.${i}.0.0/16`).filter((_, i) => i % 2 === 0).join('\n')]]);
    const text = describePlan(plan({ routeFile: ['big.txt'] }, { files }), { maxChanges: 3 });
    expect(text).toContain('  … and 22 more');
  });
});

describe('config: route flags and fields', () => {
  it('maps the route flags onto the schema', () => {
    const c = loadConfig({ flags: { exclude: ['10.0.0.0/8'], routeFile: ['a.txt'], excludeUid: [7, [10, 20]], table: 'main', lan: 'off', ipv6Guard: false, killSwitch: true, watchdog: false, stateDir: '/tmp/x' } });
    expect({ ...c.routes, exclude: c.routes.exclude.map(cidrToString) }).toMatchObject({ exclude: ['10.0.0.0/8'], includeFiles: ['a.txt'], excludeUids: [7, [10, 20]], table: 'main', lan: 'off', ipv6Guard: false, killSwitch: true, watchdog: false });
    expect(c.stateDir).toBe('/tmp/x');
    expect(loadConfig({}).stateDir).toBeUndefined();
  });
  it('names the flag of a bad value', () => {
    expect(errorOf(() => loadConfig({ flags: { table: 254 } })).message).toBe(
      'The flag --table 254 is a table the kernel reserves (253 default, 254 main, 255 local); pick another number: give a valid value.',
    );
    expect(errorOf(() => loadConfig({ flags: { exclude: ['10.0.0/8'] } })).message).toBe('The flag --exclude "10.0.0/8" is not an IPv4 CIDR like 10.0.0.0/8: give a valid value.');
    expect(errorOf(() => loadConfig({ flags: { excludeUid: [[20, 10]] } })).message).toContain('is a range whose first uid is above its last');
  });
});
