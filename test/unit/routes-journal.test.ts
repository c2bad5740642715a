/**
 * Applying a plan, the journal, teardown (down, the watchdog's restore, a stale journal found
 * by up) and following the default route — with a recording `ip` and a fake host, so nothing
 * here needs root or touches a routing table.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { applyOps, applyPlan, removeChanges, removePlan, type BatchResult, type IpRunner } from '../../src/routes/apply.js';
import { planRoutes, toIpLine, type RoutePlan } from '../../src/routes/plan.js';
import type { HostProbe, NetworkView, RouteEnv } from '../../src/routes/host.js';
import { claimJournal, createJournal, journalPath, listStateFiles, processStartTime, readJournal, type Journal } from '../../src/routes/journal.js';
import { checkInstanceDir } from '../../src/routes/state-dir.js';
import { CLI_ENTRY, ownerAlive } from '../../src/routes/owner.js';
import { cleanupJournals, describeCleanup } from '../../src/routes/teardown.js';
import { RouteManager } from '../../src/routes/manager.js';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import { silentLogger } from '../../src/logger.js';
import { isTunrouteError } from '../../src/errors.js';

interface Call {
  lines: string[];
  force: boolean;
  family: 4 | 6;
}

/** Records batches; can fail one line of the first non-forced batch; can look at the state dir when called. */
class RecordingRunner implements IpRunner {
  calls: Call[] = [];
  onBatch?: (c: Call) => void;
  constructor(private failAt?: { batch: number; line: number }) {}
  async batch(lines: readonly string[], force: boolean, family: 4 | 6 = 4): Promise<BatchResult> {
    const call = { lines: [...lines], force, family };
    this.calls.push(call);
    this.onBatch?.(call);
    const n = this.calls.filter((c) => !c.force).length;
    if (!force && this.failAt !== undefined && this.failAt.batch === n) {
      const at = this.failAt.line;
      return { ok: false, failedLine: at, failures: 1, stderr: `RTNETLINK answers: File exists\nCommand failed -:${at}` };
    }
    return { ok: true, failures: 0, stderr: '' };
  }
  all(): string[] {
    return this.calls.flatMap((c) => c.lines.map((l) => `${c.family === 6 ? '-6 ' : ''}${l}`));
  }
}

const LAN: NetworkView = { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: true };

class FakeHost implements HostProbe {
  net: NetworkView = LAN;
  used: string | undefined;
  files = new Map<string, string>();
  async network(): Promise<NetworkView> {
    return this.net;
  }
  resolve = async (): Promise<string[]> => ['203.0.113.5'];
  async readFile(path: string): Promise<string> {
    const t = this.files.get(path);
    if (t === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    return t;
  }
  async tableInUse(): Promise<string | undefined> {
    return this.used;
  }
  async routeGet(addr: string): Promise<string> {
    return `${addr} via 192.168.1.1 dev eth0`;
  }
}

let dir: string;
const children: ChildProcess[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunroute-routes-'));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A stand-in for a running tunroute: our node with this install's CLI entry script on its
 * command line (owner.ts), which on SIGTERM runs `onTerm` (a statement) and exits.
 */
async function standIn(onTerm = ''): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', `process.on('SIGTERM', () => { ${onTerm}; process.exit(0); }); console.log('ready'); setInterval(() => {}, 1000);`, CLI_ENTRY], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise((res) => child.stdout.once('data', res));
  return child;
}

async function spawned(cmd: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  children.push(child);
  await new Promise((res) => child.once('spawn', res));
  return child;
}

const running = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null && processStartTime(c.pid!) !== undefined;

function config(flags: FlagValues) {
  return loadConfig({ flags: { stateDir: dir, watchdog: false, ...flags } });
}

const ENV: RouteEnv = { network: LAN, upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }], files: new Map() };

function fullPlan(flags: FlagValues = {}): RoutePlan {
  return planRoutes(config({ proxy: 'socks5://203.0.113.5:1080', ...flags }), ENV);
}

/** A journal as a tunroute that is no longer running would have left it (same pid as us, other start time). */
function staleJournal(plan: RoutePlan, killSwitch = false): Journal {
  return { version: 1, tool: 'tunroute', dev: plan.dev, pid: process.pid, pidStart: '1', startedAt: '2026-11-20T10:00:00.000Z', killSwitch, changes: plan.changes, explain: plan.explain };
}

describe('applying a plan', () => {
  it('runs one batch per address family, IPv4 first', async () => {
    const r = new RecordingRunner();
    const p = fullPlan();
    await applyPlan(p, r, silentLogger());
    expect(r.calls.map((c) => [c.family, c.force, c.lines.length])).toEqual([
      [4, false, p.up.filter((o) => o.op !== 'route' && o.op !== 'rule').length + p.prefixes.length + 1],
      [6, false, 4],
    ]);
  });

  it('on a failing line, undoes what was applied before it (both families) and names the command', async () => {
    const p = fullPlan();
    const r = new RecordingRunner({ batch: 2, line: 2 }); // the IPv6 batch fails at its 2nd line
    const err = await applyOps(p.up, p.dev, r, silentLogger()).catch((e: unknown) => e);
    expect(isTunrouteError(err) && err.code).toBe('TR_ROUTE_APPLY');
    expect((err as Error).message).toContain('Setting up tun0 failed at "ip -6 route add throw fe80::/10 table 7300 proto 211" (RTNETLINK answers: File exists)');
    const undo = r.calls.slice(2);
    expect(undo.map((c) => [c.family, c.force])).toEqual([
      [6, true],
      [4, true],
    ]);
    expect(undo[0].lines).toEqual(['route del unreachable ::/0 table 7300 proto 211']);
    expect(undo[1].lines[0]).toBe('rule del lookup 7300 priority 7301 protocol 211');
    expect(undo[1].lines).toHaveLength(p.prefixes.length + 1);
  });

  it('removal goes on past errors and counts what was already gone', async () => {
    const p = fullPlan();
    const r: IpRunner = { batch: async (_l, force) => ({ ok: false, failures: force ? 3 : 0, stderr: 'Cannot find device "tun0"' }) };
    const res = await removePlan(p, r, silentLogger());
    expect(res.failed).toBe(6);
  });
});

describe('journal', () => {
  it('is written atomically, read back validated, and claimed by one cleaner only', () => {
    const p = fullPlan();
    const path = journalPath(dir, 'tun0');
    const j = staleJournal(p);
    createJournal(path, j);
    expect(readJournal(path)).toEqual(j);
    expect(() => createJournal(path, j)).toThrow(/Another tunroute has just started on tun0/);
    const claimed = claimJournal(path);
    expect(claimed).toBe(`${path}.cleanup-${process.pid}`);
    expect(claimJournal(path)).toBeUndefined();
    expect(readdirSync(dirname(path))).toEqual([`routes-tun0.json.cleanup-${process.pid}`]);
  });

  it('a damaged journal is an error that says what to do, never a guess', () => {
    const path = journalPath(dir, 'tun0');
    mkdirSync(dirname(path), { mode: 0o700 });
    writeFileSync(path, JSON.stringify({ version: 1, tool: 'tunroute', dev: 'tun0', pid: 1, startedAt: 'x', killSwitch: false, changes: [{ op: 'route', family: 4, type: 'unicast', cidr: '10.0.0.0/8; reboot', table: 'main' }] }));
    expect(() => readJournal(path)).toThrow(/is damaged.*proto 211/);
  });

  it('knows our own start time', () => {
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
    expect(processStartTime(2 ** 22 + 12345)).toBeUndefined();
  });
});

describe('down (cleanupJournals)', () => {
  it('removes exactly what the journal lists, in reverse, and is idempotent', async () => {
    const p = fullPlan({ excludeUid: [1000] });
    createJournal(journalPath(dir, 'tun0'), staleJournal(p));
    const r = new RecordingRunner();
    const first = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(first).toEqual([{ dev: 'tun0', pid: process.pid, startedAt: '2026-11-20T10:00:00.000Z', outcome: 'removed', changes: p.changes.length, alreadyGone: 0 }]);
    expect(r.all()).toEqual(p.down.map((c) => `${c.family === 6 ? '-6 ' : ''}${toIpLine(c, 'undo')}`));
    expect(r.calls.every((c) => c.force)).toBe(true);
    expect(readdirSync(dir)).toEqual([]);
    const again = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(again).toEqual([]);
    expect(describeCleanup(again, dir)).toBe(`nothing to undo: no tunroute journal in ${dir}`);
    expect(await cleanupJournals({ stateDir: join(dir, 'missing'), runner: r, log: silentLogger(), live: 'stop' })).toEqual([]);
  });

  it('leaves a kill switch closed when asked (the watchdog, ExecStopPost)', async () => {
    const p = fullPlan({ killSwitch: true });
    createJournal(journalPath(dir, 'tun0'), staleJournal(p, true));
    const r = new RecordingRunner();
    const kept = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'skip', keepKillSwitch: true });
    expect(kept[0].outcome).toBe('kept-kill-switch');
    expect(r.calls).toEqual([]);
    expect(describeCleanup(kept, dir)).toContain('kill switch: left tunroute (pid');
    const down = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(down[0].outcome).toBe('removed');
  });

  it('stops a running tunroute and lets it clean up after itself', async () => {
    const p = fullPlan();
    const path = journalPath(dir, 'tun0');
    // A stand-in daemon: on SIGTERM it removes its journal and exits, as tunroute does.
    const child = await standIn(`require('fs').rmSync(${JSON.stringify(path)})`);
    createJournal(path, { ...staleJournal(p), pid: child.pid!, pidStart: processStartTime(child.pid!)! });
    const r = new RecordingRunner();
    const res = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(res.map((e) => e.outcome)).toEqual(['stopped']);
    expect(r.calls).toEqual([]);
    expect(describeCleanup(res, dir)).toContain(`tun0: stopped tunroute (pid ${child.pid}`);
  });

  it('undoes the journal of a tunroute that dies on SIGTERM without cleaning up', async () => {
    const p = fullPlan();
    const path = journalPath(dir, 'tun0');
    const child = await standIn('process.exit(0)');
    createJournal(path, { ...staleJournal(p), pid: child.pid!, pidStart: processStartTime(child.pid!)! });
    const r = new RecordingRunner();
    const res = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(res.map((e) => e.outcome)).toEqual(['removed']);
    expect(r.all()).toHaveLength(p.changes.length);
  });

  it('the watchdog only acts on its own daemon', async () => {
    const p = fullPlan();
    createJournal(journalPath(dir, 'tun0'), staleJournal(p));
    const r = new RecordingRunner();
    expect(await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'skip', onlyPid: process.pid + 1 })).toEqual([]);
    expect((await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'skip', onlyPid: process.pid }))[0].outcome).toBe('removed');
  });

  it('finishes the cleanup of a cleaner that died half-way', async () => {
    const p = fullPlan();
    const path = journalPath(dir, 'tun0');
    createJournal(path, staleJournal(p));
    const dead = 2 ** 22 + 4321; // above pid_max: no such process
    const { renameSync } = await import('node:fs');
    renameSync(path, `${path}.cleanup-${dead}`);
    writeFileSync(`${path}.tmp-${dead}`, '{');
    const r = new RecordingRunner();
    const res = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop' });
    expect(res.map((e) => e.outcome)).toEqual(['removed']);
    expect(r.all()).toHaveLength(p.changes.length);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('RouteManager', () => {
  it('writes the journal before it changes anything, and removes it on stop', async () => {
    const host = new FakeHost();
    const r = new RecordingRunner();
    const path = journalPath(dir, 'tun0');
    const seen: boolean[] = [];
    r.onBatch = () => seen.push(existsSync(path));
    const m = await RouteManager.prepare({ config: config({ proxy: 'socks5://203.0.113.5:1080' }), log: silentLogger(), runner: r, host, watchRoutes: false });
    expect(r.calls).toEqual([]);
    await m.apply();
    expect(seen).toEqual([true, true]);
    expect(readJournal(path)!.changes).toEqual(m.plan.changes);
    await m.stop();
    await m.stop();
    expect(existsSync(path)).toBe(false);
    expect(r.calls.filter((c) => c.force)).toHaveLength(2);
  });

  it('finds a stale journal, cleans it up and says so', async () => {
    const host = new FakeHost();
    const r = new RecordingRunner();
    const old = fullPlan({ route: ['10.9.0.0/16'] });
    createJournal(journalPath(dir, 'tun0'), staleJournal(old));
    const logged: string[] = [];
    const log = silentLogger();
    log.warn = ((_o: object, msg: string) => void logged.push(msg)) as typeof log.warn;
    await RouteManager.prepare({ config: config({ route: ['10.1.0.0/16'] }), log, runner: r, host, watchRoutes: false });
    expect(logged).toEqual([`found a stale route journal of tunroute pid ${process.pid} (no longer running): removed the 1 changes it listed`]);
    expect(r.all()).toEqual(['route del 10.9.0.0/16 dev tun0 proto 211']);
  });

  it('after a crash keeps what the new plan has too (kill switch, rules, IPv6 guard): no gap while it restarts', async () => {
    const host = new FakeHost();
    host.used = 'routes: unreachable 1.0.0.0/8 proto 211'; // our own leftovers, not someone else's
    const r = new RecordingRunner();
    const flags = { proxy: 'socks5://203.0.113.5:1080', killSwitch: true };
    const old = fullPlan(flags);
    createJournal(journalPath(dir, 'tun0'), staleJournal(old, true));
    const logged: string[] = [];
    const log = silentLogger();
    log.warn = ((_o: object, msg: string) => void logged.push(msg)) as typeof log.warn;
    const m = await RouteManager.prepare({ config: config(flags), log, runner: r, host, watchRoutes: false });
    const persisting = old.changes.filter((c) => c.op === 'rule' || c.dev === undefined);
    const deviceRoutes = old.changes.length - persisting.length;
    expect(logged).toEqual([
      `found a stale route journal of tunroute pid ${process.pid} (no longer running): removed the ${deviceRoutes} changes it listed, kept ${persisting.length} the new plan has too (rules, unreachable routes) so nothing opens meanwhile`,
    ]);
    // Only the routes through the vanished device were deleted; the journal still lists the rest, under the dead pid.
    expect(r.all().every((l) => l.includes(' dev tun0 '))).toBe(true);
    expect(readJournal(journalPath(dir, 'tun0'))).toMatchObject({ pid: process.pid, pidStart: '1', changes: persisting });
    r.calls = [];
    await m.apply();
    // The kept ones are re-asserted (forced: "File exists" is fine), then the rest is applied.
    expect(r.calls.filter((c) => c.force).flatMap((c) => c.lines)).toHaveLength(persisting.length);
    const strict = r.calls.filter((c) => !c.force).flatMap((c) => c.lines);
    expect(strict).toHaveLength(3 + deviceRoutes);
    expect(readJournal(journalPath(dir, 'tun0'))).toMatchObject({ pidStart: processStartTime(process.pid), changes: m.plan.changes });
    await m.stop();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses to start beside a running tunroute on the same device', async () => {
    const old = fullPlan();
    const daemon = await standIn();
    createJournal(journalPath(dir, 'tun0'), { ...staleJournal(old), pid: daemon.pid!, pidStart: processStartTime(daemon.pid!)! });
    const e = await RouteManager.prepare({ config: config({ route: ['10.1.0.0/16'] }), log: silentLogger(), runner: new RecordingRunner(), host: new FakeHost(), watchRoutes: false }).catch((x: unknown) => x);
    expect(isTunrouteError(e) && e.code).toBe('TR_TUN_BUSY');
    expect((e as Error).message).toMatch(/^tun0 is already in use by tunroute \(pid \d+, since .*\): stop it first with `tunroute down`\.$/);
  });

  it('refuses a routing table that something else uses', async () => {
    const host = new FakeHost();
    host.used = 'routes: default via 10.0.0.1 dev wg0';
    const e = await RouteManager.prepare({ config: config({ proxy: 'socks5://203.0.113.5:1080' }), log: silentLogger(), runner: new RecordingRunner(), host, watchRoutes: false }).catch((x: unknown) => x);
    expect((e as Error).message).toBe(
      'Routing table 7300 is already in use (routes: default via 10.0.0.1 dev wg0): another program owns it; give tunroute another one with --table N (routes.table).',
    );
  });

  it('a failed apply removes the journal', async () => {
    const r = new RecordingRunner({ batch: 1, line: 4 });
    const m = await RouteManager.prepare({ config: config({ route: ['10.1.0.0/16'] }), log: silentLogger(), runner: r, host: new FakeHost(), watchRoutes: false });
    await expect(m.apply()).rejects.toThrow(/route add 10.1.0.0\/16 dev tun0/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('follows a new default route: the new LAN leaves the tunnel, the old one enters, journal first', async () => {
    const host = new FakeHost();
    const r = new RecordingRunner();
    let fire: () => void = () => undefined;
    const m = await RouteManager.prepare({
      config: config({ proxy: 'socks5://203.0.113.5:1080' }),
      log: silentLogger(),
      runner: r,
      host,
      watchRoutes: (cb) => {
        fire = cb;
        return () => undefined;
      },
      followDebounceMs: 1,
    });
    await m.apply();
    r.calls = [];
    expect(await m.follow()).toBeUndefined(); // nothing changed
    host.net = { defaultRoute: { dev: 'wlan0', via: '10.20.0.1' }, lan: ['10.20.0.0/22'], ipv6: true };
    const journalDuring: number[] = [];
    r.onBatch = () => journalDuring.push(readJournal(journalPath(dir, 'tun0'))!.changes.length);
    const before = m.plan.changes.length;
    const res = await m.follow();
    expect(res).toBeDefined();
    const { added, removed } = res!;
    expect(added).toBeGreaterThan(0);
    expect(removed).toBeGreaterThan(0);
    // While routes changed, the journal listed old and new together.
    expect(journalDuring[0]).toBe(before + added);
    expect(readJournal(journalPath(dir, 'tun0'))!.changes).toEqual(m.plan.changes);
    expect(m.plan.direct.map((d) => d.cidr)).toContain('10.20.0.0/22');
    expect(m.plan.direct.map((d) => d.cidr)).not.toContain('192.168.1.0/24');
    expect(r.calls.map((c) => c.force)).toEqual([false, true]);
    expect(typeof fire).toBe('function');
    await m.stop();
  });
});

describe('following the network (issue 14)', () => {
  function manager(host: FakeHost, r: RecordingRunner, seen: Array<{ upstream: string; readdressed: boolean; moved: boolean; host: string | undefined }>) {
    let fire: (line?: string) => void = () => undefined;
    const m = RouteManager.prepare({
      config: config({ proxy: 'socks5://proxy.example:1080' }),
      log: silentLogger(),
      runner: r,
      host,
      watchRoutes: (cb) => {
        fire = cb;
        return () => undefined;
      },
      followDebounceMs: 1,
      resumeCheckMs: 0,
      onUpstreams: (changes, pinned) => {
        for (const c of changes) seen.push({ ...c, host: pinned.proxy?.host });
      },
    });
    return { m, fire: (line?: string) => fire(line) };
  }

  it('a link that comes up makes a proxy name resolve again: its new address is kept out of the tunnel instead, journal first, and the outbound is told', async () => {
    const host = new FakeHost();
    const r = new RecordingRunner();
    const seen: Array<{ upstream: string; readdressed: boolean; moved: boolean; host: string | undefined }> = [];
    const { m: pending, fire } = manager(host, r, seen);
    const m = await pending;
    await m.apply();
    expect(m.config.proxy?.host).toBe('203.0.113.5');
    host.resolve = async () => ['203.0.113.77'];
    // A route change alone does not resolve again (nothing moved: no call, no change).
    expect(await m.follow()).toBeUndefined();
    fire('3: wlan0@if2: <BROADCAST,MULTICAST> mtu 1500 state DOWN');
    fire('3: wlan0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP');
    await waitUntil(() => seen.length > 0);
    expect(seen).toEqual([{ upstream: 'proxy', readdressed: true, moved: false, host: '203.0.113.77' }]);
    expect(m.config.proxy?.host).toBe('203.0.113.77');
    expect(m.plan.direct.map((d) => d.cidr)).toContain('203.0.113.77/32');
    expect(m.plan.direct.map((d) => d.cidr)).not.toContain('203.0.113.5/32');
    expect(readJournal(journalPath(dir, 'tun0'))!.changes).toEqual(m.plan.changes);
    expect(m.networkEvents().map((e) => e.kind)).toEqual(['link-down', 'link-up', 'upstream']);
    await m.stop();
  });

  it("an upstream whose source address changed is reported moved (its connections are dead); tunroute's own device is ignored", async () => {
    const host = new FakeHost();
    const r = new RecordingRunner();
    const seen: Array<{ upstream: string; readdressed: boolean; moved: boolean; host: string | undefined }> = [];
    const { m: pending, fire } = manager(host, r, seen);
    const m = await pending;
    await m.apply();
    fire('5: tun0    inet 198.18.0.1/15 scope global tun0');
    expect(m.networkEvents()).toEqual([]);
    host.routeGet = async (addr: string) => `${addr} via 10.20.0.1 dev wlan0 src 10.20.0.9`;
    fire('default via 10.20.0.1 dev wlan0');
    await waitUntil(() => seen.length > 0);
    expect(seen).toEqual([{ upstream: 'proxy', readdressed: false, moved: true, host: '203.0.113.5' }]);
    await m.stop();
  });
});

async function waitUntil(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((res) => setTimeout(res, 10));
}

describe('removeChanges', () => {
  it('deletes nothing when nothing is listed', async () => {
    const r = new RecordingRunner();
    expect(await removeChanges([], r, silentLogger())).toEqual({ failed: 0, stderr: '' });
    expect(r.calls).toEqual([]);
  });
});

describe('a state dir and journals no one else can steer (issue 13)', () => {
  const root = process.geteuid?.() === 0;

  it('never signals a process a planted journal names (pid and start time copied from /proc), and still undoes the journal', async () => {
    const p = fullPlan();
    const victim = await spawned('sleep', ['60']);
    createJournal(journalPath(dir, 'tun0'), { ...staleJournal(p), pid: victim.pid!, pidStart: processStartTime(victim.pid!)! });
    const r = new RecordingRunner();
    const signalled: number[] = [];
    const res = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop', kill: (pid) => void signalled.push(pid), stopTimeoutMs: 500 });
    expect(signalled).toEqual([]);
    expect(res.map((e) => e.outcome)).toEqual(['removed']);
    expect(r.all()).toHaveLength(p.changes.length);
    // With the real kill as well: the process lives on.
    createJournal(journalPath(dir, 'tun0'), { ...staleJournal(p), pid: victim.pid!, pidStart: processStartTime(victim.pid!)! });
    await cleanupJournals({ stateDir: dir, runner: new RecordingRunner(), log: silentLogger(), live: 'stop', stopTimeoutMs: 500 });
    expect(running(victim)).toBe(true);
  });

  it('a pid counts as tunroute only with its recorded start time, our node and our CLI script', async () => {
    const daemon = await standIn();
    const start = processStartTime(daemon.pid!)!;
    expect(ownerAlive(daemon.pid!, start)).toBe(true);
    expect(ownerAlive(daemon.pid!, String(Number(start) + 1))).toBe(false);
    expect(ownerAlive(daemon.pid!, undefined)).toBe(false);
    const plainNode = await spawned(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    await new Promise((res) => setTimeout(res, 100));
    expect(ownerAlive(plainNode.pid!, processStartTime(plainNode.pid!))).toBe(false);
  });

  it('an old journal without pidStart: its pid is never signalled, its changes are undone', async () => {
    const p = fullPlan();
    const daemon = await standIn();
    const { pidStart: _dropped, ...old } = { ...staleJournal(p), pid: daemon.pid! };
    mkdirSync(dirname(journalPath(dir, 'tun0')), { mode: 0o700 });
    writeFileSync(journalPath(dir, 'tun0'), JSON.stringify(old));
    const signalled: number[] = [];
    const r = new RecordingRunner();
    const res = await cleanupJournals({ stateDir: dir, runner: r, log: silentLogger(), live: 'stop', kill: (pid) => void signalled.push(pid) });
    expect(signalled).toEqual([]);
    expect(res.map((e) => e.outcome)).toEqual(['removed']);
    expect(r.all()).toHaveLength(p.changes.length);
    expect(running(daemon)).toBe(true);
  });

  it('writing a journal never follows a symlink planted at its temp file (or at the journal)', () => {
    const p = fullPlan();
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const path = journalPath(dir, 'tun0');
    mkdirSync(dirname(path), { mode: 0o700 });
    symlinkSync(victim, `${path}.tmp-${process.pid}`);
    createJournal(path, staleJournal(p));
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(readJournal(path)!.changes).toEqual(p.changes);
    // A symlink in place of the journal is refused, not read through.
    rmSync(path);
    writeFileSync(join(dir, 'elsewhere.json'), JSON.stringify(staleJournal(p)));
    symlinkSync(join(dir, 'elsewhere.json'), path);
    expect(() => readJournal(path)).toThrow(/is a symbolic link/);
  });

  it.skipIf(!root)('refuses a state dir owned by another user, with one sentence', async () => {
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o755 });
    chownSync(state, 65534, 65534); // nobody
    const e = await cleanupJournals({ stateDir: state, runner: new RecordingRunner(), log: silentLogger(), live: 'stop' }).catch((x: unknown) => x);
    expect(isTunrouteError(e) && e.code).toBe('TR_STATE_DIR');
    expect((e as Error).message).toBe(
      `The state directory "${state}" is owned by uid 65534, not by root or the user running tunroute, so another user could plant the route journals root acts on: make it owned by root and not writable by group or others (chown root, chmod go-w), or pass another --state-dir.`,
    );
    expect(() => createJournal(journalPath(state, 'tun0'), staleJournal(fullPlan()))).toThrow(/is owned by uid 65534/);
    expect(readdirSync(state)).toEqual([]);
  });

  it('refuses a group- or world-writable state dir, and a parent writable by others unless it is sticky like /tmp', async () => {
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o755 });
    chmodSync(state, 0o775);
    const cleanup = () => cleanupJournals({ stateDir: state, runner: new RecordingRunner(), log: silentLogger(), live: 'stop' });
    await expect(cleanup()).rejects.toThrow(/^The state directory ".*" is writable by its group \(mode 0775\), so another user/);
    chmodSync(state, 0o1777); // sticky does not excuse the state dir itself
    await expect(cleanup()).rejects.toThrow(/is writable by its group and other users \(mode 1777\)/);
    chmodSync(state, 0o755);
    chmodSync(dir, 0o757);
    await expect(cleanup()).rejects.toThrow(`The state directory "${state}" lies in "${dir}", which is writable by other users (mode 0757)`);
    chmodSync(dir, 0o1777);
    expect(await cleanup()).toEqual([]);
    // A missing state dir under a safe parent is created when a journal is written.
    createJournal(journalPath(join(dir, 'new', 'state'), 'tun0'), staleJournal(fullPlan()));
    expect(readdirSync(join(dir, 'new', 'state'))).toEqual(['dev-tun0']);
    expect(readdirSync(join(dir, 'new', 'state', 'dev-tun0'))).toEqual(['routes-tun0.json']);
  });

  it.skipIf(!root)('a device dir handed to the user tunroute runs as: root writes files that user owns, trusts them back, and refuses a dir anyone else could write', async () => {
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o755 });
    const path = journalPath(state, 'tun0');
    const devDir = dirname(path);
    expect(devDir).toBe(join(state, 'dev-tun0'));
    // `up` as root: the dir made and handed over, then the first journal written by root.
    checkInstanceDir(devDir, { create: true, owner: { uid: 65534, gid: 65534 } });
    createJournal(path, staleJournal(fullPlan()));
    expect(statSync(devDir)).toMatchObject({ uid: 65534, gid: 65534 });
    expect(statSync(devDir).mode & 0o777).toBe(0o700);
    expect(statSync(path)).toMatchObject({ uid: 65534, gid: 65534 });
    // `down` as root trusts it (only root could have put a dir owned by someone else there).
    expect(listStateFiles(state).journals).toEqual([{ path, dev: 'tun0' }]);
    // A device dir its group or others may write is refused, as is a link in its place.
    chmodSync(devDir, 0o770);
    expect(() => listStateFiles(state)).toThrow(/dev-tun0" is writable by others than its owner \(mode 0770\)/);
    chmodSync(devDir, 0o700);
    rmSync(devDir, { recursive: true });
    mkdirSync(join(dir, 'elsewhere'), { mode: 0o700 });
    symlinkSync(join(dir, 'elsewhere'), devDir);
    expect(() => listStateFiles(state)).toThrow(/dev-tun0" is not a directory/);
    expect(() => createJournal(path, staleJournal(fullPlan()))).toThrow(/dev-tun0" is not a directory/);
    expect(readdirSync(join(dir, 'elsewhere'))).toEqual([]);
  });
});
