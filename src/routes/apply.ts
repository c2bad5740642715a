/**
 * Executes a RoutePlan through iproute2's batch mode: one process for the whole plan, so ten
 * thousand routes cost one fork, not ten thousand. The runner is an interface so tests can
 * record the lines instead of changing a routing table.
 */
import { spawn } from 'node:child_process';
import { TunrouteError } from '../errors.js';
import type { Logger } from '../logger.js';
import { invert, toIpBatch, type RoutePlan } from './plan.js';

export interface BatchResult {
  ok: boolean;
  /** 1-based line of the first failing command, when ip reported one. */
  failedLine?: number;
  stderr: string;
}

export interface IpRunner {
  /** Runs the lines as one `ip -batch`; with force, ip goes on past failing lines. */
  batch(lines: readonly string[], force: boolean): Promise<BatchResult>;
}

export const ipBatchRunner: IpRunner = {
  batch(lines, force) {
    return new Promise((resolve) => {
      const args = force ? ['-force', '-batch', '-'] : ['-batch', '-'];
      const child = spawn('ip', args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d: string) => {
        stderr += d;
      });
      child.on('error', (e) => resolve({ ok: false, stderr: `cannot run ip: ${e.message}` }));
      child.on('close', (code) => {
        const m = /Command failed -:(\d+)/.exec(stderr);
        resolve({ ok: code === 0, failedLine: m ? Number(m[1]) : undefined, stderr: stderr.trim() });
      });
      child.stdin.end(lines.join('\n') + '\n');
    });
  },
};

/**
 * Apply `plan.up`. If a line fails, whatever was applied before it is undone before the
 * error is thrown, so a failed `up` leaves the host as it found it.
 */
export async function applyPlan(plan: RoutePlan, runner: IpRunner, log: Logger): Promise<void> {
  const lines = toIpBatch(plan.up, 'apply');
  if (lines.length === 0) return;
  const res = await runner.batch(lines, false);
  if (res.ok) {
    log.info({ dev: plan.dev, changes: lines.length, routes: plan.prefixes.length }, 'routes applied');
    return;
  }
  const failed = res.failedLine ?? 1;
  const applied = plan.up.slice(0, failed - 1);
  const undo = toIpBatch(invert(applied), 'undo');
  if (undo.length > 0) await runner.batch(undo, true);
  const why = res.stderr.split('\n')[0] ?? 'unknown error';
  throw new TunrouteError(
    'TR_ROUTE_APPLY',
    `Setting up ${plan.dev} failed at "ip ${lines[failed - 1] ?? lines[0]}" (${why}): check that the route does not exist already and that nothing else manages ${plan.dev}.`,
  );
}

/** Undo `plan.up`; goes on past errors (a route may already be gone) and logs them. */
export async function removePlan(plan: RoutePlan, runner: IpRunner, log: Logger): Promise<void> {
  const lines = toIpBatch(plan.down, 'undo');
  if (lines.length === 0) return;
  const res = await runner.batch(lines, true);
  if (res.ok) log.info({ dev: plan.dev, changes: lines.length }, 'routes removed');
  else log.warn({ dev: plan.dev, stderr: res.stderr }, 'some routes were already gone');
}
