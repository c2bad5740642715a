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
import type { Logger } from '../logger.js';
import { applyOps, ipBatchRunner, removeChanges, type IpRunner } from './apply.js';
import { hostProbe, probeRouteEnv, type HostProbe, type NetworkView, type RouteEnv } from './host.js';
import { createJournal, journalPath, processStartTime, pruneStateDir, removeFile, replaceJournal, resolveStateDir, type Journal } from './journal.js';
import { invert, planRoutes, toIpLine, type Change, type RoutePlan } from './plan.js';
import { cleanupJournals } from './teardown.js';
import { pinUpstreams, upstreamsOf } from './upstreams.js';

/** Watches the routing table; calls back on any change not made by tunroute. Returns a stop function. */
export type RouteWatcher = (onChange: () => void) => () => void;

export interface RouteManagerOptions {
  config: Config;
  log: Logger;
  runner?: IpRunner;
  host?: HostProbe;
  /** Start the watchdog process (default config.routes.watchdog). */
  watchdog?: boolean;
  /** Follow default-route changes (default: `ip -4 monitor route`; false: do not). */
  watchRoutes?: RouteWatcher | false;
  /** Wait this long after a route change before re-reading the host (default 300 ms). */
  followDebounceMs?: number;
}

/** `ip -4 monitor route`, ignoring tunroute's own changes (proto 211). */
export function ipMonitorWatcher(netns?: string): RouteWatcher {
  return (onChange) => {
    const args = [...(netns === undefined ? [] : ['-n', netns]), '-4', 'monitor', 'route'];
    const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'ignore'] });
    child.on('error', () => undefined);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (d.split('\n').some((l) => l.trim() !== '' && !l.includes('proto 211'))) onChange();
    });
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    return () => {
      child.kill('SIGTERM');
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
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly opts: RouteManagerOptions,
    private readonly host: HostProbe,
    private readonly runner: IpRunner,
    /** The config with upstream host names pinned to the addresses kept out of the tunnel. */
    readonly config: Config,
    plan: RoutePlan,
    env: RouteEnv,
    readonly journalFile: string,
  ) {
    this.plan_ = plan;
    this.env = env;
  }

  get plan(): RoutePlan {
    return this.plan_;
  }

  /** Read the host, plan, clean up after a dead tunroute. Changes nothing of a running system. */
  static async prepare(opts: RouteManagerOptions): Promise<RouteManager> {
    const { config, log } = opts;
    const host = opts.host ?? hostProbe();
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
    const stale = await cleanupJournals({ stateDir, dev: plan.dev, runner, log, live: 'refuse' });
    for (const s of stale) {
      log.warn(
        { dev: s.dev, pid: s.pid, startedAt: s.startedAt, changes: s.changes, alreadyGone: s.alreadyGone, journal: file },
        `found a stale route journal of tunroute pid ${s.pid} (no longer running): removed the ${s.changes} changes it listed`,
      );
    }
    if (plan.table !== 'main' && plan.changes.length > 0) {
      const used = await host.tableInUse(plan.table, plan.ipv6 === 'guarded');
      if (used !== undefined) {
        throw new TunrouteError(
          'TR_ROUTE_APPLY',
          `Routing table ${plan.table} is already in use (${used}): another program owns it; give tunroute another one with --table N (routes.table).`,
        );
      }
    }
    return new RouteManager(opts, host, runner, pinned, plan, env, file);
  }

  /** Journal, watchdog, apply. The device must exist (routes name it). */
  async apply(): Promise<void> {
    const { log } = this.opts;
    const plan = this.plan_;
    this.journal = {
      version: 1,
      tool: 'tunroute',
      dev: plan.dev,
      pid: process.pid,
      pidStart: processStartTime(process.pid),
      startedAt: new Date().toISOString(),
      killSwitch: plan.killSwitch,
      changes: plan.changes,
      explain: plan.explain,
    };
    const t0 = performance.now();
    createJournal(this.journalFile, this.journal);
    const t1 = performance.now();
    if (this.opts.watchdog ?? this.opts.config.routes.watchdog) this.startWatchdog();
    try {
      await applyOps(plan.up, plan.dev, this.runner, log);
    } catch (e) {
      removeFile(this.journalFile);
      pruneStateDir(dirname(this.journalFile));
      this.journal = undefined;
      this.releaseWatchdog();
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
    if (plan.mode !== 'none' && this.opts.config.routes.lan === 'auto' && this.opts.watchRoutes !== false) {
      const watch = this.opts.watchRoutes ?? ipMonitorWatcher();
      this.stopWatching = watch(() => this.scheduleFollow());
    }
  }

  private scheduleFollow(): void {
    if (this.stopping) return;
    if (this.followTimer) clearTimeout(this.followTimer);
    this.followTimer = setTimeout(() => {
      this.followTimer = undefined;
      this.following = this.following.then(async () => void (await this.follow())).catch((e: unknown) => this.opts.log.error({ err: e }, 'following the default route failed'));
    }, this.opts.followDebounceMs ?? 300);
    this.followTimer.unref();
  }

  /** Re-read the network; if the default route or LAN changed, apply the difference. */
  async follow(): Promise<{ added: number; removed: number } | undefined> {
    if (this.stopping || this.journal === undefined) return undefined;
    const { log } = this.opts;
    const network = await this.host.network();
    if (sameNetwork(network, this.env.network)) return undefined;
    const env: RouteEnv = { ...this.env, network };
    const next = planRoutes(this.opts.config, env);
    const have = new Set(this.changes.map(changeKey));
    const want = new Set(next.changes.map(changeKey));
    const added = next.changes.filter((c) => !have.has(changeKey(c)));
    const removed = this.changes.filter((c) => !want.has(changeKey(c)));
    // Journal first: it lists the union while both old and new routes may exist.
    replaceJournal(this.journalFile, { ...this.journal, changes: [...this.changes, ...added], explain: next.explain });
    if (added.length > 0) await applyOps(added, next.dev, this.runner, log);
    if (removed.length > 0) await removeChanges(invert(removed), this.runner, log);
    this.changes = next.changes.slice();
    this.journal = { ...this.journal, changes: this.changes, explain: next.explain };
    replaceJournal(this.journalFile, this.journal);
    const old = this.env.network;
    this.env = env;
    this.plan_ = next;
    const upstreams = await Promise.all(
      env.upstreams.flatMap((u) => u.addrs.map(async (a) => ({ upstream: u.name, addr: a, path: await this.host.routeGet(a) }))),
    );
    const dr = network.defaultRoute;
    log.info(
      {
        defaultRoute: dr ?? null,
        was: old.defaultRoute ?? null,
        lan: network.lan,
        added: added.length,
        removed: removed.length,
        upstreams,
      },
      `default route changed (now ${dr === undefined ? 'none' : `via ${dr.via ?? '-'} dev ${dr.dev}`}): LAN bypass updated; upstream bypass follows the main table`,
    );
    return { added: added.length, removed: removed.length };
  }

  private startWatchdog(): void {
    const script = fileURLToPath(new URL('./watchdog-main.js', import.meta.url));
    if (!existsSync(script)) {
      this.opts.log.warn({ script }, 'watchdog not started: its script is missing (run from dist/)');
      return;
    }
    // Detached: its own session, so a Ctrl-C meant for tunroute does not reach it. It waits for
    // EOF on the pipe, which comes when tunroute exits in any way, kill -9 included.
    const child = spawn(process.execPath, [script, this.journalFile, String(process.pid), this.opts.config.log.level], {
      detached: true,
      stdio: ['pipe', 'ignore', 'inherit'],
    });
    child.on('error', (e) => this.opts.log.warn({ err: e }, 'watchdog failed to start'));
    child.stdin?.on('error', () => undefined);
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    this.watchdogProc = child;
    this.opts.log.debug({ pid: child.pid }, 'watchdog started');
  }

  private releaseWatchdog(): void {
    this.watchdogProc?.stdin?.end();
    this.watchdogProc = undefined;
  }

  /** Undo every change and remove the journal. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopWatching?.();
      if (this.followTimer) clearTimeout(this.followTimer);
      await this.following.catch(() => undefined);
      if (this.journal !== undefined) {
        const t0 = performance.now();
        const r = await removeChanges(invert(this.changes), this.runner, this.opts.log);
        removeFile(this.journalFile);
        pruneStateDir(dirname(this.journalFile));
        const removeMs = Math.round((performance.now() - t0) * 10) / 10;
        this.opts.log.info({ dev: this.plan_.dev, changes: this.changes.length, alreadyGone: r.failed, removeMs }, 'routes removed');
      }
      this.releaseWatchdog();
    })();
    return this.stopping;
  }
}
