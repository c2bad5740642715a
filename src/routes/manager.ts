/**
 * The route side of a running tunroute, in the order that keeps the host recoverable:
 *
 *   prepare   read the host (default route, LAN, upstream addresses, CIDR files), plan, undo a
 *             stale journal left by a dead tunroute (and say so), check that our table is free.
 *             Changes nothing else; runs before the device is opened.
 *   apply     write the journal, start the watchdog, then apply the plan (one ip -batch per
 *             family). A failure undoes what was applied and removes the journal.
 *   follow    when the default route changes (laptop on a new Wi-Fi), re-read the LAN, apply the
 *             difference (journal first), log it.
 *   stop      undo every journaled change, remove the journal, release the watchdog.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import type { Config } from '../config/schema.js';
import { TunrouteError } from '../errors.js';
import { LOG_FORMAT_ENV, resolveLogFormat, type Logger } from '../logger.js';
import { watchdogHelper } from '../native/watchdog-helper.js';
import { applyOps, ipBatchRunner, removeChanges, type IpRunner } from './apply.js';
import { hostProbe, probeRouteEnv, type HostProbe, type NetworkView, type RouteEnv } from './host.js';
import { createJournal, journalPath, processStartTime, pruneStateDir, removeFile, replaceJournal, resolveStateDir, type Journal } from './journal.js';
import { batchesOf, invert, planRoutes, toIpLine, type Change, type RoutePlan } from './plan.js';
import { cleanupJournals } from './teardown.js';
import { checkInstanceDir } from './state-dir.js';
import { pinUpstreams, resolveUpstreams, upstreamsOf, type ResolvedUpstream } from './upstreams.js';
import { NetChangeDetector, upstreamChanges, type NetClocks, type NetDecision, type NetEventRecord, type UpstreamChange, type UpstreamPath } from './net-change.js';
import { appCgroups, journalApps, nftRuleset } from './apps.js';
import { createCgroups, loadNft, tearDownApps } from './cgroup.js';
import { manageDevice, networkManagerRunning, unmanageDevice, type NmOptions } from './network-manager.js';
import { pointResolvedAtLink, revertResolvedLink, type ResolvectlOptions } from './resolved.js';

/**
 * Watches the network; calls back with each line `ip monitor` prints (undefined: "something
 * changed", from watchers that cannot say what). Returns a stop function.
 */
export type RouteWatcher = (onChange: (line?: string) => void) => () => void;

export interface RouteManagerOptions {
  config: Config;
  log: Logger;
  runner?: IpRunner;
  host?: HostProbe;
  /** Start the watchdog process (default config.routes.watchdog). */
  watchdog?: boolean;
  /** Follow default-route changes (default: `ip -4 monitor route`; false: do not). */
  watchRoutes?: RouteWatcher | false;
  /** Wait this long after a network change before re-reading the host (default 200 ms). */
  followDebounceMs?: number;
  /** How nmcli is found (tests); false: leave NetworkManager alone (the lab's namespaces). */
  networkManager?: NmOptions | false;
  /** How resolvectl is found, and whether a link exists (tests; see resolved.ts). */
  resolvectl?: ResolvectlOptions & { exists?: (dev: string) => Promise<boolean> };
  /**
   * Called after a network change moved an upstream (its path changed: connections through it
   * are dead) or gave its name another address (`config` then connects there).
   */
  onUpstreams?: (changes: readonly UpstreamChange[], config: Config) => void;
  /**
   * Called after a change that asks for names to be resolved again (a link came up, an address
   * appeared, a resume), for what the manager does not resolve itself: WireGuard endpoints,
   * which are pinned before the plan is made (config/tunnels.ts). It may call reconfigure.
   */
  onResolveAgain?: () => Promise<void>;
  /** The clocks whose gap tells a resume from suspend (default: performance.now and Date.now). */
  clocks?: NetClocks;
  /** How often to compare the clocks (default 1 s; 0: never). */
  resumeCheckMs?: number;
  /**
   * The user `up` will carry packets as once started (src/privileges.ts): the device's dir of
   * the state dir is handed to it, and the watchdog and the route monitor run as it from the start.
   */
  runAs?: RunAs;
}

/** An unprivileged user to run as: uid ≠ 0, its primary gid. */
export interface RunAs {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
}

/**
 * `ip -4 -o monitor link address route`, one line per change (net-change.ts reads them and
 * ignores tunroute's own, proto 211). It runs under a tiny
 * shell that holds a pipe from us: when tunroute exits in any way (kill -9 included) the pipe
 * closes and the shell stops the monitor, so it never outlives tunroute.
 */
export function ipMonitorWatcher(netns?: string, runAs?: RunAs): RouteWatcher {
  return (onChange) => {
    const args = [...(netns === undefined ? [] : ['-n', netns]), '-4', '-o', 'monitor', 'link', 'address', 'route'];
    // Listening needs no privilege: with runAs, the monitor never runs as root.
    const ids = runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid };
    const child = spawn('sh', ['-c', 'ip "$@" & m=$!; cat >/dev/null; kill $m', 'tunroute-monitor', ...args], { stdio: ['pipe', 'pipe', 'ignore'], ...ids });
    child.on('error', () => undefined);
    child.stdin.on('error', () => undefined);
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (l.trim() !== '' && !l.includes('proto 211')) onChange(l);
    });
    child.unref();
    for (const s of [child.stdin, child.stdout]) (s as unknown as { unref?: () => void }).unref?.();
    return () => {
      child.stdin.end();
    };
  };
}

function sameNetwork(a: NetworkView, b: NetworkView): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const changeKey = (c: Change): string => `${c.family} ${toIpLine(c, 'apply')}`;

export class RouteManager {
  private plan_: RoutePlan;
  private env: RouteEnv;
  private changes: Change[] = [];
  private journal: Journal | undefined;
  private watchdogProc: ChildProcess | undefined;
  private stopWatching: (() => void) | undefined;
  private followTimer: NodeJS.Timeout | undefined;
  private following: Promise<void> = Promise.resolve();
  /** A change asked for the upstream names to be resolved again at the next follow. */
  private reresolve = false;
  private readonly detector: NetChangeDetector;
  private resumeTicker: NodeJS.Timeout | undefined;
  /** Where the kernel sent tunroute's own traffic to each upstream at the last look. */
  private paths: UpstreamPath[] = [];
  private config_: Config;
  /** The config as given (names not pinned); a reload replaces it. */
  private source: Config;
  private stopping: Promise<void> | undefined;
  /** Changes a dead tunroute left in place that this plan has too (see prepare). */
  private adopted: Change[] = [];

  private constructor(
    private readonly opts: RouteManagerOptions,
    private readonly host: HostProbe,
    private readonly runner: IpRunner,
    config: Config,
    plan: RoutePlan,
    env: RouteEnv,
    readonly journalFile: string,
  ) {
    this.plan_ = plan;
    this.env = env;
    this.config_ = config;
    this.source = opts.config;
    this.detector = new NetChangeDetector({ ownDev: plan.dev }, opts.clocks ?? { mono: () => performance.now(), wall: () => Date.now() });
  }

  /** The config with upstream host names pinned to the addresses kept out of the tunnel (follows a name's new address). */
  get config(): Config {
    return this.config_;
  }

  /** The last network events, oldest first (for `status`). */
  networkEvents(): NetEventRecord[] {
    return this.detector.events();
  }

  /** Put a note (a reload, a tunnel endpoint's new address) among the network events. */
  noteEvent(kind: 'reload' | 'upstream', detail: string): void {
    this.detector.note({ kind, detail });
  }

  get plan(): RoutePlan {
    return this.plan_;
  }

  /** The device of the host's default route as last read (it follows route changes). */
  get defaultDevice(): string | undefined {
    return this.env.network.defaultRoute?.dev;
  }

  /** Read the host, plan, clean up after a dead tunroute. Changes nothing of a running system. */
  static async prepare(opts: RouteManagerOptions): Promise<RouteManager> {
    const { config, log } = opts;
    const host = opts.host ?? hostProbe({ stateDir: resolveStateDir(config.stateDir) });
    const runner = opts.runner ?? ipBatchRunner;
    const refs = upstreamsOf(config);
    const env = await probeRouteEnv(config, host);
    const plan = planRoutes(config, env);
    const pinned = pinUpstreams(config, refs, env.upstreams);
    for (const u of env.upstreams) {
      if (u.host !== u.addrs[0]) log.info({ upstream: u.name, host: u.host, addrs: u.addrs }, 'upstream resolved; tunroute connects to the first address and keeps all of them out of the tunnel');
    }

    const stateDir = resolveStateDir(config.stateDir);
    const file = journalPath(stateDir, plan.dev);
    // What a dead tunroute left that does not depend on its vanished device (rules, the kill
    // switch's unreachable twins, the IPv6 guard) and that the new plan has too stays in place:
    // no gap while tunroute restarts after a crash.
    const planned = new Set(plan.changes.map(changeKey));
    const persists = (c: Change): boolean => (c.op === 'rule' || c.dev === undefined) && planned.has(changeKey(c));
    const stale = await cleanupJournals({ stateDir, dev: plan.dev, runner, log, live: 'refuse', keep: persists, resolvectl: opts.resolvectl });
    const adopted: Change[] = [];
    for (const s of stale) {
      const kept = s.kept ?? [];
      for (const k of kept) adopted.push(k); // not push(...kept): a large journal would overflow the stack
      const keptText = kept.length === 0 ? '' : `, kept ${kept.length} the new plan has too (rules, unreachable routes) so nothing opens meanwhile`;
      log.warn(
        { dev: s.dev, pid: s.pid, startedAt: s.startedAt, changes: s.changes, kept: kept.length, alreadyGone: s.alreadyGone, journal: file },
        `found a stale route journal of tunroute pid ${s.pid} (no longer running): removed the ${s.changes} changes it listed${keptText}`,
      );
    }
    // (A table that holds what we kept from the dead tunroute is ours: its journal says so.)
    const tables = plan.table === 'main' ? [] : plan.apps === undefined ? [plan.table] : [plan.table, plan.apps.table];
    for (const t of tables) {
      if (plan.changes.length === 0 || adopted.some((c) => c.table === t)) continue;
      const used = await host.tableInUse(t, plan.ipv6 === 'guarded' && t === plan.table);
      if (used !== undefined) {
        throw new TunrouteError(
          'TR_ROUTE_APPLY',
          `Routing table ${t} is already in use (${used}): another program owns it; give tunroute another one with --table N (routes.table${t === plan.table ? '' : `; per-app routing uses N+1 too`}).`,
        );
      }
    }
    const m = new RouteManager(opts, host, runner, pinned, plan, env, file);
    m.adopted = adopted;
    return m;
  }

  /** Journal, watchdog, apply. The device must exist (routes name it). */
  async apply(): Promise<void> {
    const { log } = this.opts;
    const plan = this.plan_;
    const pidStart = processStartTime(process.pid);
    if (pidStart === undefined) throw new TunrouteError('TR_ROUTE_APPLY', 'Cannot read /proc/self/stat, which the route journal needs to tell this tunroute from a later process with the same pid: mount /proc.');
    this.journal = {
      version: 1,
      tool: 'tunroute',
      dev: plan.dev,
      pid: process.pid,
      pidStart,
      startedAt: new Date().toISOString(),
      killSwitch: plan.killSwitch,
      changes: plan.changes,
      explain: plan.explain,
      ...(plan.apps === undefined ? { appsOff: plan.appsOff ?? 'off' } : { apps: journalApps(plan.apps) }),
    };
    const t0 = performance.now();
    // The device's dir, handed to the user `up` will run as before the first file goes in.
    const runAs = this.opts.runAs;
    checkInstanceDir(dirname(this.journalFile), { create: true, owner: runAs === undefined ? undefined : { uid: runAs.uid, gid: runAs.gid } });
    // A journal left with adopted changes is taken over; otherwise ours must be the only one.
    if (this.adopted.length > 0) replaceJournal(this.journalFile, this.journal);
    else createJournal(this.journalFile, this.journal);
    const t1 = performance.now();
    if (this.opts.watchdog ?? this.source.routes.watchdog) this.startWatchdog();
    await this.unmanage();
    const adoptedKeys = new Set(this.adopted.map(changeKey));
    try {
      if (this.adopted.length > 0) await this.ensureAdopted();
      if (plan.apps !== undefined) {
        // cgroups first: nft resolves each cgroup path when it loads the rule.
        createCgroups(appCgroups(plan.apps), this.opts.runAs === undefined ? undefined : { uid: this.opts.runAs.uid, gid: this.opts.runAs.gid });
        const nft = await loadNft(nftRuleset(plan.apps));
        if (!nft.ok) {
          throw new TunrouteError('TR_ROUTE_APPLY', `Loading the nftables rules of per-app routing failed (${nft.stderr.split('\n')[0] ?? ''}): check that every routes.excludeCgroups path exists under ${plan.apps.env.mount}.`);
        }
      }
      await applyOps(
        plan.up.filter((o) => !((o.op === 'route' || o.op === 'rule') && adoptedKeys.has(changeKey(o)))),
        plan.dev,
        this.runner,
        log,
      );
      // The device is up (its subnet carries the DNS address): now systemd-resolved may use it.
      await this.pointResolved();
    } catch (e) {
      if (this.journal.resolved !== undefined) await revertResolvedLink(this.journal.resolved.dev, log, this.opts.resolvectl);
      if (this.adopted.length > 0) await removeChanges(invert(this.adopted), this.runner, log);
      if (this.journal.apps !== undefined) await tearDownApps(this.journal.apps, log);
      if (this.journal.nmUnmanaged !== undefined) await manageDevice(this.journal.nmUnmanaged, log, this.opts.networkManager === false ? {} : this.opts.networkManager);
      removeFile(this.journalFile);
      pruneStateDir(dirname(this.journalFile));
      this.journal = undefined;
      await this.releaseWatchdog();
      throw e;
    }
    this.changes = plan.changes.slice();
    log.info(
      {
        dev: plan.dev,
        mode: plan.mode,
        table: plan.table,
        routes: plan.prefixes.length,
        changes: plan.changes.length,
        ipv6: plan.ipv6,
        killSwitch: plan.killSwitch,
        journal: this.journalFile,
        journalMs: Math.round((t1 - t0) * 10) / 10,
        applyMs: Math.round((performance.now() - t1) * 10) / 10,
      },
      'routes applied',
    );
    if (plan.mode !== 'none' && this.opts.watchRoutes !== false) {
      this.paths = await this.upstreamPaths(this.env.upstreams);
      const watch = this.opts.watchRoutes ?? ipMonitorWatcher(undefined, this.opts.runAs);
      this.stopWatching = watch((line) => this.scheduleFollow(this.detector.line(line)));
      const every = this.opts.resumeCheckMs ?? 1000;
      if (every > 0) {
        this.resumeTicker = setInterval(() => this.scheduleFollow(this.detector.tick()), every);
        this.resumeTicker.unref();
      }
    }
  }

  /**
   * Tell NetworkManager to leave the device alone, journaled first (so a crash between the two
   * only costs a harmless `managed yes` on the way down).
   */
  private async unmanage(): Promise<void> {
    const nm = this.opts.networkManager;
    if (nm === false || this.journal === undefined) return;
    const dev = this.plan_.dev;
    const running = await networkManagerRunning(nm);
    if (!running.running) {
      this.opts.log.debug({ dev, why: running.why }, 'no NetworkManager: nothing to tell it about the device');
      return;
    }
    this.journal = { ...this.journal, nmUnmanaged: dev };
    replaceJournal(this.journalFile, this.journal);
    await unmanageDevice(dev, this.opts.log, nm);
  }

  /**
   * Give the device per-link DNS in systemd-resolved (resolved.ts), journaled first: while
   * `up` is still root, which resolved requires. Its warnings (no resolvectl, upstreams
   * unknown) are logged whether or not there is a link to point.
   */
  private async pointResolved(): Promise<void> {
    const rd = this.plan_.dns.resolved;
    for (const w of rd?.warnings ?? []) this.opts.log.warn({ stub: rd?.stub }, w);
    if (rd?.link === undefined || this.journal === undefined) return;
    this.journal = { ...this.journal, resolved: rd.link };
    replaceJournal(this.journalFile, this.journal);
    await pointResolvedAtLink(rd.link.dev, rd.link.dns, this.opts.log, this.opts.resolvectl);
  }

  private upstreamPaths(upstreams: readonly ResolvedUpstream[]): Promise<UpstreamPath[]> {
    return Promise.all(upstreams.flatMap((u) => u.addrs.map(async (a) => ({ upstream: u.name, addr: a, route: await this.host.routeGet(a) }))));
  }

  /** Add the adopted changes again where they went missing meanwhile ("File exists" = still there). */
  private async ensureAdopted(): Promise<void> {
    for (const b of batchesOf(this.adopted)) {
      const res = await this.runner.batch(
        b.ops.map((o) => toIpLine(o, 'apply')),
        true,
        b.family,
      );
      const other = res.stderr.split('\n').filter((l) => l.trim() !== '' && !/File exists|Command failed/.test(l));
      if (!res.ok && other.length > 0) {
        throw new TunrouteError('TR_ROUTE_APPLY', `Restoring the route changes kept from the previous tunroute failed (${other[0]}): run tunroute down, then up again.`);
      }
    }
  }

  private scheduleFollow(d: NetDecision): void {
    if (this.stopping || !d.resync) return;
    if (d.reresolve) this.reresolve = true;
    this.opts.log.debug({ event: d.event }, 'network event');
    if (this.followTimer) clearTimeout(this.followTimer);
    this.followTimer = setTimeout(() => {
      this.followTimer = undefined;
      this.following = this.following.then(async () => void (await this.follow())).catch((e: unknown) => this.opts.log.error({ err: e }, 'following the network failed'));
    }, this.opts.followDebounceMs ?? 200);
    this.followTimer.unref();
  }

  /** Route changes after start: plans re-applied on a new default route, and the changes they made (for /metrics). */
  readonly followStats = { replans: 0, added: 0, removed: 0 };

  /**
   * Re-read the network (and, after a link came up, an address appeared or a resume, the
   * upstreams' names); if the default route, the LAN or an upstream address changed, apply the
   * difference, journal first. Then tell the owner which upstreams moved or were readdressed.
   * Undefined when no route changed.
   */
  async follow(): Promise<{ added: number; removed: number } | undefined> {
    if (this.stopping || this.journal === undefined) return undefined;
    const { log } = this.opts;
    const reresolve = this.reresolve;
    this.reresolve = false;
    const network = await this.host.network();
    const old = this.env;
    let upstreams = old.upstreams;
    const refs = upstreamsOf(this.source);
    if (reresolve && refs.some((r) => r.hostKind === 'name')) {
      try {
        upstreams = await resolveUpstreams(refs, this.host.resolve);
      } catch (e) {
        log.warn({ err: e }, 'resolving the upstream names again failed: tunroute keeps the addresses it had');
      }
    }
    const sameUpstreams = JSON.stringify(upstreams) === JSON.stringify(old.upstreams);
    let result: { added: number; removed: number } | undefined;
    if (!sameNetwork(network, old.network) || !sameUpstreams) {
      const env: RouteEnv = { ...old, network, upstreams };
      result = await this.applyDifference(planRoutes(this.source, env), env);
    }
    const paths = await this.upstreamPaths(upstreams);
    const byName = (us: readonly ResolvedUpstream[]): Map<string, readonly string[]> => new Map(us.map((u) => [u.name, u.addrs]));
    const moved = upstreamChanges({ addrs: byName(old.upstreams), paths: this.paths }, { addrs: byName(upstreams), paths });
    this.paths = paths;
    if (result !== undefined) {
      const dr = network.defaultRoute;
      const what = sameNetwork(network, old.network)
        ? 'upstream addresses changed: their bypass routes follow'
        : `default route changed (now ${dr === undefined ? 'none' : `via ${dr.via ?? '-'} dev ${dr.dev}`}): LAN bypass updated; upstream bypass follows the main table`;
      log.info(
        {
          defaultRoute: dr ?? null,
          was: old.network.defaultRoute ?? null,
          lan: network.lan,
          added: result.added,
          removed: result.removed,
          upstreams: paths.map((p) => ({ upstream: p.upstream, addr: p.addr, path: p.route })),
        },
        what,
      );
    }
    if (reresolve && this.opts.onResolveAgain !== undefined) {
      // Not awaited: it may reconfigure, which waits for this follow to end.
      const again = this.opts.onResolveAgain;
      void Promise.resolve()
        .then(again)
        .catch((e: unknown) => log.warn({ err: e }, 'resolving the tunnel endpoints again failed: the tunnels keep the addresses they had'));
    }
    if (moved.length > 0) {
      if (moved.some((m) => m.readdressed)) this.config_ = pinUpstreams(this.source, refs, upstreams);
      for (const m of moved) {
        const addr = upstreams.find((u) => u.name === m.upstream)?.addrs[0] ?? '?';
        const route = paths.find((p) => p.upstream === m.upstream && p.addr === addr)?.route ?? '?';
        const detail = m.readdressed ? `${m.upstream} is now ${addr}` : `${m.upstream} (${addr}) now reached by ${route}`;
        this.detector.note({ kind: 'upstream', detail });
        log.info({ upstream: m.upstream, addr, route, readdressed: m.readdressed, moved: m.moved }, `upstream ${detail}: its open connections are reset, new ones go there`);
      }
      this.opts.onUpstreams?.(moved, this.config_);
    }
    return result;
  }

  /** Go from the applied plan to `next`: journal first (the union while both may exist), add, remove, journal. */
  private async applyDifference(next: RoutePlan, env: RouteEnv): Promise<{ added: number; removed: number }> {
    const journal = this.journal!;
    const have = new Set(this.changes.map(changeKey));
    const want = new Set(next.changes.map(changeKey));
    const added = next.changes.filter((c) => !have.has(changeKey(c)));
    const removed = this.changes.filter((c) => !want.has(changeKey(c)));
    replaceJournal(this.journalFile, { ...journal, changes: [...this.changes, ...added], explain: next.explain });
    if (added.length > 0) await applyOps(added, next.dev, this.runner, this.opts.log);
    if (removed.length > 0) await removeChanges(invert(removed), this.runner, this.opts.log);
    this.changes = next.changes.slice();
    this.journal = { ...journal, changes: this.changes, explain: next.explain };
    replaceJournal(this.journalFile, this.journal);
    this.env = env;
    this.plan_ = next;
    this.followStats.replans++;
    this.followStats.added += added.length;
    this.followStats.removed += removed.length;
    return { added: added.length, removed: removed.length };
  }

  /**
   * A reload: plan the new config against the host as it is now (its upstream names resolved
   * again, its CIDR files taken from `files` when the caller read them, as `tunroute reload`
   * does as root) and apply the difference. Nothing changes when planning fails. Returns the
   * config with upstream names pinned, for the outbounds.
   */
  async reconfigure(config: Config, files?: ReadonlyMap<string, string>): Promise<{ config: Config; added: number; removed: number }> {
    if (this.stopping || this.journal === undefined) throw new TunrouteError('TR_ROUTE_APPLY', 'tunroute is stopping: there is nothing to reload.');
    const host: HostProbe = files === undefined ? this.host : { ...this.host, readFile: (path, field) => (files.has(path) ? Promise.resolve(files.get(path)!) : this.host.readFile(path, field)) };
    const env = await probeRouteEnv(config, host);
    const next = planRoutes(config, env);
    if (next.dev !== this.plan_.dev || next.table !== this.plan_.table) {
      throw new TunrouteError('TR_BAD_CONFIG', `The new config moves the routes to ${next.dev === this.plan_.dev ? `table ${String(next.table)}` : `device ${next.dev}`}, which only a restart applies; the running config stays.`);
    }
    const pinned = pinUpstreams(config, upstreamsOf(config), env.upstreams);
    const wasLink = JSON.stringify(this.journal.resolved ?? null);
    if (JSON.stringify(next.dns.resolved?.link ?? null) !== wasLink) {
      // resolved takes per-link DNS from root only, and `up` gave root up after it started.
      this.opts.log.warn({ dev: next.dev, was: this.journal.resolved ?? null, now: next.dns.resolved?.link ?? null }, `the new config changes systemd-resolved's per-link DNS on ${next.dev}, which only a restart applies: restart tunroute`);
    }
    // Serialised with the network follower: one change of the routes at a time.
    const run = this.following.then(() => this.applyDifference(next, env));
    this.following = run.then(
      () => undefined,
      () => undefined,
    );
    const r = await run;
    this.source = config;
    this.config_ = pinned;
    this.paths = await this.upstreamPaths(env.upstreams);
    return { config: pinned, ...r };
  }

  private startWatchdog(): void {
    const script = fileURLToPath(new URL('./watchdog-main.js', import.meta.url));
    if (!existsSync(script)) {
      this.opts.log.warn({ script }, 'watchdog not started: its script is missing (run from dist/)');
      return;
    }
    const daemon = String(process.pid);
    const level = this.source.log.level;
    // The native helper (native/watchdog.c) only waits, at ~1 MB instead of a second idle
    // Node.js at ~44 MB; when tunroute is gone and left its journal, it execs the Node watchdog
    // with --now, so the undoing is written once. Without the helper, the Node watchdog waits.
    // With runAs, the helper becomes that user at once, keeping CAP_NET_ADMIN for the undoing;
    // the Node watchdog (no helper built) stays root: it cannot drop before it loads.
    const helper = watchdogHelper();
    const runAs = this.opts.runAs;
    const drop = runAs === undefined ? [] : ['-u', `${runAs.uid}:${runAs.gid}`];
    const [command, args] =
      'path' in helper
        ? [helper.path, [...drop, this.journalFile, daemon, process.execPath, script, '--now', this.journalFile, daemon, level]]
        : [process.execPath, [script, this.journalFile, daemon, level]];
    // Detached: its own session, so a Ctrl-C meant for tunroute does not reach it. It waits for
    // EOF on the pipe, which comes when tunroute exits in any way, kill -9 included.
    const child = spawn(command, args, {
      detached: true,
      stdio: ['pipe', 'ignore', 'inherit'],
      // It shares our stderr: its lines in our format, also when --log-format overrides the terminal's.
      env: { ...process.env, [LOG_FORMAT_ENV]: resolveLogFormat(this.opts.config.log.format) },
    });
    child.on('error', (e) => this.opts.log.warn({ err: e }, 'watchdog failed to start'));
    child.stdin?.on('error', () => undefined);
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    this.watchdogProc = child;
    if ('path' in helper) this.opts.log.debug({ pid: child.pid, helper: helper.path }, 'watchdog started (native helper)');
    else this.opts.log.debug({ pid: child.pid, why: helper.unusable }, 'watchdog started (Node.js: the native helper is not usable)');
  }

  /** Close the watchdog's pipe: it finds no journal and exits; wait a moment so it is reaped, not left a zombie. */
  private releaseWatchdog(): Promise<void> {
    const child = this.watchdogProc;
    this.watchdogProc = undefined;
    if (child === undefined) return Promise.resolve();
    child.stdin?.end();
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 2000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Undo every change and remove the journal. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopWatching?.();
      if (this.followTimer) clearTimeout(this.followTimer);
      if (this.resumeTicker) clearInterval(this.resumeTicker);
      await this.following.catch(() => undefined);
      if (this.journal !== undefined) {
        const t0 = performance.now();
        // Usually refused once `up` gave up root; the device's settings go with it (resolved.ts).
        if (this.journal.resolved !== undefined) await revertResolvedLink(this.journal.resolved.dev, this.opts.log, this.opts.resolvectl);
        const r = await removeChanges(invert(this.changes), this.runner, this.opts.log);
        if (this.journal.apps !== undefined) await tearDownApps(this.journal.apps, this.opts.log);
        if (this.journal.nmUnmanaged !== undefined) await manageDevice(this.journal.nmUnmanaged, this.opts.log, this.opts.networkManager === false ? {} : this.opts.networkManager);
        removeFile(this.journalFile);
        pruneStateDir(dirname(this.journalFile));
        const removeMs = Math.round((performance.now() - t0) * 10) / 10;
        this.opts.log.info({ dev: this.plan_.dev, changes: this.changes.length, alreadyGone: r.failed, removeMs }, 'routes removed');
      }
      await this.releaseWatchdog();
    })();
    return this.stopping;
  }
}
