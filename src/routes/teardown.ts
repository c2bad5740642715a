/**
 * Undo what journals list: `tunroute down`, the watchdog after a crash, and `up` when it finds
 * a stale journal. Each journal is first claimed (renamed), so two cleaners never undo the same
 * journal, and deletions go on past "already gone" (the device took its routes with it).
 * Nothing a journal does not list is touched.
 */
import type { Logger } from '../logger.js';
import { TunrouteError } from '../errors.js';
import { removeChanges, type IpRunner } from './apply.js';
import { invert, type Change } from './plan.js';
import { claimJournal, listStateFiles, ownerAlive, pruneInstanceDirs, pruneStateDir, readJournal, removeFile, replaceJournal, journalOf, type StoredJournal } from './journal.js';
import { renameSync } from 'node:fs';
import { tearDownApps } from './cgroup.js';
import { manageDevice, type NmOptions } from './network-manager.js';
import { revertResolvedLink, type ResolvectlOptions } from './resolved.js';

export interface CleanupOptions {
  stateDir: string;
  /** Only this device's journal; default all. */
  dev?: string;
  runner: IpRunner;
  log: Logger;
  /**
   * A journal whose tunroute still runs: 'refuse' (a second `up`: error), 'stop' (`down`:
   * SIGTERM it and let it clean up after itself) or 'skip' (the watchdog). "Still runs" means
   * the journal's pid, with the start time it recorded, is node running this install's CLI
   * (owner.ts); any other process is never signalled, and its journal's changes are undone.
   */
  live: 'refuse' | 'stop' | 'skip';
  /** Leave journals made with the kill switch in place (the watchdog, `down --keep-kill-switch`). */
  keepKillSwitch?: boolean;
  /** Only the journal written by this PID (the watchdog's daemon). */
  onlyPid?: number;
  /** How long `down` waits for a running tunroute to stop (default 10 s). */
  stopTimeoutMs?: number;
  /** How nmcli is found (tests; see network-manager.ts). */
  networkManager?: NmOptions;
  /** How resolvectl is found, and whether a link exists (tests; see resolved.ts). */
  resolvectl?: ResolvectlOptions & { exists?: (dev: string) => Promise<boolean> };
  /** Injected for tests. */
  kill?: (pid: number, signal: NodeJS.Signals) => void;
  /** Injected for tests: whether the journal's writer still runs as tunroute (default owner.ts). */
  ownerAlive?: (pid: number, pidStart: string | undefined) => boolean;
  /**
   * Changes to leave in place (a new `up` adopts them: its plan has them too, so the kill
   * switch and the IPv6 guard never open while it restarts). They stay listed in the journal,
   * still under the dead tunroute's name, until the new one takes the journal over.
   */
  keep?: (c: Change) => boolean;
}

export type CleanupOutcome =
  /** the journal's changes were deleted */
  | 'removed'
  /** a running tunroute was stopped and removed its own changes */
  | 'stopped'
  /** left alone: kill switch */
  | 'kept-kill-switch'
  /** left alone: its tunroute runs (live: 'skip') */
  | 'running';

export interface CleanupEntry {
  dev: string;
  pid: number;
  startedAt?: string;
  outcome: CleanupOutcome;
  /** Changes the journal listed. */
  changes: number;
  /** Of those, how many were gone already (e.g. routes through the vanished device). */
  alreadyGone: number;
  /** Left in place for the new tunroute (see CleanupOptions.keep). */
  kept?: Change[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function undoClaimed(claimed: string, j: StoredJournal, opts: CleanupOptions): Promise<CleanupEntry> {
  const keep = opts.keep ?? ((): boolean => false);
  const kept = j.changes.filter((c) => keep(c));
  const undo = j.changes.filter((c) => !keep(c));
  // resolved first, while the routes its DNS address needs are still there (a device that is
  // gone took its per-link DNS with it: see resolved.ts).
  if (j.resolved !== undefined) await revertResolvedLink(j.resolved.dev, opts.log, opts.resolvectl);
  const r = await removeChanges(invert(undo), opts.runner, opts.log);
  // Per-app routing (nft table, cgroups) never stays: a new `up` makes its own.
  if (j.apps !== undefined) await tearDownApps(j.apps, opts.log);
  if (j.nmUnmanaged !== undefined) await manageDevice(j.nmUnmanaged, opts.log, opts.networkManager);
  if (kept.length === 0) removeFile(claimed);
  else {
    // Back under its own name, listing only what is left: if the new tunroute dies before it
    // takes the journal over, the next down still finds these.
    const rest: StoredJournal = { ...j, changes: kept };
    delete rest.apps;
    delete rest.nmUnmanaged;
    delete rest.resolved;
    replaceJournal(claimed, rest);
    renameSync(claimed, journalOf(claimed));
  }
  const entry: CleanupEntry = { dev: j.dev, pid: j.pid, startedAt: j.startedAt, outcome: 'removed', changes: undo.length, alreadyGone: r.failed };
  return kept.length === 0 ? entry : { ...entry, kept };
}

/** Undo every (matching) journal in the state dir; see CleanupOptions for running daemons. */
export async function cleanupJournals(opts: CleanupOptions): Promise<CleanupEntry[]> {
  const out: CleanupEntry[] = [];
  const alive = opts.ownerAlive ?? ownerAlive;
  const files = listStateFiles(opts.stateDir, opts.dev);

  // A writer that died between writing and linking never applied anything.
  for (const t of files.temps) if (!pidAlive(t.pid)) removeFile(t.path);

  // Journals another cleaner took: wait for it, or finish its work if it died.
  for (const c of files.claims) {
    if (c.pid !== process.pid && pidAlive(c.pid)) {
      if (await waitUntil(() => !pidAlive(c.pid) || readJournalSafe(c.path) === undefined, 15_000)) continue;
      throw new TunrouteError('TR_ROUTE_APPLY', `Process ${c.pid} has been undoing ${journalOf(c.path)} for 15 s: wait for it, or stop it and run tunroute down again.`);
    }
    const j = readJournal(c.path);
    if (j === undefined) continue;
    if (opts.onlyPid !== undefined && j.pid !== opts.onlyPid) continue;
    const mine = `${journalOf(c.path)}.cleanup-${process.pid}`;
    if (c.path !== mine) renameSync(c.path, mine);
    out.push(await undoClaimed(mine, j, opts));
  }

  for (const { path } of files.journals) {
    const j = readJournal(path);
    if (j === undefined) continue;
    if (opts.onlyPid !== undefined && j.pid !== opts.onlyPid) continue;
    if (alive(j.pid, j.pidStart)) {
      if (opts.live === 'skip') {
        out.push({ dev: j.dev, pid: j.pid, startedAt: j.startedAt, outcome: 'running', changes: j.changes.length, alreadyGone: 0 });
        continue;
      }
      if (opts.live === 'refuse') {
        throw new TunrouteError('TR_TUN_BUSY', `${j.dev} is already in use by tunroute (pid ${j.pid}, since ${j.startedAt}): stop it first with \`tunroute down\`.`);
      }
      opts.log.info({ dev: j.dev, pid: j.pid }, 'stopping the running tunroute');
      try {
        (opts.kill ?? process.kill)(j.pid, 'SIGTERM');
      } catch {
        // Gone in the meantime.
      }
      const stopped = await waitUntil(() => !alive(j.pid, j.pidStart), opts.stopTimeoutMs ?? 10_000);
      if (!stopped) {
        throw new TunrouteError('TR_ROUTE_APPLY', `tunroute (pid ${j.pid}) did not stop within ${Math.round((opts.stopTimeoutMs ?? 10_000) / 1000)} s after SIGTERM: stop it with kill -9 ${j.pid}, then run tunroute down again.`);
      }
      if (readJournal(path) === undefined) {
        out.push({ dev: j.dev, pid: j.pid, startedAt: j.startedAt, outcome: 'stopped', changes: j.changes.length, alreadyGone: 0 });
        continue;
      }
      // It died without cleaning up: fall through and undo its journal.
    }
    if (opts.keepKillSwitch && j.killSwitch) {
      out.push({ dev: j.dev, pid: j.pid, startedAt: j.startedAt, outcome: 'kept-kill-switch', changes: j.changes.length, alreadyGone: 0 });
      continue;
    }
    const claimed = claimJournal(path);
    if (claimed === undefined) continue; // someone else is on it
    // Re-read: the claimed file is the one we undo, whatever happened before the rename.
    const jc = readJournal(claimed) ?? j;
    out.push(await undoClaimed(claimed, jc, opts));
  }
  // Device dirs left empty (a tunroute that gave up root cannot remove its own; a fake-IP table
  // keeps its dir, for the next `up`), then a namespace's state dir once empty.
  pruneInstanceDirs(opts.stateDir, opts.dev);
  pruneStateDir(opts.stateDir);
  return out;
}

function readJournalSafe(path: string): StoredJournal | undefined {
  try {
    return readJournal(path);
  } catch {
    return undefined;
  }
}

/** One line per entry, for `tunroute down` and logs. */
export function describeCleanup(entries: readonly CleanupEntry[], stateDir: string): string {
  if (entries.length === 0) return `nothing to undo: no tunroute journal in ${stateDir}`;
  return entries
    .map((e) => {
      const who = `tunroute (pid ${e.pid}, started ${e.startedAt ?? 'at an unknown time'})`;
      switch (e.outcome) {
        case 'removed': {
          const gone = e.alreadyGone > 0 ? ` (${e.alreadyGone} were already gone with the device)` : '';
          return `${e.dev}: removed the ${e.changes} route/rule changes ${who} had made${gone}`;
        }
        case 'stopped':
          return `${e.dev}: stopped ${who}; it removed its ${e.changes} route/rule changes`;
        case 'kept-kill-switch':
          return `${e.dev}: kill switch: left ${who}'s ${e.changes} changes in place (tunneled destinations stay unreachable); run tunroute down to open them`;
        case 'running':
          return `${e.dev}: ${who} is running`;
      }
    })
    .join('\n');
}
