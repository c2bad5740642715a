/**
 * Full tunnel end to end, each test in a lab of its own (see routes-lab.ts): three unrelated
 * remote addresses are reached through the SOCKS server while tunroute's own connection to it
 * goes directly (no loop); the LAN and an excluded user go direct; IPv6 is blocked; `why`
 * explains it; a new default route is followed; and afterwards every routing table and rule
 * is byte-identical to before `up`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { e2eAvailable } from '../helpers/e2e.js';
import { CLIENT, GW2, waitFor, LAN_HOST, PROXY, REMOTES, SOCKS, V6_REMOTE, cli, createRoutesLab, fullSnapshot, logged, seenAs, up, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('routes: full tunnel');

describe.skipIf(!run)('full tunnel (lab)', () => {
  let l: RoutesLab;
  beforeEach(async () => {
    l = await createRoutesLab();
  });
  afterEach(async () => {
    await l?.lab.destroy();
  });

  it('carries three remote addresses through the SOCKS server, reaches the SOCKS server directly, and gives everything back', async () => {
    const before = await fullSnapshot(l.c);
    for (const r of REMOTES) expect(await seenAs(l, r)).toBe(CLIENT);
    expect((await l.c.exec(['ping', '-6', '-c', '1', '-W', '2', V6_REMOTE], { allowFail: true })).code).toBe(0);

    const proc = await up(l, ['--proxy', PROXY, '--exclude-uid', '65534']);
    const applied = await logged(proc, /routes applied/);
    expect(applied).toMatchObject({ mode: 'full', table: 7300, ipv6: 'guarded', killSwitch: false });

    // Through tun0 and the proxy: the server sees the proxy's address.
    for (const r of REMOTES) expect(await seenAs(l, r), r).toBe(SOCKS);
    // No loop: the kernel routes the proxy's address the host's way, and tunroute's own
    // connection to it leaves from the LAN address, not from tun0's.
    expect((await l.c.exec(['ip', 'route', 'get', SOCKS])).stdout).toContain(`via 192.168.50.1 dev ${l.c0}`);
    // (A slow download keeps one flow, and so tunroute's upstream connection, open.)
    const slow = l.c.spawn(['curl', '-sS', '--limit-rate', '20k', '-o', '/dev/null', `http://${REMOTES[0]}:8080/zero/100000000`], { name: 'slow-curl' });
    const ss = await waitFor('tunroute connected to the proxy', async () => {
      const out = (await l.c.exec(['ss', '-Htnp', 'state', 'established', 'dst', `${SOCKS}:1080`])).stdout;
      return out.includes('node') ? out : undefined;
    });
    await slow.stop();
    expect(ss).toContain(`${CLIENT}:`);
    expect(ss).not.toContain('198.18.');
    // The SOCKS server itself stays reachable directly.
    const direct = await l.c.exec(['curl', '-sS', '--max-time', '5', '--socks5', `${SOCKS}:1080`, `http://${REMOTES[0]}:8080/ip`]);
    expect(direct.stdout.trim()).toBe(SOCKS);
    // The LAN stays direct; the excluded user goes direct.
    expect(await seenAs(l, LAN_HOST)).toBe(CLIENT);
    expect(await seenAs(l, REMOTES[1], { uid: 65534 })).toBe(CLIENT);
    // IPv6 leak guard: refused at once, not timed out.
    const ping6 = await l.c.exec(['ping', '-6', '-c', '1', '-W', '2', V6_REMOTE], { allowFail: true });
    expect(ping6.code).not.toBe(0);
    expect(ping6.stderr + ping6.stdout).toMatch(/No route to host|unreachable/i);

    // why, against the running tunroute.
    const w1 = await cli(l, ['why', `${REMOTES[2]}:8080`, '--state-dir', l.stateDir]);
    expect(w1.stdout).toContain(`tcp to ${REMOTES[2]}:8080 enters tun0: route`);
    expect(w1.stdout).toContain("goes to the default outbound 'proxy'");
    expect(w1.stdout).toMatch(/kernel \(ip route get 192\.0\.2\.30\): 192\.0\.2\.30 dev tun0 table 7300/);
    const w2 = await cli(l, ['why', `${SOCKS}:1080`, '--state-dir', l.stateDir]);
    expect(w2.stdout).toContain(`does not enter tun0: ${SOCKS}/32 is kept direct (upstream 'proxy'`);

    expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await fullSnapshot(l.c)).toBe(before);
    for (const r of REMOTES) expect(await seenAs(l, r)).toBe(CLIENT);
  });

  it('follows a new default route: the new LAN goes direct, the proxy is reached over the new uplink', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY]);
    expect((await l.c.exec(['ip', 'route', 'get', GW2])).stdout).toContain('dev tun0');

    await l.c.exec(['ip', 'route', 'replace', 'default', 'via', GW2, 'dev', l.c1]);
    const changed = await logged(proc, /default route changed/);
    expect(changed).toMatchObject({ defaultRoute: { dev: l.c1, via: GW2 }, lan: ['192.168.70.0/24'] });
    expect(JSON.stringify(changed.upstreams)).toContain(`via ${GW2} dev ${l.c1}`);
    expect((await l.c.exec(['ip', 'route', 'get', GW2])).stdout).toContain(`dev ${l.c1}`);
    expect((await l.c.exec(['ip', 'route', 'get', LAN_HOST])).stdout).toContain('dev tun0');
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);

    // And back; then the host is as it was.
    await l.c.exec(['ip', 'route', 'replace', 'default', 'via', '192.168.50.1', 'dev', l.c0]);
    await proc.waitForLine(/"msg":"default route changed \(now via 192\.168\.50\.1/, 10_000);
    expect(await seenAs(l, LAN_HOST)).toBe(CLIENT);
    expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('--dry-run and check print the plan and change nothing', async () => {
    const before = await fullSnapshot(l.c);
    const dry = await cli(l, ['up', '--dry-run', '--proxy', PROXY, '--state-dir', l.stateDir]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('device tun0 — full tunnel');
    expect(dry.stdout).toMatch(new RegExp(`\n  - 192\\.168\\.50\\.0/24 +LAN on ${l.c0} \\(default route via 192\\.168\\.50\\.1\\)\n`));
    expect(dry.stdout).toContain(`  - ${SOCKS}/32       upstream 'proxy' (socks5 ${SOCKS}:1080): tunroute's own connections`);
    expect(dry.stdout).toContain('  ip rule add lookup 7300 priority 7301 protocol 211');
    expect(await fullSnapshot(l.c)).toBe(before);
  });
});
