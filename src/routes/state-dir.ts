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
import { chownSync, lstatSync, mkdirSync, readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
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

/** `dir` and every dir above it, from / down to `dir` (for checks that walk the chain in that order). */
export function dirsFromRoot(dir: string): string[] {
  const chain: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    chain.unshift(d);
    if (dirname(d) === d) return chain;
  }
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

/** The prefix of an instance dir (see instanceDirOf). */
export const INSTANCE_DIR_PREFIX = 'dev-';

/**
 * The dir of one device's files (its journal, its fake-IP table) inside the state dir:
 * `<stateDir>/dev-<dev>`. It exists so that a `tunroute up` that gives up root after start (see
 * src/privileges.ts) can still write its own files: root makes this dir and hands it to that
 * user, while the state dir itself stays root's.
 *
 * Why root may trust a dir here that another user owns: only root can add or rename entries of
 * the state dir (checked above), so a `dev-*` dir in it owned by someone else was given to that
 * user by root, which `up` does for the user it runs as. What that user can plant in it is a
 * journal, and a journal asks for nothing that user could not do already with CAP_NET_ADMIN
 * (remove routes and rules tunroute made; the pid it names is signalled only when it is a
 * tunroute of this install, owner.ts).
 */
export function instanceDirOf(stateDir: string, dev: string): string {
  return join(stateDir, `${INSTANCE_DIR_PREFIX}${dev}`);
}

/** Is `dir` an instance dir (by its name), as opposed to a state dir? */
export function isInstanceDir(dir: string): boolean {
  return basename(dir).startsWith(INSTANCE_DIR_PREFIX);
}

/**
 * Check (and with `create`, make) an instance dir: its state dir passes checkStateDir; the dir
 * itself is a real dir (never a symlink), writable by its owner only. With `owner`, a new or
 * root-owned dir is handed to that user (the files in it follow: see ownerOfFilesIn).
 * A missing dir without `create` holds nothing: false.
 */
export function checkInstanceDir(dir: string, opts: { create?: boolean; owner?: { uid: number; gid: number } } = {}): boolean {
  const stateDir = dirname(dir);
  if (!checkStateDir(stateDir, { create: opts.create }) && opts.create !== true) return false;
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (e) {
    if (errCode(e) !== 'ENOENT') throw new TunrouteError('TR_STATE_DIR', `Cannot inspect ${shown(dir)} (${errCode(e) ?? String(e)}): run tunroute as root, or pass another --state-dir.`, e);
    if (opts.create !== true) return false;
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if (errCode(err) !== 'EEXIST') throw new TunrouteError('TR_ROUTE_APPLY', `Cannot create ${shown(dir)} (${errCode(err) ?? String(err)}): pass a writable state directory with --state-dir.`, err);
    }
    st = lstatSync(dir);
  }
  if (!st.isDirectory() || (st.mode & 0o022) !== 0) {
    const what = st.isDirectory() ? `is writable by others than its owner (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})` : 'is not a directory';
    throw new TunrouteError('TR_STATE_DIR', `${shown(dir)} ${what}, so another user could plant the files root acts on: remove it (tunroute makes it anew).`);
  }
  if (opts.owner !== undefined && (st.uid !== opts.owner.uid || st.gid !== opts.owner.gid)) {
    if (st.uid !== 0 && st.uid !== (process.geteuid?.() ?? 0)) {
      throw new TunrouteError('TR_STATE_DIR', `${shown(dir)} belongs to uid ${st.uid}, not to the user tunroute runs as: remove it (tunroute makes it anew).`);
    }
    chownSync(dir, opts.owner.uid, opts.owner.gid); // a real dir (lstat above), in a dir only root writes
  }
  return true;
}

/**
 * Who a new file in `dir` should belong to: the dir's owner when that is not us and we are root
 * (root writes the first journal into the dir it handed to the user it will run as; that user
 * reads and replaces it later). Undefined: leave the file ours.
 */
export function ownerOfFilesIn(dir: string): { uid: number; gid: number } | undefined {
  if ((process.geteuid?.() ?? -1) !== 0 || !isInstanceDir(dir)) return undefined;
  try {
    const st = lstatSync(dir);
    return st.uid === 0 ? undefined : { uid: st.uid, gid: st.gid };
  } catch {
    return undefined;
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

