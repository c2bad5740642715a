/**
 * Is the process a journal names still the tunroute that wrote it? `down` sends SIGTERM to a
 * journal's pid and `up` refuses to start beside it, so the answer must not be fooled by a pid
 * that was reused, or by a journal that names some other process: a pid counts as the journal's
 * owner only if all of these hold (read from /proc, which the process cannot forge):
 *
 *   - its start time (/proc/PID/stat field 22) is the one the journal recorded (`pidStart`);
 *   - its executable (/proc/PID/exe) is the node binary that runs this tunroute;
 *   - its command line holds this install's CLI entry script (dist/cli/main.js).
 *
 * Copying a pid's start time from /proc into a journal is easy; making an unrelated process run
 * our node with our script is not. A program that embeds tunroute (src/index.ts) runs its own
 * script, so its journal's pid never counts as a running tunroute: `down` undoes its routes
 * without signalling it.
 */
import { readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The CLI entry script of this install (dist/cli/main.js beside dist/routes/owner.js). */
export const CLI_ENTRY = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** /proc/PID/stat's start time (clock ticks since boot), or undefined if there is no such process (or a zombie). */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const st = rest[0];
    if (st === 'Z' || st === 'X') return undefined; // a zombie holds no routes
    return rest[19];
  } catch {
    return undefined;
  }
}

/** The real path of `p`, or `p` itself when it does not exist (a path compares as written then). */
function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Whether process `pid` is node (ours) running this install's CLI entry script. */
export function runsOurCli(pid: number, entry: string = CLI_ENTRY): boolean {
  let exe: string;
  let args: string[];
  let cwd: string;
  try {
    // An upgrade that replaced the binary leaves " (deleted)" on the running one's link.
    exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
    args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(1);
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return false; // gone, or not ours to inspect
  }
  if (exe !== real(process.execPath)) return false;
  const want = real(entry);
  // Node's options come before the script (and `node -e CODE ARGS`): look at every argument.
  return args.some((a) => a !== '' && real(isAbsolute(a) ? a : resolve(cwd, a)) === want);
}

/**
 * Whether the journal's writer (pid and recorded start time) is still running as a tunroute of
 * this install. A journal without a start time (written before it was required) never counts:
 * its pid is never signalled, and its changes may be undone.
 */
export function ownerAlive(pid: number, pidStart: string | undefined, entry: string = CLI_ENTRY): boolean {
  if (pidStart === undefined) return false;
  return processStartTime(pid) === pidStart && runsOurCli(pid, entry);
}
