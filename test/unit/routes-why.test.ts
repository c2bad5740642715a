/** `tunroute why`: route plan + router, against a config or a journal (fake host, no root). */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { explainDestination, parseDestination, whyFromConfig, whyFromJournal } from '../../src/routes/why.js';
import { planRoutes, type ExplainData } from '../../src/routes/plan.js';
import type { HostProbe, NetworkView, RouteEnv } from '../../src/routes/host.js';
import { createJournal, journalPath } from '../../src/routes/journal.js';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { Router } from '../../src/router/router.js';
import { TunrouteError } from '../../src/errors.js';
import type { Config } from '../../src/config/schema.js';
import { parseCidr } from '../../src/net/ipv4.js';

const LAN: NetworkView = { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: true };
const ENV: RouteEnv = { network: LAN, upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }], files: new Map() };
const decider = (e: ExplainData): Router => new Router({ rules: e.rules, defaultOutbound: e.defaultOutbound });

function explain(flags: FlagValues, rules: Config['rules'] = []): ExplainData {
  return planRoutes({ ...loadConfig({ flags }), rules }, ENV).explain;
}

const host: HostProbe = {
  network: async () => LAN,
  resolve: async () => ['203.0.113.5'],
  readFile: async () => '',
  tableInUse: async () => undefined,
  routeGet: async (a) => `${a} dev tun0 table 7300 src 198.18.0.1 uid 0`,
};

describe('parseDestination', () => {
  it('takes an address, with or without a port, IPv4 or IPv6', () => {
    expect(parseDestination('203.0.113.7')).toEqual({ ip: '203.0.113.7', proto: 'tcp' });
    expect(parseDestination('203.0.113.7:443', 'udp')).toEqual({ ip: '203.0.113.7', port: 443, proto: 'udp' });
    expect(parseDestination('2001:db8::1')).toEqual({ ip: '2001:db8::1', proto: 'tcp' });
    expect(parseDestination('[2001:db8::1]:53')).toEqual({ ip: '2001:db8::1', port: 53, proto: 'tcp' });
  });
  it('refuses names and bad ports in one sentence', () => {
    expect(() => parseDestination('example.com:80')).toThrow(TunrouteError);
    expect(() => parseDestination('1.2.3.4:70000')).toThrow('"1.2.3.4:70000" is not a destination: write an address, optionally with a port, like 203.0.113.7 or 203.0.113.7:443.');
  });
});

describe('explainDestination', () => {
  const full = explain({ proxy: 'socks5://203.0.113.5:1080', excludeUid: [1000] }, [{ cidrs: [parseCidr('198.51.100.0/24')!], protocol: 'tcp', ports: [22], outbound: 'block' }]);

  it('a remote address enters the device, by the full-tunnel route, to the proxy', () => {
    const a = explainDestination(full, parseDestination('198.51.100.9:443'), decider(full));
    expect(a.enters).toBe(true);
    expect(a.outbound?.outbound).toBe('proxy');
    expect(a.text).toBe(
      [
        "tcp to 198.51.100.9:443 enters tun0: route 196.0.0.0/6 dev tun0 (table 7300, ip rule priority 7301), because 0.0.0.0/0 (full tunnel (a proxy and no routes given)) includes it and no exclusion covers it. Except traffic of uid 1000: it never enters tun0 (ip rule priority 7300).",
        "then: tcp to 198.51.100.9:443 goes to the default outbound 'proxy': no rule matches. Not rule 0 (198.51.100.0/24): the port is not in its list.",
      ].join('\n'),
    );
  });
  it('the rule decides the outbound', () => {
    const a = explainDestination(full, parseDestination('198.51.100.9:22'), decider(full));
    expect(a.outbound?.outbound).toBe('block');
  });
  it("the upstream's own address stays direct: no loop", () => {
    const a = explainDestination(full, parseDestination('203.0.113.5:1080'), decider(full));
    expect(a.enters).toBe(false);
    expect(a.text).toBe(
      "tcp to 203.0.113.5:1080 does not enter tun0: 203.0.113.5/32 is kept direct (upstream 'proxy' (socks5 203.0.113.5:1080): tunroute's own connections), although 0.0.0.0/0 (full tunnel (a proxy and no routes given)) includes it. The host's own routes carry it.",
    );
  });
  it('the LAN stays direct', () => {
    expect(explainDestination(full, parseDestination('192.168.1.20')).text).toContain('192.168.1.0/24 is kept direct (LAN on eth0 (default route via 192.168.1.1))');
  });
  it('split tunnel: outside the includes', () => {
    const e = explain({ route: ['10.0.0.0/8'], exclude: ['10.5.0.0/16'] });
    expect(explainDestination(e, parseDestination('8.8.8.8')).text).toBe(
      "tcp to 8.8.8.8 does not enter tun0: no included CIDR contains it (split tunnel: only routes.include and includeFiles enter it). The host's own routes carry it.",
    );
    expect(explainDestination(e, parseDestination('10.5.1.1')).text).toContain('10.5.0.0/16 is kept direct (routes.exclude[0]), although 10.0.0.0/8 (routes.include[0]) includes it');
    expect(explainDestination(e, parseDestination('10.6.1.1')).text).toContain('enters tun0: route 10.6.0.0/15 dev tun0 (main table), because 10.0.0.0/8 (routes.include[0])');
  });
  it('IPv6: blocked by the guard, except link-local', () => {
    expect(explainDestination(full, parseDestination('[2001:db8::1]:443')).text).toContain('is blocked: the IPv6 leak guard makes IPv6 unreachable (table 7300, ip rule priority 7301)');
    expect(explainDestination(full, parseDestination('fe80::1')).text).toContain('does not enter tun0: tunroute carries IPv4 only');
  });
});

describe('why against a config or the running tunroute', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tunroute-why-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('from a config', async () => {
    const a = await whyFromConfig(loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080' } }), parseDestination('1.1.1.1:53', 'udp'), decider, host);
    expect(a.enters).toBe(true);
    expect(a.kernel).toBeUndefined();
  });

  it('from the journal, with the kernel as witness', async () => {
    const p = planRoutes(loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080' } }), ENV);
    createJournal(journalPath(dir, 'tun0'), { version: 1, tool: 'tunroute', dev: 'tun0', pid: process.pid, pidStart: '1', startedAt: 'now', killSwitch: false, changes: p.changes, explain: p.explain });
    const a = await whyFromJournal(dir, undefined, parseDestination('1.1.1.1'), decider, host);
    expect(a.enters).toBe(true);
    expect(a.text).toContain('\nkernel (ip route get 1.1.1.1): 1.1.1.1 dev tun0 table 7300 src 198.18.0.1 uid 0');
    expect(a.text).toContain(`note: tunroute (pid ${process.pid}) no longer runs; its journal remains: run tunroute down.`);
  });

  it('says when nothing runs', async () => {
    await expect(whyFromJournal(dir, undefined, parseDestination('1.1.1.1'), decider, host)).rejects.toThrow(`No running tunroute (no journal in ${dir}): ask about a config with -c FILE.`);
  });
});
