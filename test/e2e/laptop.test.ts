/**
 * Life on a laptop (issue 14), end to end in the routes lab (routes-lab.ts): the default route
 * moves to a second uplink while a transfer runs, the uplink goes down and up, the proxy's name
 * points elsewhere, and the config is reloaded without a restart. Timings are measured and
 * printed (stderr), never asserted tightly: the box is shared.
 *
 *   g: dante on 100.64.0.1:1080 ("proxy.lab" at first), microsocks on 100.64.0.2:1080 (bound
 *      to 100.64.0.2, so the HTTP server's /ip tells which proxy carried a request)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitForPort, type LabProcess } from '../../tools/lab/index.js';
import { CLI, SMALL_TCP_RMEM, e2eAvailable } from '../helpers/e2e.js';
import { CLIENT, GW, GW2, REMOTES, SOCKS, cli, createRoutesLab, logged, seenAs, waitFor, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('laptop: network changes and reload');
const SOCKS2 = '100.64.0.2';

/** Milliseconds until `ok()` first holds, polling every 50 ms (bounded). */
async function msUntil(ok: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (await ok()) return Math.round(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not within ${timeoutMs} ms`);
}

function figure(what: string, ms: number): void {
  process.stderr.write(`[laptop e2e] ${what}: ${ms} ms\n`);
}

describe.skipIf(!run)('laptop: network changes and reload (lab)', () => {
  let l: RoutesLab;
  let control: string;
  let hosts: string;

  beforeEach(async () => {
    l = await createRoutesLab();
    control = join(l.lab.tmpDir, 'laptop.sock');
    // Rate-limited downloads are reset here; small receive buffers let them see it in a second.
    await l.c.sysctl({ 'net.ipv4.tcp_rmem': SMALL_TCP_RMEM });
    await l.g.exec(['ip', 'addr', 'add', `${SOCKS2}/32`, 'dev', 'lo']);
    l.g.spawn(['microsocks', '-i', SOCKS2, '-p', '1080', '-b', SOCKS2], { name: 'microsocks-2' });
    await waitForPort(l.g, SOCKS2, 1080, 10_000);
    const etc = l.lab.etcOverlayDir(l.c);
    mkdirSync(etc, { recursive: true });
    hosts = join(etc, 'hosts');
    writeFileSync(hosts, `127.0.0.1 localhost\n${SOCKS} proxy.lab\n`);
  }, 60_000);
  afterEach(async () => {
    await l?.lab.destroy();
  });

  async function upWith(args: readonly string[]): Promise<LabProcess> {
    const proc = l.c.spawn(['node', CLI, 'up', '--state-dir', l.stateDir, '--control', control, ...args], { name: 'tunroute' });
    await proc.waitForLine(/"msg":"tunroute is up"/, 20_000);
    return proc;
  }

  const works = (addr: string, via: string) => async () => (await seenAs(l, addr)) === via;

  it('follows a new uplink, a link going down and up, and a proxy name that moves; dead flows get RST; status lists the events', async () => {
    const proc = await upWith(['--proxy', 'socks5://proxy.lab:1080']);
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);
    // For scale: one request through the proxy with nothing changing (a curl start included).
    figure('baseline: one request through the proxy', await msUntil(works(REMOTES[1], SOCKS)));

    // A transfer runs while the default route moves to the second uplink: its connection to the
    // proxy left from 192.168.50.2, which the new route no longer uses, so it is reset, not hung.
    const slow = l.c.spawn(['curl', '-sS', '--limit-rate', '100k', '-o', '/dev/null', `http://${REMOTES[0]}:8080/zero/100000000`], { name: 'slow-curl' });
    await waitFor('the transfer to start', async () => {
      const s = JSON.parse((await cli(l, ['status', '--json', '--control', control])).stdout) as { flows: Array<{ dst: string; bytesDown: number }> };
      return s.flows.some((f) => f.dst.startsWith(REMOTES[0]) && f.bytesDown > 0) ? true : undefined;
    });
    await l.c.exec(['ip', 'route', 'replace', 'default', 'via', GW2, 'dev', l.c1]);
    figure('new uplink: first new flow through the proxy after the route moved', await msUntil(works(REMOTES[1], SOCKS)));
    const ended = await slow.waitForExit(15_000).catch((e: unknown) => {
      process.stderr.write(proc.output().stdout.split('\n').filter((x) => /upstream|network|route|moved/.test(x)).join('\n') + '\n');
      throw e;
    });
    expect(ended.code).not.toBe(0); // reset (curl 56), within seconds
    expect(slow.output().stderr).toMatch(/reset|Recv failure|Failure when receiving/i);
    await logged(proc, /flows through a moved upstream reset/);

    // The uplink goes down (its routes vanish with it) and comes back (DHCP adds the route again).
    await l.c.exec(['ip', 'link', 'set', l.c1, 'down']);
    await proc.waitForLine(/"kind":"link-down"/, 10_000).catch(() => undefined);
    await l.c.exec(['ip', 'link', 'set', l.c1, 'up']);
    await l.c.exec(['ip', 'route', 'replace', 'default', 'via', GW2, 'dev', l.c1]);
    figure('link down and up: first new flow after the default route is back', await msUntil(works(REMOTES[2], SOCKS)));

    // The proxy's name now points at the other proxy; a new address on the uplink (a new network) makes tunroute ask again.
    writeFileSync(hosts, `127.0.0.1 localhost\n${SOCKS2} proxy.lab\n`);
    await l.c.exec(['ip', 'addr', 'add', '192.168.70.3/24', 'dev', l.c1]);
    figure('proxy name readdressed: first new flow through the new address after the event', await msUntil(works(REMOTES[0], SOCKS2)));
    // Its own connections go there directly (kept out of the tunnel), not into tun0.
    expect((await l.c.exec(['ip', 'route', 'get', SOCKS2])).stdout).not.toContain('tun0');

    const status = await cli(l, ['status', '--control', control]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/network +\d\d:\d\d:\d\d {2}route /);
    expect(status.stdout).toMatch(/network +\d\d:\d\d:\d\d {2}link-down /);
    expect(status.stdout).toContain(`upstream  proxy is now ${SOCKS2}`);
    const json = JSON.parse((await cli(l, ['status', '--json', '--control', control])).stdout) as { network: Array<{ kind: string }> };
    expect(json.network.length).toBeLessThanOrEqual(16);

    // Back to the first uplink; then the host is left as it was by stop.
    await l.c.exec(['ip', 'route', 'replace', 'default', 'via', GW, 'dev', l.c0]);
    expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await seenAs(l, REMOTES[0])).toBe(CLIENT);
  });

  it('reload applies only the difference: a download whose outbound stays survives, one whose outbound changed is reset; a broken config is refused', async () => {
    const file = join(l.lab.tmpDir, 'tunroute.yaml');
    const config = (officeProxy: string, routes: readonly string[]): string =>
      [
        `proxy: socks5://${SOCKS}:1080`,
        'outbounds:',
        `  - { name: office, type: socks5, url: "socks5://${officeProxy}:1080" }`,
        'rules:',
        `  - { cidrs: [${REMOTES[1]}/32], outbound: office }`,
        `routes: { include: [${routes.join(', ')}] }`,
        '',
      ].join('\n');
    writeFileSync(file, config(SOCKS2, [`${REMOTES[0]}/32`, `${REMOTES[1]}/32`]));
    const proc = await upWith(['-c', file]);
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);
    expect(await seenAs(l, REMOTES[1])).toBe(SOCKS2);
    expect(await seenAs(l, REMOTES[2])).toBe(CLIENT);

    // Two downloads that would run for hours at 300 kB/s: one through "proxy", one through
    // "office". The reset one sees its reset as soon as it has read the little its socket had
    // queued (SMALL_TCP_RMEM).
    const download = (remote: string, name: string): LabProcess =>
      l.c.spawn(['curl', '-sS', '--limit-rate', '300k', '--max-time', '120', '-o', '/dev/null', `http://${remote}:8080/zero/2000000000`], { name });
    const keep = download(REMOTES[0], 'curl-proxy');
    const lose = download(REMOTES[1], 'curl-office');
    await new Promise((r) => setTimeout(r, 1500));

    // office moves to the first proxy, and a third remote is routed in.
    writeFileSync(file, config(SOCKS, [`${REMOTES[0]}/32`, `${REMOTES[1]}/32`, `${REMOTES[2]}/32`]));
    const t0 = performance.now();
    const r = await cli(l, ['reload', '--control', control]);
    figure('tunroute reload (route added, outbound changed)', Math.round(performance.now() - t0));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^reloaded: routes \+1 -0; changed: office; 1 TCP and 0 UDP flows reset, the others kept/);
    const lost = await lose.waitForExit(10_000);
    figure('reload: the reset download saw its reset', Math.round(performance.now() - t0));
    expect(lost.code).not.toBe(0);
    expect(lose.output().stderr).toMatch(/reset|Recv failure/i);
    expect(await seenAs(l, REMOTES[1])).toBe(SOCKS);
    expect(await seenAs(l, REMOTES[2])).toBe(SOCKS);
    // The download whose outbound stayed is still running, through the same flow.
    expect(keep.exited).toBe(false);
    const flows = JSON.parse((await cli(l, ['status', '--json', '--control', control])).stdout) as { flows: Array<{ dst: string; outbound: string; bytesDown: number }> };
    expect(flows.flows.filter((f) => f.dst.startsWith(REMOTES[0]) && f.outbound === 'proxy' && f.bytesDown > 0)).toHaveLength(1);
    await keep.stop('SIGTERM', 5000);

    // A broken config: refused in one sentence, the running one stays.
    writeFileSync(file, config(SOCKS, [`${REMOTES[0]}/32`]).replace('outbound: office }', 'outbound: nowhere }'));
    const bad = await cli(l, ['reload', '--control', control]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/nowhere/);
    // A config only a restart applies (another device): refused by the daemon.
    writeFileSync(file, `${config(SOCKS, [`${REMOTES[0]}/32`])}tun: { name: tun7 }\n`);
    const fixed = await cli(l, ['reload', '--control', control]);
    expect(fixed.code).not.toBe(0);
    expect(fixed.stderr).toMatch(/Reload refused: the new config changes "tun", which only a restart applies/);
    expect(await seenAs(l, REMOTES[2])).toBe(SOCKS);

    // SIGHUP reads the file itself: a broken one is logged and refused too.
    process.kill(proc.pid, 'SIGHUP');
    await logged(proc, /SIGHUP: (Reload refused|this process)/);
    expect(await seenAs(l, REMOTES[2])).toBe(SOCKS);
    expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
  });
});
