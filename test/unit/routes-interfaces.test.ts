/**
 * Container and VM bridges kept out of the device both ways, `routes.excludeInterfaces`, and
 * gateway mode (`routes.fromInterfaces`), issue 14 items 2 and 3: the host probe's reading of
 * `ip -j -d -4 addr`, and the plan's rules and exclusions.
 */
import { describe, expect, it } from 'vitest';
import { describePlan, interfacesOf, planRoutes, prefixesContain, toIpCommand, type RoutePlan } from '../../src/routes/plan.js';
import { parseInterfaces, type NetworkView, type RouteEnv } from '../../src/routes/host.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJournal } from '../../src/routes/journal.js';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import type { ResolvedUpstream } from '../../src/routes/upstreams.js';

// What `ip -j -d -4 addr show` prints on a laptop with Docker, libvirt and a compose network.
const ADDR_JSON = JSON.stringify([
  { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
  { ifindex: 2, ifname: 'wlan0', addr_info: [{ family: 'inet', local: '192.168.1.23', prefixlen: 24 }] },
  { ifindex: 3, ifname: 'docker0', linkinfo: { info_kind: 'bridge' }, addr_info: [{ family: 'inet', local: '172.17.0.1', prefixlen: 16 }] },
  { ifindex: 4, ifname: 'br-1a2b3c4d5e6f', linkinfo: { info_kind: 'bridge' }, addr_info: [{ family: 'inet', local: '172.18.0.1', prefixlen: 16 }] },
  { ifindex: 5, ifname: 'virbr0', linkinfo: { info_kind: 'bridge' }, addr_info: [{ family: 'inet', local: '192.168.122.1', prefixlen: 24 }] },
  { ifindex: 6, ifname: 'tun0', linkinfo: { info_kind: 'tun' }, addr_info: [{ family: 'inet', local: '198.18.0.1', prefixlen: 15 }] },
  { ifindex: 7, ifname: 'eth1', addr_info: [{ family: 'inet', local: '10.20.0.1', prefixlen: 24 }, { family: 'inet', local: '10.20.0.9', prefixlen: 24 }] },
  { ifindex: 8, ifname: 'bad name;reboot', addr_info: [{ family: 'inet', local: '10.30.0.1', prefixlen: 24 }] },
]);

const NET: NetworkView = {
  defaultRoute: { dev: 'wlan0', via: '192.168.1.1' },
  lan: ['192.168.1.0/24'],
  ipv6: true,
  interfaces: parseInterfaces(ADDR_JSON),
  forwarding: true,
};
const PROXY_UP: ResolvedUpstream = { name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] };
const FULL: FlagValues = { proxy: 'socks5://203.0.113.5:1080' };

function plan(flags: FlagValues, network: NetworkView = NET): RoutePlan {
  const env: RouteEnv = { network, upstreams: [PROXY_UP], files: new Map() };
  return planRoutes(loadConfig({ flags }), env);
}
const rules = (p: RoutePlan): string[] => p.changes.filter((c) => c.op === 'rule').map((c) => toIpCommand(c, 'apply'));
const inTun = (p: RoutePlan, ip: string): boolean => prefixesContain(p.prefixes, ipToU32(ip)!) !== undefined;

describe('parseInterfaces', () => {
  it('reads names, kinds and normalized subnets, and skips a name ip -batch could misread', () => {
    expect(parseInterfaces(ADDR_JSON)).toEqual([
      { name: 'lo', subnets: ['127.0.0.0/8'] },
      { name: 'wlan0', subnets: ['192.168.1.0/24'] },
      { name: 'docker0', kind: 'bridge', subnets: ['172.17.0.0/16'] },
      { name: 'br-1a2b3c4d5e6f', kind: 'bridge', subnets: ['172.18.0.0/16'] },
      { name: 'virbr0', kind: 'bridge', subnets: ['192.168.122.0/24'] },
      { name: 'tun0', kind: 'tun', subnets: ['198.18.0.0/15'] },
      { name: 'eth1', subnets: ['10.20.0.0/24'] },
    ]);
  });
  it('reads nothing from damaged output', () => {
    expect(parseInterfaces('')).toEqual([]);
    expect(parseInterfaces('{not json')).toEqual([]);
    expect(parseInterfaces('{"ifname": 3}')).toEqual([]);
  });
});

describe('containers and VMs kept out (routes.containers: auto)', () => {
  const p = plan(FULL);

  it('keeps every bridge out of a full tunnel both ways, never the uplink, loopback or the device', () => {
    expect(interfacesOf(loadConfig({ flags: FULL }), NET).keptOut.map((k) => k.name)).toEqual(['docker0', 'br-1a2b3c4d5e6f', 'virbr0']);
    for (const ip of ['172.17.0.2', '172.18.5.5', '192.168.122.10']) expect(inTun(p, ip), ip).toBe(false);
    for (const ip of ['10.20.0.5', '1.1.1.1']) expect(inTun(p, ip), ip).toBe(true);
    // What they forward (a container's own traffic, a published port's replies) keeps the main table.
    expect(rules(p)).toEqual([
      'ip rule add iif docker0 lookup main priority 7300 protocol 211',
      'ip rule add iif br-1a2b3c4d5e6f lookup main priority 7300 protocol 211',
      'ip rule add iif virbr0 lookup main priority 7300 protocol 211',
      'ip rule add lookup 7300 priority 7301 protocol 211',
      'ip -6 rule add iif docker0 lookup main priority 7300 protocol 211',
      'ip -6 rule add iif br-1a2b3c4d5e6f lookup main priority 7300 protocol 211',
      'ip -6 rule add iif virbr0 lookup main priority 7300 protocol 211',
      'ip -6 rule add lookup 7300 priority 7301 protocol 211',
    ]);
    expect(p.direct).toContainEqual({ cidr: '172.17.0.0/16', source: 'interface docker0, a bridge (routes.containers: auto)' });
  });

  it('says so in --dry-run, and undoes the rules it adds', () => {
    expect(describePlan(p)).toContain(
      'interfaces kept out both ways (ip rule priority 7300 iif → main table): docker0 (a bridge (routes.containers: auto)), br-1a2b3c4d5e6f (a bridge (routes.containers: auto)), virbr0 (a bridge (routes.containers: auto))',
    );
    expect(p.down.filter((c) => c.op === 'rule' && c.iif !== undefined)).toHaveLength(6);
  });

  it('knows container interfaces by name where the kind is not a bridge, and keeps nothing out with containers: off', () => {
    const net: NetworkView = { ...NET, interfaces: [{ name: 'cni0', subnets: ['10.88.0.0/16'] }, { name: 'vethab12cd', subnets: [] }, { name: 'eth1', subnets: ['10.20.0.0/24'] }] };
    expect(plan(FULL, net).keptOut.map((k) => k.name)).toEqual(['cni0', 'vethab12cd']);
    const off = planRoutes({ ...loadConfig({ flags: FULL }), routes: { ...loadConfig({ flags: FULL }).routes, containers: 'off' } }, { network: NET, upstreams: [PROXY_UP], files: new Map() });
    expect(off.keptOut).toEqual([]);
    expect(rules(off)).toEqual(['ip rule add lookup 7300 priority 7301 protocol 211', 'ip -6 rule add lookup 7300 priority 7301 protocol 211']);
  });

  it('--exclude-interface keeps out any interface by name or glob, the uplink too when named', () => {
    const q = plan({ ...FULL, excludeInterface: ['eth*'] });
    expect(q.keptOut).toContainEqual({ name: 'eth1', why: 'routes.excludeInterfaces[0]' });
    expect(inTun(q, '10.20.0.5')).toBe(false);
    expect(rules(q)).toContain('ip rule add iif eth1 lookup main priority 7300 protocol 211');
  });

  it('a split tunnel in the main table cannot keep forwarded traffic out, and says how to', () => {
    const s = plan({ ...FULL, route: ['172.17.0.0/16', '10.0.0.0/8'] });
    expect(s.table).toBe('main');
    expect(inTun(s, '172.17.0.2')).toBe(false);
    expect(inTun(s, '10.1.1.1')).toBe(true);
    expect(rules(s)).toEqual([]);
    expect(s.notes).toContain('routes are in the main table, so what docker0, br-1a2b3c4d5e6f, virbr0 forward to the routed CIDRs enters tun0 as well: set routes.table to a number to keep it out.');
    const t = plan({ ...FULL, route: ['10.0.0.0/8'], table: 7400 });
    expect(rules(t)).toContain('ip rule add iif docker0 lookup main priority 7300 protocol 211');
  });
});

describe('gateway mode (routes.fromInterfaces)', () => {
  it('lets what a bridge forwards into the device: no rule keeps it out', () => {
    const g = plan({ ...FULL, fromInterface: ['docker0'] });
    expect(g.gateway).toEqual(['docker0']);
    expect(rules(g)).not.toContain('ip rule add iif docker0 lookup main priority 7300 protocol 211');
    expect(rules(g)).toContain('ip rule add iif virbr0 lookup main priority 7300 protocol 211');
    expect(describePlan(g)).toContain('gateway mode: what docker0 forwards enters tun0 too (routes.fromInterfaces)');
    // Its own subnet stays direct: the replies to what it forwards must reach it, not loop.
    expect(inTun(g, '172.17.0.2')).toBe(false);
    expect(g.direct).toContainEqual({ cidr: '172.17.0.0/16', source: 'interface docker0, gateway mode (routes.fromInterfaces[0]): its own subnet' });
  });
  it('says when the host does not forward at all', () => {
    const g = plan({ ...FULL, fromInterface: ['br-*'] }, { ...NET, forwarding: false });
    expect(g.notes).toContain('gateway mode (br-1a2b3c4d5e6f): this host does not forward IPv4 (net.ipv4.ip_forward=0), so nothing arrives to carry: sysctl -w net.ipv4.ip_forward=1.');
  });
});

describe('the journal', () => {
  it('keeps an iif rule, and refuses an interface name ip -batch could misread', () => {
    const base = { version: 1, tool: 'tunroute', dev: 'tun0', pid: 5, startedAt: 'x', killSwitch: false };
    const dir = mkdtempSync(join(tmpdir(), 'tunroute-iif-'));
    try {
      const path = join(dir, 'routes-tun0.json');
      const rule = { op: 'rule', family: 4, priority: 7300, table: 'main', iif: 'docker0' };
      writeFileSync(path, JSON.stringify({ ...base, changes: [rule] }));
      expect(readJournal(path)?.changes).toEqual([rule]);
      writeFileSync(path, JSON.stringify({ ...base, changes: [{ ...rule, iif: 'docker0 lookup 1' }] }));
      expect(() => readJournal(path)).toThrow(/is damaged/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
