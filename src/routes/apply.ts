/**
 * Executes route changes through iproute2's batch mode: one process per address family for the
 * whole plan, so ten thousand routes cost two forks, not ten thousand. The runner is an
 * interface so tests record the lines instead of changing a routing table, and the lab points
 * it at a namespace (`ip -n NS`).
 */
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import { TunrouteError } from '../errors.js';
import type { Logger } from '../logger.js';
import { batchesOf, invert, toIpLine, toIpCommand, type Change, type RouteOp, type RoutePlan } from './plan.js';

export interface BatchResult {
  ok: boolean;
  /** 1-based line of the first failing command, when ip reported one. */
  failedLine?: number;
  /** How many lines failed (with force, ip goes on past them). */
  failures?: number;
  stderr: string;
}

export interface IpRunner {
  /** Runs the lines as one `ip [-6] -batch`; with force, ip goes on past failing lines. */
  batch(lines: readonly string[], force: boolean, family?: 4 | 6): Promise<BatchResult>;
}

/** How much of ip's stderr a BatchResult keeps. */
const STDERR_KEPT = 64 * 1024;

export function createIpRunner(opts: { netns?: string } = {}): IpRunner {
  const ns = opts.netns === undefined ? [] : ['-n', opts.netns];
  return {
    batch(lines, force, family = 4) {
      return new Promise((resolve) => {
        const args = [...ns, ...(family === 6 ? ['-6'] : []), ...(force ? ['-force'] : []), '-batch', '-'];
        const child = spawn('ip', args, { stdio: ['pipe', 'ignore', 'pipe'] });
        // Read line by line and keep only the start: `down` after the device vanished has a
        // million failing deletions to report, two lines each.
        let stderr = '';
        let partial = '';
        let failures = 0;
        let failedLine: number | undefined;
        const onLine = (line: string): void => {
          const m = /^Command failed -:(\d+)/.exec(line);
          if (m) {
            failures++;
            failedLine ??= Number(m[1]);
          }
          if (stderr.length < STDERR_KEPT) stderr += line + '\n';
        };
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (d: string) => {
          const parts = (partial + d).split('\n');
          partial = parts.pop() ?? '';
          for (const l of parts) onLine(l);
        });
        child.on('error', (e) => resolve({ ok: false, stderr: `cannot run ip: ${e.message}` }));
        child.on('close', (code) => {
          if (partial !== '') onLine(partial);
          resolve({ ok: code === 0, failedLine, failures, stderr: stderr.trim() });
        });
        child.stdin.on('error', () => undefined); // ip died early; 'close' reports it
        writeLines(child.stdin, lines);
      });
    },
  };
}

/**
 * Feed `lines` to `out` a chunk at a time, waiting for 'drain': two million route lines are
 * ~120 MB of text, never built as one string.
 */
function writeLines(out: Writable, lines: readonly string[]): void {
  const CHUNK = 4096;
  let i = 0;
  const more = (): void => {
    while (i < lines.length) {
      const end = Math.min(i + CHUNK, lines.length);
      const ok = out.write(lines.slice(i, end).join('\n') + '\n');
      i = end;
      if (!ok) {
        out.once('drain', more);
        return;
      }
    }
    out.end();
  };
  out.once('close', () => (i = lines.length)); // ip died early: stop feeding it
  more();
}

export const ipBatchRunner: IpRunner = createIpRunner();

/**
 * Apply ops in order. If a line fails, whatever was applied before it is undone before the
 * error is thrown, so a failed `up` leaves the host as it found it.
 */
export async function applyOps(ops: readonly RouteOp[], dev: string, runner: IpRunner, log: Logger): Promise<void> {
  const applied: RouteOp[] = [];
  for (const b of batchesOf(ops)) {
    const lines = b.ops.map((o) => toIpLine(o, 'apply'));
    const res = await runner.batch(lines, false, b.family);
    // Loops, not push(...ops): a spread of a million arguments overflows the stack.
    if (res.ok) {
      for (const o of b.ops) applied.push(o);
      continue;
    }
    const failed = res.failedLine ?? 1;
    for (let i = 0; i < failed - 1 && i < b.ops.length; i++) applied.push(b.ops[i]);
    await removeChanges(invert(applied), runner, log);
    const why = res.stderr.split('\n')[0] ?? 'unknown error';
    const op = b.ops[failed - 1] ?? b.ops[0];
    throw new TunrouteError(
      'TR_ROUTE_APPLY',
      `Setting up ${dev} failed at "${toIpCommand(op, 'apply')}" (${why}): check that the route does not exist already and that nothing else manages ${dev}.`,
    );
  }
}

export interface RemoveResult {
  /** Changes whose deletion the kernel refused (mostly: already gone, e.g. with the device). */
  failed: number;
  stderr: string;
}

/** Delete changes (already in undo order); goes on past errors, because some may be gone already. */
export async function removeChanges(changes: readonly Change[], runner: IpRunner, log: Logger): Promise<RemoveResult> {
  let failed = 0;
  const errs: string[] = [];
  for (const b of batchesOf(changes)) {
    const res = await runner.batch(
      b.ops.map((o) => toIpLine(o, 'undo')),
      true,
      b.family,
    );
    if (!res.ok) {
      failed += res.failures ?? 1;
      errs.push(res.stderr);
    }
  }
  if (failed > 0) log.debug({ failed, stderr: errs.join('\n').slice(0, 2000) }, 'some changes were already gone');
  return { failed, stderr: errs.join('\n') };
}

/** Apply `plan.up` (device settings, routes, rules). */
export async function applyPlan(plan: RoutePlan, runner: IpRunner, log: Logger): Promise<void> {
  await applyOps(plan.up, plan.dev, runner, log);
  log.info({ dev: plan.dev, changes: plan.changes.length, routes: plan.prefixes.length }, 'routes applied');
}

/** Undo `plan.up`. */
export async function removePlan(plan: RoutePlan, runner: IpRunner, log: Logger): Promise<RemoveResult> {
  const r = await removeChanges(plan.down, runner, log);
  log.info({ dev: plan.dev, changes: plan.down.length, alreadyGone: r.failed }, 'routes removed');
  return r;
}
