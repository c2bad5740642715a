import { describe, expect, it } from 'vitest';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import { diffConfigs } from '../../src/config/reload-diff.js';

const KEY = 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
const PEER = 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=';
const base: ConfigInput = {
  proxy: 'socks5://10.0.0.1:1080',
  routes: { include: ['10.1.0.0/16'] },
  outbounds: [
    { name: 'office', type: 'socks5', url: 'socks5://proxy.office.example:1080' },
    { name: 'wg', type: 'wireguard', privateKey: KEY, peers: [{ publicKey: PEER, endpoint: '10.0.0.3:51820', allowedIPs: ['10.8.0.0/16'] }] },
  ],
  rules: [{ cidrs: ['10.1.2.0/24'], outbound: 'office' }],
};
const cfg = (over: Partial<ConfigInput> = {}) => configSchema.parse({ ...base, ...over });

describe('diffConfigs', () => {
  it('the same config changes nothing', () => {
    expect(diffConfigs(cfg(), cfg())).toEqual({ ok: true, diff: { routes: false, rules: false, outbounds: { added: [], removed: [], changed: [] }, any: false } });
  });

  it('routes, rules and outbounds: each difference is named, the rest stays', () => {
    const next = cfg({
      proxy: 'socks5://10.0.0.9:1080',
      routes: { include: ['10.1.0.0/16', '10.2.0.0/16'] },
      outbounds: [base.outbounds![1], { name: 'lab', type: 'block' }],
      rules: [{ cidrs: ['10.1.2.0/24'], outbound: 'lab' }],
    });
    expect(diffConfigs(cfg(), next)).toEqual({ ok: true, diff: { routes: true, rules: true, outbounds: { added: ['lab'], removed: ['office'], changed: ['proxy'] }, any: true } });
  });

  it('a new password is a changed outbound; a default outbound is a rules change', () => {
    const d = diffConfigs(cfg(), cfg({ outbounds: [{ ...base.outbounds![0], url: 'socks5://u:p@proxy.office.example:1080' } as never, base.outbounds![1]], defaultOutbound: 'office' }));
    expect(d).toMatchObject({ ok: true, diff: { routes: false, rules: true, outbounds: { changed: ['office'] } } });
  });

  it('what only a restart applies is refused with one sentence naming it', () => {
    const tun = diffConfigs(cfg(), cfg({ tun: { name: 'tun1' } }));
    expect(tun).toEqual({ ok: false, reason: expect.stringMatching(/^the new config changes "tun", which only a restart applies .*; the running config stays$/) as unknown });
    expect(diffConfigs(cfg(), cfg({ dns: { mode: 'hijack' } }))).toMatchObject({ ok: false, reason: expect.stringContaining('"dns"') as unknown });
    const wg = diffConfigs(cfg(), cfg({ outbounds: [base.outbounds![0], { ...base.outbounds![1], mtu: 1380 } as never] }));
    expect(wg).toMatchObject({ ok: false, reason: expect.stringContaining('WireGuard tunnel "wg"') as unknown });
  });

  it('a new log level alone is a change (applied in place)', () => {
    expect(diffConfigs(cfg(), cfg({ log: { level: 'debug' } }))).toMatchObject({ ok: true, diff: { any: true, routes: false, rules: false } });
  });
});
