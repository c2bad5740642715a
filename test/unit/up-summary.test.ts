/**
 * Issue 15, item 6: `up` with nothing to do refuses in one sentence, and a running `up` says
 * what it does in a few lines (mode, what enters the device, which outbound), secrets left out.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { hasWork, refuseNothingToDo } from '../../src/config/work.js';
import { isTunrouteError } from '../../src/errors.js';
import { planRoutes } from '../../src/routes/plan.js';
import type { RouteEnv } from '../../src/routes/host.js';
import type { Config } from '../../src/config/schema.js';
import { upSummary } from '../../src/up-summary.js';

const ENV: RouteEnv = {
  network: { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false },
  upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }],
  files: new Map(),
};

const summaryOf = (flags: FlagValues, over: Partial<Config> = {}): ReturnType<typeof upSummary> => {
  const c = { ...loadConfig({ flags }), ...over };
  return upSummary(c, planRoutes(c, ENV));
};

describe('nothing to do', () => {
  it('is no proxy, no tunnel, no socks5 outbound and no route', () => {
    expect(hasWork(loadConfig({}))).toBe(false);
    expect(hasWork(loadConfig({ flags: { tun: 'tun9', mtu: 9000, dns: 'off' } }))).toBe(false);
    expect(hasWork(loadConfig({ flags: { route: ['10.0.0.0/8'] } }))).toBe(true);
    expect(hasWork(loadConfig({ flags: { proxy: 'socks5://127.0.0.1:1080' } }))).toBe(true);
    const c = loadConfig({});
    expect(hasWork({ ...c, routes: { ...c.routes, includeFiles: ['cidrs.txt'] } })).toBe(true);
    expect(hasWork({ ...c, outbounds: [{ name: 'b', type: 'block' }] })).toBe(false);
  });

  it('is refused in one sentence that names the flags that would give work', () => {
    let caught: unknown;
    try {
      refuseNothingToDo(loadConfig({}));
    } catch (e) {
      caught = e;
    }
    expect(isTunrouteError(caught) && caught.code).toBe('TR_NOTHING_TO_DO');
    const m = (caught as Error).message;
    for (const flag of ['--proxy', '--tunnel', '--route']) expect(m).toContain(flag);
    expect(m.split('. ')).toHaveLength(1);
    expect(m.endsWith('.')).toBe(true);
  });
});

describe('the summary once up', () => {
  it('full tunnel through a proxy, without its password', () => {
    const s = summaryOf({ proxy: 'socks5://alice:s3cret@203.0.113.5:1080' });
    expect(s.mode).toBe('full');
    expect(s.defaultOutbound).toBe('proxy');
    expect(s.outbounds).toEqual(['proxy']);
    expect(s.lines[0]).toMatch(/^full tunnel: everything enters tun0 except \d+ direct prefixes/);
    expect(s.lines[1]).toBe('outbound proxy: SOCKS5 proxy 203.0.113.5:1080 (the default)');
    expect(s.lines.join('\n')).not.toContain('s3cret');
    expect(s.lines.join('\n')).not.toContain('alice');
    const f = summaryOf({ proxy: 'socks5://203.0.113.5:1080', dns: 'fakeip' });
    expect(f.lines[2]).toBe('dns fakeip: names get addresses from 198.18.0.0/15 and their flows go out by name; other queries through the outbound that routes 1.1.1.1:53');
  });

  it('split tunnel with no upstream: the routed prefixes, and that the rest is refused', () => {
    const s = summaryOf({ route: ['10.66.1.0/24', '10.66.2.0/24', '10.67.0.0/16', '10.68.0.0/16'], tun: 'tr1' });
    expect(s.mode).toBe('split');
    expect(s.outbounds).toEqual([]);
    expect(s.lines).toEqual([
      'split tunnel: 4 prefixes enter tr1: 10.66.1.0/24, 10.66.2.0/24, 10.67.0.0/16 … and 1 more',
      'no upstream for the rest: flows that no rule sends elsewhere are refused (outbound block)',
    ]);
  });

  it('names a WireGuard tunnel by its peer, counts rules per outbound, and says the DNS mode', () => {
    const c = loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080', route: ['10.9.0.0/16'], dns: 'hijack' } });
    const s = summaryOf(
      { proxy: 'socks5://203.0.113.5:1080', route: ['10.9.0.0/16'], dns: 'hijack' },
      {
        outbounds: [
          { name: 'wg', type: 'wireguard', privateKey: 'k', mtu: 1420, peers: [{ publicKey: 'p', endpoint: { kind: 'ipv4', host: '198.51.100.1', port: 51820 }, allowedIPs: [] }] },
        ] as unknown as Config['outbounds'],
        rules: [{ cidrs: [{ addr: 0x0a090000, prefix: 16 }], outbound: 'wg' }],
        dns: c.dns,
      },
    );
    expect(s.outbounds).toEqual(['proxy', 'wg']);
    expect(s.lines).toEqual([
      'split tunnel: 1 prefix enters tun0: 10.9.0.0/16',
      'outbound proxy: SOCKS5 proxy 203.0.113.5:1080 (the default)',
      'outbound wg: WireGuard tunnel to 198.51.100.1:51820 (1 rule)',
      'dns hijack: queries routed into tun0 are answered from 1.1.1.1:53 through the outbound that routes 1.1.1.1:53',
    ]);
  });
});
