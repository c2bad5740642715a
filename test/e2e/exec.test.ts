/**
 * Per-app routing end to end (`tunroute exec`), in the routes lab (routes-lab.ts) with an HTTP
 * proxy beside dante: tinyproxy on 100.64.0.2:8888, its outgoing connections from 100.64.0.2.
 * The HTTP server's /ip tells how a request arrived: 100.64.0.1 = dante (the full tunnel's
 * proxy), 100.64.0.2 = tinyproxy (outbound "office"), 192.168.50.2 = directly from the client.
 *
 * `ip netns exec` gives each command a fresh /sys without the cgroup mounts; nftables resolves
 * cgroup paths under /sys/fs/cgroup, so every tunroute command here runs behind
 * `mount -t cgroup2 none /sys/fs/cgroup` (its own mount namespace: the host's mounts are
 * untouched). cgroups are global: tunroute's subtree is named after the lab's namespace
 * (tunroute-netns-NAME-tun0), and the test removes it afterwards, also after a failure.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTinyproxy, type LabProcess } from '../../tools/lab/index.js';
import { cgroup2Mount } from '../../src/routes/cgroup.js';
import { CLI, controlPathFor, e2eAvailable } from '../helpers/e2e.js';
import { CLIENT, PROXY, REMOTES, SOCKS, createRoutesLab, fullSnapshot, seenAs, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('tunroute exec (per-app routing)');
const OFFICE = '100.64.0.2';
const WITH_CGROUP = ['sh', '-c', 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', 'with-cgroup2'];

/** Remove a cgroup subtree (children first); the lab has stopped every process in it. */
function removeTree(path: string): void {
  let entries: string[];
  try {
    entries = readdirSync(path, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return;
  }
  for (const e of entries) removeTree(join(path, e));
  try {
    rmdirSync(path);
  } catch {
    // still busy: nothing more we can do
  }
}

describe.skipIf(!run)('tunroute exec (lab)', () => {
  let l: RoutesLab;
  let config: string;
  let subtree: string;
  /** A cgroup of the test's own, named in routes.excludeCgroups: a stand-in for a service. */
  let service: string;

  beforeEach(async () => {
    l = await createRoutesLab();
    await l.g.exec(['ip', 'addr', 'add', `${OFFICE}/32`, 'dev', 'lo']);
    await startTinyproxy(l.g, { listen: OFFICE, port: 8888, bind: OFFICE });
    const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8')) ?? '/sys/fs/cgroup';
    subtree = `${mount}/tunroute-netns-${l.c.name}-tun0`;
    service = `tr-svc-${l.c.name}`;
    mkdirSync(`${mount}/${service}`);
    config = join(l.lab.tmpDir, 'exec.json');
    writeFileSync(config, JSON.stringify({ routes: { excludeCgroups: [service] }, outbounds: [{ name: 'office', type: 'http', url: `http://${OFFICE}:8888` }] }));
  }, 60_000);
  afterEach(async () => {
    const c = l?.c.name;
    await l?.lab.destroy();
    if (c !== undefined) {
      removeTree(subtree);
      removeTree(`${cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8')) ?? '/sys/fs/cgroup'}/${service}`);
      rmSync(`/run/tunroute/netns/${c}`, { recursive: true, force: true });
    }
  });

  async function up(extra: readonly string[] = []): Promise<LabProcess> {
    const proc = l.c.spawn([...WITH_CGROUP, 'node', CLI, 'up', '-c', config, '--proxy', PROXY, '--control', controlPathFor(l.c), ...extra], { name: 'tunroute' });
    await proc.waitForLine(/"msg":"tunroute is up"/, 20_000);
    return proc;
  }

  function tr(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return l.c.exec([...WITH_CGROUP, 'node', CLI, ...args], { allowFail: true, timeoutMs: 30_000 });
  }

  it('exec --direct bypasses the full tunnel; exec --outbound office takes the HTTP proxy, children included', async () => {
    const proc = await up();
    try {
      const ctx = (): string => proc.outputTail(3000);
      expect(await seenAs(l, REMOTES[0]), ctx()).toBe(SOCKS);
      const direct = await tr(['exec', '--direct', '--', 'curl', '-sS', '--max-time', '5', `http://${REMOTES[0]}:8080/ip`]);
      expect(direct.stdout.trim(), `${direct.stderr}\n${ctx()}`).toBe(CLIENT);
      // A child of a child: sh runs curl.
      const office = await tr(['exec', '--outbound', 'office', '--', 'sh', '-c', `curl -sS --max-time 5 http://${REMOTES[1]}:8080/ip && curl -sS --max-time 5 http://${REMOTES[2]}:8080/ip`]);
      expect(office.stdout.trim().split('\n'), `${office.stderr}\n${ctx()}`).toEqual([OFFICE, OFFICE]);
      // A process of an excluded cgroup (a service) goes direct too.
      const svc = await l.c.exec([...WITH_CGROUP, 'sh', '-c', `echo $$ > /sys/fs/cgroup/${service}/cgroup.procs && exec curl -sS --max-time 5 http://${REMOTES[2]}:8080/ip`], { allowFail: true, timeoutMs: 20_000 });
      expect(svc.stdout.trim(), `${svc.stderr}\n${ctx()}`).toBe(CLIENT);
      // The exit code is the command's; outside exec, nothing changed.
      expect((await tr(['exec', '--direct', '--', 'sh', '-c', 'exit 7'])).code).toBe(7);
      expect(await seenAs(l, REMOTES[1])).toBe(SOCKS);
      // Unknown outbound: one sentence naming the known ones.
      const bad = await tr(['exec', '--outbound', 'nope', '--', 'true']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/names no outbound a program can be sent to \(known: proxy, office\)/);
      // The leaves exec made are gone again.
      expect(readdirSync(join(subtree, 'direct'), { withFileTypes: true }).filter((d) => d.isDirectory())).toEqual([]);
    } finally {
      expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    // Stopped: table, rules and cgroups are gone; of the subtree, at most its empty top stays
    // (a tunroute that gave up root may not remove a dir of the cgroup root; the next up reuses it).
    expect((await l.c.exec(['nft', 'list', 'ruleset'])).stdout.trim()).toBe('');
    expect((await l.c.exec(['ip', 'rule'])).stdout).not.toContain('fwmark');
    const left = (() => {
      try {
        return readdirSync(subtree, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
      } catch {
        return [];
      }
    })();
    expect(left).toEqual([]);
  }, 120_000);

  it('down after kill -9 removes the nft table, the fwmark rules and the cgroups', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(['--no-watchdog']);
    expect((await l.c.exec(['nft', 'list', 'tables'])).stdout).toContain(`inet tunroute-netns-${l.c.name}-tun0`);
    expect((await l.c.exec(['ip', 'rule'])).stdout).toContain('fwmark 0x54520000 lookup main');
    proc.signal('SIGKILL');
    await proc.waitForExit(10_000);
    expect((await l.c.exec(['nft', 'list', 'tables'])).stdout).toContain('tunroute');
    const down = await tr(['down']);
    expect(down.code, down.stderr).toBe(0);
    expect((await l.c.exec(['nft', 'list', 'ruleset'])).stdout.trim()).toBe('');
    expect(await fullSnapshot(l.c)).toBe(before);
    expect(() => readdirSync(subtree)).toThrow();
    expect(await seenAs(l, REMOTES[0])).toBe(CLIENT);
  }, 120_000);
});
