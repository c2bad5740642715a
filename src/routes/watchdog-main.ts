/**
 * The watchdog: a small process `up` starts beside itself (detached, in its own session). It
 * holds the read end of a pipe from tunroute; EOF means tunroute has exited, whatever the way
 * (SIGTERM, crash, kill -9, OOM killer). Then:
 *   - tunroute cleaned up (no journal of its pid left): nothing to do;
 *   - the kill switch is on: leave everything (fail closed) and say so;
 *   - otherwise: undo the journal, exactly as `tunroute down` would, and say so.
 *
 *   node watchdog-main.js [--now] JOURNAL_PATH DAEMON_PID [LOG_LEVEL]
 *
 * Usually the waiting is done by the native helper (native/watchdog.c, ~1 MB instead of this
 * process's ~44 MB idle): it execs this script with --now once tunroute is gone and its journal
 * is left, and this script acts at once instead of waiting on the pipe. Without the helper
 * built, this script waits itself.
 *
 * Under systemd, prefer the unit in config/ (ExecStopPost=tunroute down --keep-kill-switch):
 * systemd stops every process of the unit, this one included.
 */
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { LevelWithSilent } from 'pino';
import type { Logger } from '../logger.js';

// Only node: built-ins load up front. The watchdog idles for the daemon's whole life, and the
// logger (pino), the journal's schema (zod) and the route planner cost ~12 MB of heap that it
// needs only in the rare case that tunroute died without cleaning up: they load then.

const argv = process.argv.slice(2);
// --now: the native helper saw tunroute go; act without waiting on the pipe.
const now = argv[0] === '--now';
const [journal, pidArg, levelArg] = now ? argv.slice(1) : argv;
const daemonPid = Number(pidArg);
const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const level = (levelArg !== undefined && LEVELS.has(levelArg) ? levelArg : 'info') as LevelWithSilent;

if (journal === undefined || !Number.isInteger(daemonPid) || daemonPid <= 0) {
  process.stderr.write('usage: watchdog-main.js [--now] JOURNAL_PATH DAEMON_PID [LOG_LEVEL]\n');
  process.exit(2);
}
const dev = /^routes-(.+)\.json$/.exec(basename(journal))?.[1];

async function watchdogLogger(): Promise<Logger> {
  const { createLogger, LOG_FORMAT_ENV, LOG_FORMATS } = await import('../logger.js');
  const format = LOG_FORMATS.find((f) => f === process.env[LOG_FORMAT_ENV]) ?? 'auto';
  return createLogger(level, format).child({ role: 'watchdog', daemon: daemonPid });
}

let done = false;
async function daemonGone(why: string): Promise<void> {
  if (done) return;
  done = true;
  // The common case, tunroute removed its journal on the way out: nothing to load.
  if (!existsSync(journal)) {
    if (level === 'debug' || level === 'trace') (await watchdogLogger()).debug({ why }, 'tunroute exited and cleaned up after itself');
    return;
  }
  const log = await watchdogLogger();
  try {
    const [{ readJournal }, { cleanupJournals }, { ipBatchRunner }] = await Promise.all([import('./journal.js'), import('./teardown.js'), import('./apply.js')]);
    const j = readJournal(journal);
    if (j === undefined || j.pid !== daemonPid) {
      log.debug({ why }, 'tunroute exited and cleaned up after itself');
      return;
    }
    const entries = await cleanupJournals({
      stateDir: dirname(journal),
      dev,
      runner: ipBatchRunner,
      log,
      live: 'skip',
      keepKillSwitch: true,
      onlyPid: daemonPid,
    });
    for (const e of entries) {
      if (e.outcome === 'kept-kill-switch') {
        log.warn({ dev: e.dev, changes: e.changes }, `tunroute (pid ${daemonPid}) died; kill switch on: tunneled destinations stay unreachable until \`tunroute down\``);
      } else if (e.outcome === 'removed') {
        log.warn({ dev: e.dev, changes: e.changes, alreadyGone: e.alreadyGone }, `tunroute (pid ${daemonPid}) died: the watchdog restored the network (removed its ${e.changes} route/rule changes)`);
      }
    }
  } catch (e) {
    log.error({ err: e }, 'the watchdog could not restore the network: run tunroute down');
    process.exitCode = 1;
  }
}

if (now) {
  void daemonGone('seen by the native watchdog');
} else {
  process.stdin.on('end', () => void daemonGone('pipe closed'));
  process.stdin.on('error', () => void daemonGone('pipe error'));
  process.stdin.resume();
  // A second way to notice, in case the pipe is held open by someone else.
  setInterval(() => {
    try {
      process.kill(daemonPid, 0);
    } catch {
      void daemonGone('pid gone').then(() => process.exit());
    }
  }, 2000).unref();
}
// Signals from a terminal or a tidy-up should not stop us before the daemon is gone.
for (const s of ['SIGINT', 'SIGHUP'] as const) process.on(s, () => undefined);
