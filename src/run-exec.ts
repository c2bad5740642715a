/**
 * `tunroute exec [--outbound NAME | --direct] -- COMMAND…`: run a program whose every socket,
 * its children's included, takes one path (routes/apps.ts says how). It reads the running
 * tunroute's journal for its cgroups, makes a leaf cgroup of its own below the chosen one
 * (`exec-<pid>`), and starts the command through a shell that moves itself into the leaf and
 * then execs the command: the program's first socket is already in the cgroup. It waits, passes
 * SIGTERM and SIGHUP on, removes the leaf (or leaves it to `down` while a daemonized child still
 * lives there) and exits as the program did.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import { TunrouteError } from './errors.js';
import type { Logger } from './logger.js';
import { journalPath, ownerAlive, readJournal } from './routes/journal.js';

export interface ExecOptions {
  readonly stateDir: string;
  readonly dev: string;
  /** An outbound's name, or undefined with `direct`. */
  readonly outbound?: string;
  readonly direct: boolean;
  readonly argv: readonly string[];
  readonly log: Logger;
}

/** The cgroup the program goes under, from the running tunroute's journal; errors say what to do. */
export function execGroup(o: Pick<ExecOptions, 'stateDir' | 'dev' | 'outbound' | 'direct'>): string {
  if (o.direct === (o.outbound !== undefined)) throw new TunrouteError('TR_BAD_FLAG', 'tunroute exec needs exactly one of --direct or --outbound NAME.');
  const file = journalPath(o.stateDir, o.dev);
  const j = readJournal(file);
  if (j === undefined) throw new TunrouteError('TR_CONTROL', `No tunroute is running on ${o.dev} (no journal ${file}): start it with tunroute up first.`);
  if (!ownerAlive(j.pid, j.pidStart)) throw new TunrouteError('TR_CONTROL', `The tunroute that ran ${o.dev} (pid ${j.pid}) is gone: run tunroute down, then tunroute up.`);
  if (j.apps === undefined) throw new TunrouteError('TR_CONTROL', `Per-app routing is off in the running tunroute (${j.appsOff ?? 'an older version'}).`);
  if (o.direct) return j.apps.direct;
  const name = o.outbound as string;
  const group = Object.hasOwn(j.apps.outbounds, name) ? j.apps.outbounds[name] : undefined;
  if (group === undefined) {
    const known = Object.keys(j.apps.outbounds);
    throw new TunrouteError(
      'TR_BAD_FLAG',
      `The flag --outbound ${JSON.stringify(name).slice(0, 40)} names no outbound a program can be sent to (${known.length === 0 ? 'none: routes.perApp is "direct", or no SOCKS5/HTTP outbound is configured' : `known: ${known.join(', ')}`}).`,
    );
  }
  return group;
}

/** Run the command in a fresh leaf below `group`; resolves with the exit code to pass on. */
export async function runExec(o: ExecOptions): Promise<number> {
  if (o.argv.length === 0) throw new TunrouteError('TR_BAD_FLAG', 'tunroute exec needs a command: tunroute exec --direct -- curl https://example.com');
  const group = execGroup(o);
  const leaf = `${group}/exec-${process.pid}`;
  try {
    mkdirSync(leaf, { mode: 0o755 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    if (code === 'EACCES' || code === 'EPERM') throw new TunrouteError('TR_NOT_ROOT', `tunroute exec needs root to move a program into tunroute's cgroups (${code} on ${group}): run it with sudo (and sudo -u USER inside the command to drop root).`, e);
    throw new TunrouteError('TR_CONTROL', `Cannot create the cgroup ${leaf} (${code}): is the running tunroute's per-app routing intact? Restart it with tunroute down and up.`, e);
  }
  o.log.debug({ cgroup: leaf, argv: o.argv[0] }, 'running the command in its cgroup');
  // The shell writes its own pid into the leaf, then becomes the command: nothing of the
  // program runs outside the cgroup.
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', leaf, ...o.argv], { stdio: 'inherit' });
  const pass = (sig: NodeJS.Signals): void => {
    if (child.pid !== undefined) child.kill(sig);
  };
  // SIGINT from a terminal reaches the whole foreground group already: only these need passing on.
  const onTerm = (): void => pass('SIGTERM');
  const onHup = (): void => pass('SIGHUP');
  const onInt = (): void => undefined; // we wait for the program, which decides what Ctrl-C means
  process.on('SIGTERM', onTerm);
  process.on('SIGHUP', onHup);
  process.on('SIGINT', onInt);
  const code = await new Promise<number>((resolve) => {
    child.on('error', (e) => {
      o.log.error({ err: e }, 'cannot start /bin/sh');
      resolve(127);
    });
    child.on('exit', (c, sig) => resolve(c ?? 128 + (sig === null ? 0 : (signalNumber(sig) ?? 0))));
  });
  process.off('SIGTERM', onTerm);
  process.off('SIGHUP', onHup);
  process.off('SIGINT', onInt);
  try {
    rmdirSync(leaf);
  } catch (e) {
    // A child that daemonized still lives in it: `down` removes the leaf once it is empty.
    o.log.debug({ cgroup: leaf, code: (e as NodeJS.ErrnoException).code }, 'the cgroup stays: a process of the command still runs in it');
  }
  return code;
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  const table: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13 };
  return table[sig];
}
