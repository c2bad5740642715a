/**
 * The state dir holds the journals that `down` (as root) turns into `ip` commands and whose
 * pids it signals: whoever can write there can steer root. So before tunroute reads or writes a
 * journal, the dir and every dir above it up to / must be owned by root or by the user running
 * tunroute, and writable by no one else:
 *
 *   - the state dir itself: never writable by group or others;
 *   - a parent: not writable by group or others, unless it has the sticky bit (like /tmp). In a
 *     sticky dir another user may add entries of their own but cannot rename or remove ours, so
 *     our state dir in it (checked to be ours) cannot be swapped for theirs. A state dir that
 *     someone else created there first is theirs, and is refused.
 *
 * The check runs on the real path (symlinks resolved), so every dir it relies on is checked.
 */
import { lstatSync, mkdirSync, readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { TunrouteError, shown } from '../errors.js';

const S_ISVTX = 0o1000;

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** Who may own the dirs tunroute trusts: root and the user running it. */
function trustedOwner(uid: number): boolean {
  const me = process.geteuid?.() ?? 0;
  return uid === 0 || uid === me;
}

/** What is wrong with one dir (undefined: nothing); `self` is the state dir itself. */
function problemOf(st: Stats, self: boolean): string | undefined {
  if (!st.isDirectory()) return 'is not a directory';
  if (!trustedOwner(st.uid)) return `is owned by uid ${st.uid}, not by root or the user running tunroute`;
  const writable = (st.mode & 0o022) !== 0;
  if (writable && (self || (st.mode & S_ISVTX) === 0)) {
    const who = (st.mode & 0o022) === 0o022 ? 'its group and other users' : (st.mode & 0o020) !== 0 ? 'its group' : 'other users';
    return `is writable by ${who} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  }
  return undefined;
}

function unsafe(stateDir: string, dir: string, problem: string): TunrouteError {
  const which = dir === stateDir ? `The state directory ${shown(stateDir)}` : `The state directory ${shown(stateDir)} lies in ${shown(dir)}, which`;
  return new TunrouteError(
    'TR_STATE_DIR',
    `${which} ${problem}, so another user could plant the route journals root acts on: make it owned by root and not writable by group or others (chown root, chmod go-w), or pass another --state-dir.`,
  );
}

/**
 * Refuse a state dir that another user could write (see the module comment). With `create`, a
 * missing dir (and missing parents) is made, mode 0755, after the dirs above it pass; without,
 * a missing dir is fine (it holds nothing) and false is returned.
 */
export function checkStateDir(stateDir: string, opts: { create?: boolean } = {}): boolean {
  return check(stateDir, stateDir, opts.create === true);
}

function check(stateDir: string, dir: string, create: boolean): boolean {
  const self = dir === stateDir;
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (e) {
    if (errCode(e) !== 'ENOENT') {
      throw new TunrouteError('TR_STATE_DIR', `Cannot inspect the state directory ${shown(stateDir)} (${errCode(e) ?? String(e)}): run tunroute as root, or pass another --state-dir.`, e);
    }
    // Check the nearest existing dir above (and all above it), then create the rest.
    const parent = dirname(dir);
    if (parent === dir || !check(stateDir, parent, create) || !create) return false;
    try {
      mkdirSync(dir, { mode: 0o755 });
    } catch (err) {
      if (errCode(err) !== 'EEXIST') {
        throw new TunrouteError('TR_ROUTE_APPLY', `Cannot create the state directory ${shown(stateDir)} (${errCode(err) ?? String(err)}): pass a writable one with --state-dir.`, err);
      }
    }
    return check(stateDir, dir, false);
  }
  let cur = real;
  for (let first = true; ; first = false) {
    const problem = problemOf(lstatSync(cur), self && first);
    if (problem !== undefined) throw unsafe(stateDir, self && first ? stateDir : cur, problem);
    const up = dirname(cur);
    if (up === cur) return true;
    cur = up;
  }
}

/** The state dir of a tunroute in the host's network namespace. */
export const HOST_STATE_DIR = '/run/tunroute';

/**
 * Where journals live unless --state-dir says otherwise. Routes belong to a network namespace,
 * and so do journals: inside a named namespace (`ip netns exec NAME`, as the lab runs
 * tunroute) it is /run/tunroute/netns/NAME, so a `down` on the host never sees, let alone
 * undoes, a namespace's journal (and /run is shared between namespaces).
 */
export function defaultStateDir(): string {
  try {
    const self = statSync('/proc/self/ns/net');
    for (const name of readdirSync('/run/netns')) {
      try {
        const s = statSync(join('/run/netns', name));
        if (s.dev === self.dev && s.ino === self.ino) return join(HOST_STATE_DIR, 'netns', name);
      } catch {
        // A namespace being deleted.
      }
    }
  } catch {
    // No named namespaces here.
  }
  return HOST_STATE_DIR;
}

