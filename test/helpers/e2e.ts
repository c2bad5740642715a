/**
 * Shared pieces of the end-to-end tests: whether the lab can run here (root, ip, /dev/net/tun),
 * and how to start the built `tunroute` inside a lab namespace and read its structured logs.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { labAvailable, type LabProcess, type Namespace } from '../../tools/lab/index.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT}dist/cli/main.js`;

/** Whether the end-to-end tests can run; when not, the reason is printed once (never silent). */
export function e2eAvailable(suite: string): boolean {
  const lab = labAvailable();
  let reason = lab.ok ? undefined : lab.reason;
  if (!reason && !existsSync(CLI)) reason = `${CLI} is not built (npm test builds it first)`;
  if (reason) {
    process.stdout.write(`\n[skipped] ${suite}: end-to-end tests need the lab: ${reason}\n`);
    return false;
  }
  return true;
}

let controlSeq = 0;

/** A control-socket path of this lab (never the host's default /run/tunroute). */
export function controlPathFor(ns: Namespace): string {
  return `${ns.lab.tmpDir}/control-${++controlSeq}.sock`;
}

/**
 * Run `tunroute up ARGS` in the namespace and wait until it says it is up. Unless ARGS name
 * one, the control socket goes into the lab's temp dir, so parallel labs never share one.
 */
export async function startTunrouteIn(ns: Namespace, args: readonly string[], name = 'tunroute'): Promise<LabProcess> {
  const control = args.includes('--control') ? [] : ['--control', controlPathFor(ns)];
  const proc = ns.spawn(['node', CLI, 'up', ...control, ...args], { name });
  await proc.waitForLine(/"msg":"tunroute is up"/, 15_000);
  return proc;
}

export interface LogLine {
  msg?: string;
  [k: string]: unknown;
}

/** Every JSON log line a tunroute process printed so far. */
export function logLines(proc: LabProcess): LogLine[] {
  const out: LogLine[] = [];
  for (const line of proc.output().stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut by the output cap: not ours to judge
    }
  }
  return out;
}

/** The counters tunroute logs when it stops. */
export function finalCounters(proc: LabProcess): LogLine | undefined {
  return logLines(proc).find((l) => l.msg === 'tunroute stopped; packet counters');
}

/** What `up` and `down` must leave exactly as they found it. */
export async function routingSnapshot(ns: Namespace): Promise<string> {
  // IPv4 only: a fresh veth's IPv6 link-local routes appear on their own a moment later.
  const r = await ns.sh('ip -4 route show table all; echo ---; ip -4 rule; echo ---; ip -o link show | cut -d: -f2');
  return r.stdout;
}

/**
 * A client namespace's TCP receive-buffer limits (net.ipv4.tcp_rmem) for tests that reset a
 * slow reader's flow: Linux returns the data already queued on a socket before it reports the
 * reset, so with the default 32 MiB limit a rate-limited curl sees a reset only after draining up
 * to tens of MB. 256 KiB keeps that under a second at the tests' rates.
 */
export const SMALL_TCP_RMEM = '4096 131072 262144';
