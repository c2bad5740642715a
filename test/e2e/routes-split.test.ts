/**
 * Split tunnels end to end (routes-lab.ts): only the listed CIDRs go through the proxy; a
 * 10,000-CIDR file is applied and removed within 2 s each; journals live per network namespace.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { e2eAvailable, ROOT } from '../helpers/e2e.js';
import { measureRouteApply, syntheticCidrs } from '../../tools/bench/measure-routes.js';
import { CLIENT, PROXY, REMOTES, SOCKS, cli, createRoutesLab, fullSnapshot, logged, seenAs, up, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('routes: split tunnel');

describe.skipIf(!run)('split tunnel (lab)', () => {
  let l: RoutesLab;
  beforeEach(async () => {
    l = await createRoutesLab();
  });
  afterEach(async () => {
    await l?.lab.destroy();
  });

  it('sends only the listed CIDRs through the proxy', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY, '--route', '203.0.113.0/24', '--route', '192.0.2.0/25', '--exclude', '192.0.2.0/27']);
    expect(await logged(proc, /routes applied/)).toMatchObject({ mode: 'split', table: 'main', routes: 3, ipv6: 'untouched' });
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS); // 203.0.113.10: listed
    expect(await seenAs(l, REMOTES[1])).toBe(CLIENT); // 198.51.100.20: not listed
    expect(await seenAs(l, REMOTES[2])).toBe(CLIENT); // 192.0.2.30: inside the excluded /27
    const routes = (await l.c.exec(['ip', 'route', 'show', 'proto', '211'])).stdout;
    expect(routes).toBe('192.0.2.32/27 dev tun0 scope link \n192.0.2.64/26 dev tun0 scope link \n203.0.113.0/24 dev tun0 scope link \n');
    expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('applies and removes a 10,000-CIDR file within 2 s each', async () => {
    const before = await fullSnapshot(l.c);
    const file = join(l.lab.tmpDir, 'split-10k.txt');
    writeFileSync(file, `# 10,000 CIDRs\n${syntheticCidrs(10_000, 7).join('\n')}\n`);
    const proc = await up(l, ['--proxy', PROXY, '--route-file', file, '--no-watchdog']);
    const applied = await logged(proc, /routes applied/);
    expect(applied.routes).toBe(10_000);
    expect(Number((await l.c.sh('ip route show proto 211 | wc -l')).stdout)).toBe(10_000);
    expect(applied.applyMs as number).toBeLessThan(2000);
    expect(await seenAs(l, REMOTES[0])).toBe(CLIENT);
    expect(await proc.stop('SIGTERM', 15_000)).toEqual({ code: 0, signal: null });
    const removed = await logged(proc, /routes removed/);
    expect(removed.removeMs as number).toBeLessThan(2000);
    expect(await fullSnapshot(l.c)).toBe(before);
    process.stdout.write(`\n[routes] 10,000 CIDRs through tunroute up: journal ${String(applied.journalMs)} ms + apply ${String(applied.applyMs)} ms, remove ${String(removed.removeMs)} ms\n`);
  });

  it('measureRouteApply (for bench): 10,000 CIDRs in a namespace of its own', async () => {
    const m = await measureRouteApply(10_000);
    expect(m).toMatchObject({ cidrs: 10_000, kernelRoutesAfterApply: m.changes, kernelRoutesAfterRemove: 0 });
    expect(m.applyMs).toBeLessThan(2000);
    expect(m.removeMs).toBeLessThan(2000);
    process.stdout.write(`\n[routes] measureRouteApply(10000): ${JSON.stringify(m)}\n`);
  });

  it('keeps its journal per network namespace by default, and down finds it there', async () => {
    const nsDir = `/run/tunroute/netns/${l.c.name}`;
    const proc = l.c.spawn(['node', `${ROOT}dist/cli/main.js`, 'up', '--proxy', PROXY, '--no-watchdog', '--control', join(l.lab.tmpDir, 'ctl.sock')], { name: 'tunroute-default-dir' });
    await proc.waitForLine(/"msg":"tunroute is up"/, 20_000);
    expect(existsSync(join(nsDir, 'dev-tun0', 'routes-tun0.json'))).toBe(true);
    expect(existsSync('/run/tunroute/routes-tun0.json')).toBe(false);
    await proc.stop('SIGKILL');
    const down = await cli(l, ['down']);
    expect(down.stdout).toContain('tun0: removed the');
    expect(existsSync(nsDir)).toBe(false);
  });
});
