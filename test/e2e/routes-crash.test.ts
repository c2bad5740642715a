/**
 * Crash safety end to end, each test in a lab of its own (routes-lab.ts): after kill -9, the
 * journal lets `down` (or the watchdog, or the next `up`) give the host back byte for byte;
 * the kill switch keeps tunneled destinations closed until `down`.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { e2eAvailable } from '../helpers/e2e.js';
import { CLIENT, LAN_HOST, PROXY, REMOTES, SOCKS, cli, createRoutesLab, fullSnapshot, logged, outputMatches, seenAs, up, waitFor, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('routes: crash safety');

describe.skipIf(!run)('crash-safe teardown (lab)', () => {
  let l: RoutesLab;
  beforeEach(async () => {
    l = await createRoutesLab();
  });
  afterEach(async () => {
    await l?.lab.destroy();
  });

  const journal = (): string => join(l.stateDir, 'dev-tun0', 'routes-tun0.json');
  /** The watchdog of this lab's tunroute: the process in c whose command line names the lab's journal. */
  const watchdogOf = async (lab: RoutesLab): Promise<{ pid: number; exe: string; rssKiB: number } | undefined> => {
    const pids = (await lab.c.sh(`ip netns pids ${lab.c.name}`)).stdout.split(/\s+/).filter((p) => p !== '').map(Number);
    for (const pid of pids) {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        if (!argv.includes(journal())) continue;
        const rss = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        return { pid, exe: readlinkSync(`/proc/${pid}/exe`), rssKiB: Number(rss?.[1]) };
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  };
  const tunroutesRules = async (): Promise<string> => (await l.c.sh('ip rule; ip -6 rule; ip route show table 7300; ip -6 route show table 7300')).stdout;

  it('kill -9, then down: every table and rule is byte-identical to before up', async () => {
    // Twins of what tunroute will add, but the user's (no proto 211): down must leave them.
    await l.c.sh('ip rule add uidrange 65534-65534 lookup main priority 7300 && ip -6 rule add uidrange 65534-65534 lookup main priority 7300');
    const before = await fullSnapshot(l.c);
    expect(before).toMatch(/7300:\tfrom all uidrange 65534-65534 lookup main *\n/);
    const proc = await up(l, ['--proxy', PROXY, '--exclude-uid', '65534', '--no-watchdog']);
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);
    expect(await proc.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // The device and the routes through it are gone with the process; the rules and the
    // IPv6 guard are not: that is what the journal is for.
    expect(existsSync(journal())).toBe(true);
    const left = await tunroutesRules();
    expect(left).toContain('7301:\tfrom all lookup 7300 proto 211');
    expect(left).toContain('uidrange 65534-65534 lookup main proto 211');
    expect(left).toContain('unreachable default dev lo proto 211');

    // Nothing of tunroute's outlives it in the namespace (the default-route monitor included).
    await waitFor('tunroute\'s helpers to exit', async () => {
      const ps = (await l.c.sh(`for p in $(ip netns pids ${l.c.name}); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done`)).stdout;
      return ps.includes('monitor') ? undefined : true;
    }, 5000);
    const down = await cli(l, ['down', '--state-dir', l.stateDir]);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/^tun0: removed the \d+ route\/rule changes tunroute \(pid \d+, started .*\) had made \(\d+ were already gone with the device\)\n$/);
    expect(await fullSnapshot(l.c)).toBe(before);
    expect(existsSync(journal())).toBe(false);
    // Idempotent.
    const again = await cli(l, ['down', '--state-dir', l.stateDir]);
    expect(again.stdout).toBe(`nothing to undo: no tunroute journal in ${l.stateDir}\n`);
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('up after a kill -9 finds the stale journal, cleans it up and says so', async () => {
    const before = await fullSnapshot(l.c);
    const first = await up(l, ['--proxy', PROXY, '--no-watchdog'], 'first');
    await first.stop('SIGKILL');
    const second = await up(l, ['--proxy', PROXY, '--no-watchdog'], 'second');
    const stale = await logged(second, /found a stale route journal/);
    expect(stale).toMatchObject({ level: 40, dev: 'tun0', pid: first.pid });
    expect(await seenAs(l, REMOTES[1])).toBe(SOCKS);
    expect(await second.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('the watchdog restores the network when tunroute is killed', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY]);
    // The one waiting beside tunroute is the native helper, not a second Node.js (~44 MB).
    const wd = await waitFor('the watchdog beside tunroute', () => watchdogOf(l));
    expect(wd.exe).toMatch(/\/build\/Release\/tunroute_watchdog$/);
    expect(wd.rssKiB).toBeLessThan(8 * 1024);
    await proc.stop('SIGKILL');
    await outputMatches(proc, /the watchdog restored the network/);
    await waitFor('the journal to go', async () => (existsSync(journal()) ? undefined : true));
    expect(await fullSnapshot(l.c)).toBe(before);
    expect(await seenAs(l, REMOTES[2])).toBe(CLIENT);
  });

  it('kill switch: after kill -9 tunneled destinations stay unreachable until down; the LAN still works', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY, '--kill-switch']);
    expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);
    await proc.stop('SIGKILL');
    await outputMatches(proc, /kill switch on: tunneled destinations stay unreachable/);
    for (const r of REMOTES) expect(await seenAs(l, r)).toMatch(/^curl failed \(7\)/);
    expect((await l.c.exec(['ip', 'route', 'get', REMOTES[0]], { allowFail: true })).stderr).toMatch(/No route to host|unreachable/);
    expect(await seenAs(l, LAN_HOST)).toBe(CLIENT);
    // ExecStopPost's down leaves it closed; a plain down opens it.
    const keep = await cli(l, ['down', '--keep-kill-switch', '--state-dir', l.stateDir]);
    expect(keep.stdout).toContain('kill switch: left tunroute');
    expect(await seenAs(l, REMOTES[0])).toMatch(/^curl failed/);
    const down = await cli(l, ['down', '--state-dir', l.stateDir]);
    expect(down.stdout).toContain('tun0: removed the');
    expect(await fullSnapshot(l.c)).toBe(before);
    expect(await seenAs(l, REMOTES[0])).toBe(CLIENT);
  });

  it('kill switch: a tunroute restarted after kill -9 takes over without a gap (nothing leaks direct)', async () => {
    const before = await fullSnapshot(l.c);
    const first = await up(l, ['--proxy', PROXY, '--kill-switch', '--no-watchdog'], 'first');
    await first.stop('SIGKILL');
    // An app that keeps trying a tunneled destination all through the restart.
    const probe = l.c.spawn(['bash', '-c', `while :; do curl -s --max-time 0.5 http://${REMOTES[0]}:8080/ip || echo failed; echo; done`], { name: 'probe' });
    await new Promise((r) => setTimeout(r, 300));
    const second = await up(l, ['--proxy', PROXY, '--kill-switch', '--no-watchdog'], 'second');
    expect(String((await logged(second, /found a stale route journal/)).msg)).toMatch(/kept \d+ the new plan has too/);
    await waitFor('the probe to get through the proxy', async () => (probe.output().stdout.includes(SOCKS) ? true : undefined));
    await probe.stop('SIGKILL');
    const answers = probe.output().stdout.split('\n').filter((x) => x !== '');
    expect(answers).not.toContain(CLIENT);
    expect(answers).toContain('failed');
    expect(await second.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('down stops a running tunroute, which removes its own changes', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY]);
    const down = await cli(l, ['down', '--state-dir', l.stateDir]);
    expect(down.stdout).toMatch(/^tun0: stopped tunroute \(pid \d+, started .*\); it removed its \d+ route\/rule changes\n$/);
    expect((await proc.waitForExit(5000)).code).toBe(0);
    expect(await fullSnapshot(l.c)).toBe(before);
    // Its watchdog found no journal left and exited without running anything.
    await waitFor('the watchdog to exit', async () => ((await watchdogOf(l)) === undefined ? true : undefined));
  });
});
