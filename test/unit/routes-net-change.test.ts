import { describe, expect, it } from 'vitest';
import { NetChangeDetector, parseMonitorLine, pathKey, upstreamChanges, type NetClocks } from '../../src/routes/net-change.js';

function fakeClocks(): NetClocks & { advance(monoMs: number, wallMs: number): void } {
  let mono = 1000;
  let wall = Date.UTC(2026, 0, 1);
  return { mono: () => mono, wall: () => wall, advance: (m, w) => ((mono += m), (wall += w)) };
}

// Lines as `ip -4 -o monitor link address route` printed them on this kernel.
const LINK_DOWN = '3: va@vb: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN group default \\    link/ether 1e:93:df:cc:ec:0f brd ff:ff:ff:ff:ff:ff';
const LINK_UP = '3: va@vb: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default \\    link/ether 1e:93:df:cc:ec:0f brd ff:ff:ff:ff:ff:ff';
const NO_CARRIER = '3: va@vb: <NO-CARRIER,BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN group default \\    link/ether 1e:93';
const ADDR_ADD = '3: va    inet 10.9.0.1/24 scope global va\\       valid_lft forever preferred_lft forever';
const ADDR_DEL = 'Deleted 3: va    inet 10.9.0.1/24 scope global va\\       valid_lft forever preferred_lft forever';

describe('parseMonitorLine', () => {
  it('reads links, addresses and routes, and skips what never matters', () => {
    expect(parseMonitorLine(LINK_DOWN)).toEqual({ kind: 'link-down', dev: 'va', detail: 'down' });
    expect(parseMonitorLine(LINK_UP)).toEqual({ kind: 'link-up', dev: 'va', detail: 'up' });
    expect(parseMonitorLine(NO_CARRIER)?.kind).toBe('link-up');
    expect(parseMonitorLine(ADDR_ADD)).toEqual({ kind: 'addr-add', dev: 'va', detail: '10.9.0.1/24' });
    expect(parseMonitorLine(ADDR_DEL)).toEqual({ kind: 'addr-del', dev: 'va', detail: '10.9.0.1/24' });
    expect(parseMonitorLine('default via 10.9.0.2 dev va ')).toEqual({ kind: 'route', dev: 'va', detail: 'default via 10.9.0.2 dev va' });
    expect(parseMonitorLine('local 10.9.0.1 dev va table local proto kernel scope host src 10.9.0.1 ')).toBeUndefined();
    expect(parseMonitorLine('Deleted broadcast 10.9.0.255 dev va table local proto kernel scope link src 10.9.0.1')).toBeUndefined();
    expect(parseMonitorLine('0.0.0.0/1 dev tun0 table 7300 proto 211 scope link')).toBeUndefined();
    expect(parseMonitorLine('   ')).toBeUndefined();
  });
});

describe('NetChangeDetector', () => {
  it('decides a resync for each change; names are resolved again when a link comes up or an address appears', () => {
    const d = new NetChangeDetector({ ownDev: 'tun0' }, fakeClocks());
    expect(d.line('default via 10.9.0.2 dev va')).toMatchObject({ resync: true, reresolve: false });
    expect(d.line(LINK_DOWN)).toMatchObject({ resync: true, reresolve: false, event: { kind: 'link-down', dev: 'va' } });
    expect(d.line(LINK_DOWN)).toEqual({ resync: false }); // the same state again
    expect(d.line(LINK_UP)).toMatchObject({ resync: true, reresolve: true });
    expect(d.line(LINK_UP)).toEqual({ resync: false });
    expect(d.line(ADDR_ADD)).toMatchObject({ resync: true, reresolve: true });
    expect(d.line(ADDR_DEL)).toMatchObject({ resync: true, reresolve: false });
    expect(d.line(undefined)).toMatchObject({ resync: true, event: { kind: 'route' } });
  });

  it("ignores tunroute's own device and a first 'up' of a link it never saw down", () => {
    const d = new NetChangeDetector({ ownDev: 'tun0' }, fakeClocks());
    expect(d.line('5: tun0: <POINTOPOINT,UP,LOWER_UP> mtu 1500 state UNKNOWN')).toEqual({ resync: false });
    expect(d.line('5: tun0    inet 198.18.0.1/15 scope global tun0')).toEqual({ resync: false });
    expect(d.line(LINK_UP)).toEqual({ resync: false });
    expect(d.events()).toEqual([]);
  });

  it('a jump of the wall clock ahead of the monotonic one is a resume; ordinary ticks and a clock set back are not', () => {
    const c = fakeClocks();
    const d = new NetChangeDetector({ ownDev: 'tun0', resumeJumpMs: 3000 }, c);
    c.advance(1000, 1000);
    expect(d.tick()).toEqual({ resync: false });
    c.advance(1000, 1000 - 60_000); // NTP stepped the wall clock back
    expect(d.tick()).toEqual({ resync: false });
    c.advance(1000, 1000 + 2000); // drift below the threshold
    expect(d.tick()).toEqual({ resync: false });
    c.advance(1000, 1000 + 42_000); // slept 42 s
    const r = d.tick();
    expect(r).toMatchObject({ resync: true, reresolve: true, event: { kind: 'resume' } });
    expect(d.events().at(-1)?.detail).toMatch(/^clocks 42 s apart/);
  });

  it('keeps only the last events, oldest first, with wall-clock times; notes decide nothing', () => {
    const c = fakeClocks();
    const d = new NetChangeDetector({ ownDev: 'tun0', ringSize: 3 }, c);
    for (let i = 0; i < 5; i++) {
      c.advance(10, 10);
      d.line(`default via 10.9.0.${i} dev va`);
    }
    d.note({ kind: 'upstream', detail: 'proxy now 10.0.0.9' });
    const ev = d.events();
    expect(ev.map((e) => e.detail)).toEqual(['default via 10.9.0.3 dev va', 'default via 10.9.0.4 dev va', 'proxy now 10.0.0.9']);
    expect(ev[0].at).toBe(new Date(Date.UTC(2026, 0, 1) + 40).toISOString());
  });
});

describe('upstreamChanges', () => {
  const path = (upstream: string, addr: string, route: string) => ({ upstream, addr, route });
  it('an upstream moved when the source address to it changed (not for a new gateway), readdressed when its name resolves elsewhere', () => {
    const before = {
      addrs: new Map([['proxy', ['10.0.0.1']], ['office', ['10.0.0.2']], ['still', ['10.0.0.3']]]),
      paths: [path('proxy', '10.0.0.1', '10.0.0.1 via 192.168.50.1 dev c0 src 192.168.50.2 uid 0'), path('office', '10.0.0.2', '10.0.0.2 via 192.168.50.1 dev c0 src 192.168.50.2'), path('still', '10.0.0.3', '10.0.0.3 via 192.168.50.1 dev c0 src 192.168.50.2')],
    };
    const after = {
      addrs: new Map([['proxy', ['10.0.0.1']], ['office', ['10.0.0.9']], ['still', ['10.0.0.3']]]),
      paths: [path('proxy', '10.0.0.1', '10.0.0.1 via 192.168.70.1 dev c1 src 192.168.70.2 uid 0'), path('office', '10.0.0.9', '10.0.0.9 via 192.168.50.1 dev c0 src 192.168.50.2'), path('still', '10.0.0.3', '10.0.0.3 via 192.168.50.254 dev c0 src 192.168.50.2')],
    };
    expect(upstreamChanges(before, after)).toEqual([
      { upstream: 'proxy', readdressed: false, moved: true },
      { upstream: 'office', readdressed: true, moved: false },
    ]);
  });

  it('an unreachable address counts as a path of its own', () => {
    expect(pathKey('error: RTNETLINK answers: Network is unreachable')).toBe('unreachable');
    expect(pathKey('10.0.0.1 via 1.2.3.4 dev eth0 src 5.6.7.8 uid 0')).toBe('5.6.7.8');
  });
});
