import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { routesSchema, type Config } from '../../src/config/schema.js';
import { parseProxyUrl, type HttpProxyUrl } from '../../src/outbound/proxy-url.js';
import { APPS_CGROUP_RE, APP_MARK_DIRECT, appSources, journalApps, nftRuleset } from '../../src/routes/apps.js';
import { appsBaseName, cgroup2Mount } from '../../src/routes/cgroup.js';
import type { RouteEnv } from '../../src/routes/host.js';
import { planRoutes, toIpCommand } from '../../src/routes/plan.js';
import { ipToU32 } from '../../src/net/ipv4.js';

const NET = { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: true };
const APPS = { mount: '/sys/fs/cgroup', base: 'tunroute' };

function env(over: Partial<RouteEnv> = {}): RouteEnv {
  return { network: NET, upstreams: [{ name: 'proxy', kind: 'socks5', host: '10.0.0.1', port: 1080, addrs: ['10.0.0.1'] }], files: new Map(), apps: APPS, ...over };
}

function config(extra: Partial<Config['routes']> = {}): Config {
  const c = loadConfig({ flags: { proxy: 'socks5://10.0.0.1:1080' } });
  return {
    ...c,
    routes: { ...c.routes, ...extra },
    outbounds: [{ name: 'office', type: 'http', url: parseProxyUrl('http://10.0.0.2:3128') as HttpProxyUrl, connectTimeoutMs: 10_000 }],
  };
}

describe('per-app routing plan', () => {
  it('a full tunnel gets the cgroups, the nft table, a table of everything into tun0 and the fwmark rules', () => {
    const p = planRoutes(config(), env());
    expect(p.apps).toBeDefined();
    const a = p.apps!;
    expect(a.root).toBe('/sys/fs/cgroup/tunroute-tun0');
    expect(a.direct).toEqual({ path: '/sys/fs/cgroup/tunroute-tun0/direct', level: 2, mark: APP_MARK_DIRECT });
    expect(a.outbounds.map((o) => [o.name, o.path, o.mark])).toEqual([
      ['proxy', '/sys/fs/cgroup/tunroute-tun0/out-proxy', 0x54520001],
      ['office', '/sys/fs/cgroup/tunroute-tun0/out-office', 0x54520002],
    ]);
    // The top of the device's subnet (198.18.0.1/15), counting down; never the device's own.
    expect(a.outbounds.map((o) => o.addr)).toEqual([ipToU32('198.19.255.254'), ipToU32('198.19.255.253')]);
    expect([...appSources(a)]).toEqual([
      [ipToU32('198.19.255.254'), 'proxy'],
      [ipToU32('198.19.255.253'), 'office'],
    ]);
    const ip = p.changes.map((c) => toIpCommand(c, 'apply'));
    expect(ip).toContain('ip route add 0.0.0.0/0 dev tun0 table 7301 proto 211');
    expect(ip).toContain('ip rule add fwmark 0x54520000 lookup main priority 7300 protocol 211');
    expect(ip).toContain('ip rule add fwmark 0x54520001 lookup 7301 priority 7300 protocol 211');
    expect(ip).toContain('ip rule add fwmark 0x54520002 lookup 7301 priority 7300 protocol 211');
    expect(ip).toContain('ip -6 rule add fwmark 0x54520000 lookup main priority 7300 protocol 211');
    // The marks come before tunroute's own table.
    expect(ip.indexOf('ip rule add fwmark 0x54520000 lookup main priority 7300 protocol 211')).toBeLessThan(ip.indexOf('ip rule add lookup 7300 priority 7301 protocol 211'));
  });

  it('the nft script: one route chain of cgroup marks, one nat chain', () => {
    const p = planRoutes(config({ excludeCgroups: ['system.slice/sshd.service'] }), env({ apps: { mount: '/sys/fs/cgroup/unified', base: 'tunroute-netns-lab' } }));
    expect(nftRuleset(p.apps!)).toBe(
      [
        'table inet tunroute-netns-lab-tun0 {',
        '  chain output {',
        '    type route hook output priority mangle; policy accept;',
        // nft resolves paths under /sys/fs/cgroup; the level counts from the cgroup2 root.
        '    socket cgroupv2 level 2 "unified/system.slice/sshd.service" meta mark set 0x54520000',
        '    socket cgroupv2 level 2 "unified/tunroute-netns-lab-tun0/direct" meta mark set 0x54520000',
        '    socket cgroupv2 level 2 "unified/tunroute-netns-lab-tun0/out-proxy" meta mark set 0x54520001',
        '    socket cgroupv2 level 2 "unified/tunroute-netns-lab-tun0/out-office" meta mark set 0x54520002',
        '  }',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    oifname != "tun0" meta mark 0x54520000 ip saddr 198.18.0.1 masquerade',
        '    oifname "tun0" meta mark 0x54520001 snat ip to 198.19.255.254',
        '    oifname "tun0" meta mark 0x54520002 snat ip to 198.19.255.253',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    // What the journal keeps passes the journal's own check (down acts only on tunroute's cgroups).
    const j = journalApps(p.apps!);
    for (const c of [...j.cgroups, j.direct, ...Object.values(j.outbounds)]) expect(c).toMatch(APPS_CGROUP_RE);
  });

  it('off, with the reason exec will give: a split tunnel in the main table, no cgroup v2, routes.perApp off', () => {
    const split = planRoutes({ ...config(), routes: { ...config().routes, include: [{ addr: ipToU32('10.8.0.0')!, prefix: 16 }] } }, env());
    expect(split.apps).toBeUndefined();
    expect(split.appsOff).toContain('start tunroute up with --table 7300');
    expect(split.changes.some((c) => c.op === 'rule')).toBe(false);
    expect(planRoutes(config(), env({ apps: undefined, appsOff: 'cgroup v2 is not mounted' })).appsOff).toBe('cgroup v2 is not mounted');
    const off = planRoutes(config({ perApp: 'off' }), env());
    expect(off.appsOff).toBe('routes.perApp is off');
    expect(off.changes.some((c) => c.op === 'rule' && c.fwmark !== undefined)).toBe(false);
  });

  it('excludeCgroups forces a table of its own, and refuses to run without per-app routing', () => {
    const c = config({ excludeCgroups: ['system.slice/sshd.service'] });
    const split = { ...c, routes: { ...c.routes, include: [{ addr: ipToU32('10.8.0.0')!, prefix: 16 }] } };
    expect(planRoutes(split, env()).table).toBe(7300);
    expect(() => planRoutes(split, env({ apps: undefined, appsOff: 'nftables is not installed (apt-get install nftables)' }))).toThrow(
      'Excluding cgroups (routes.excludeCgroups) needs per-app routing, which is off: nftables is not installed (apt-get install nftables).',
    );
  });

  it('config: excludeCgroups paths are relative, without "." or ".." or quotes', () => {
    expect(routesSchema.parse({ excludeCgroups: ['/system.slice/sshd.service/'] }).excludeCgroups).toEqual(['system.slice/sshd.service']);
    for (const bad of ['../etc', 'a/./b', 'a"b', 'a b', '']) expect(routesSchema.safeParse({ excludeCgroups: [bad] }).success, bad).toBe(false);
  });
});

describe('finding cgroup v2', () => {
  it('the mount point from mountinfo: unified (systemd) and hybrid layouts', () => {
    const unified = '29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n';
    const hybrid = [
      '30 23 0:27 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
      '31 30 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw',
      '32 30 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,name=systemd',
    ].join('\n');
    expect(cgroup2Mount(unified)).toBe('/sys/fs/cgroup');
    expect(cgroup2Mount(hybrid)).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2Mount('32 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw\n')).toBeUndefined();
  });

  it('one subtree name per network namespace', () => {
    expect(appsBaseName('/run/tunroute')).toBe('tunroute');
    expect(appsBaseName('/run/tunroute/netns/lab1')).toBe('tunroute-netns-lab1');
    expect(appsBaseName('/var/lib/x')).toBe('tunroute');
  });
});
