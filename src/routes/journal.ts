/**
 * The journal: before `up` changes anything, it writes down every route and rule it is about
 * to add (`<stateDir>/routes-<dev>.json`, under /run by default). `down`, the watchdog and the
 * next `up` undo exactly what a journal lists — also after a kill -9, when no config is at
 * hand. /run is a tmpfs: after a power cut the journal is gone, and so is every route it
 * listed (the kernel forgets them too), so the two never disagree.
 *
 * Files in the state dir:
 *   routes-tun0.json                  the journal of the tunroute that runs (or ran) tun0
 *   routes-tun0.json.cleanup-<pid>    a journal being undone by process <pid>: whoever renames
 *                                     the journal first does the cleanup, so the watchdog,
 *                                     `down` and a new `up` never undo the same journal twice
 *                                     (and never undo a new daemon's fresh routes)
 *   routes-tun0.json.tmp-<pid>        a journal being written (atomically linked into place)
 *
 * A journal is validated before use: `down` runs as root, and the lines it feeds to `ip` are
 * rebuilt from checked fields, never copied from the file. The state dir must be one no other
 * user can write (state-dir.ts), and journal files are opened with O_NOFOLLOW (a temp file also
 * O_CREAT|O_EXCL), so a planted symlink never makes root write or read another file.
 */
import { closeSync, constants, fchownSync, fstatSync, fsyncSync, linkSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { TunrouteError, shown } from '../errors.js';
import { ipToU32, parseCidr } from '../net/ipv4.js';
import { IFNAME_RE } from '../config/fields.js';
import type { Change, ExplainData } from './plan.js';
import { ownerAlive as ownerRunsTunroute, processStartTime } from './owner.js';
import { HOST_STATE_DIR, INSTANCE_DIR_PREFIX, checkInstanceDir, checkStateDir, defaultStateDir, instanceDirOf, isInstanceDir, ownerOfFilesIn } from './state-dir.js';
import { APPS_CGROUP_RE as APPS_CGROUP, APPS_NFT_TABLE_RE as APPS_NFT_TABLE, type JournalApps } from './apps.js';

export { processStartTime };

export const JOURNAL_VERSION = 1;

export interface Journal {
  version: 1;
  tool: 'tunroute';
  dev: string;
  /**
   * The daemon that made the changes, and its start time (/proc/PID/stat field 22) against PID
   * reuse. Required when written; a journal read from an older tunroute may lack the start
   * time, and then its pid is never taken for a running tunroute (see owner.ts).
   */
  pid: number;
  pidStart: string;
  startedAt: string;
  killSwitch: boolean;
  /** In the order applied; undone in reverse. */
  changes: Change[];
  /** For `tunroute why` against the running daemon. */
  explain?: ExplainData;
  /** Per-app routing's cgroups and nft table (undone with the changes), for `exec` to find. */
  apps?: JournalApps;
  /** Why per-app routing is off, for `exec`'s message. */
  appsOff?: string;
  /** The device NetworkManager was told to leave alone (network-manager.ts), to hand back. */
  nmUnmanaged?: string;
  /** The device systemd-resolved was given per-link DNS on (resolved.ts), to revert while it exists. */
  resolved?: { dev: string; dns: string };
}

const ifName = z.string().regex(IFNAME_RE);
const table = z.union([z.literal('main'), z.number().int().min(1).max(4_294_967_295)]);
const v4Cidr = z.string().refine((s) => parseCidr(s) !== undefined);
const v6Cidr = z.string().regex(/^[0-9a-fA-F:]{2,39}\/\d{1,3}$/);

const routeChange = z
  .object({
    op: z.literal('route'),
    family: z.union([z.literal(4), z.literal(6)]),
    type: z.enum(['unicast', 'unreachable', 'throw']),
    cidr: z.string(),
    dev: ifName.optional(),
    table,
    metric: z.number().int().min(0).max(4_294_967_295).optional(),
  })
  .strict()
  .refine((r) => (r.family === 4 ? v4Cidr.safeParse(r.cidr).success : v6Cidr.safeParse(r.cidr).success), { message: 'bad cidr for its family' });

const ruleChange = z
  .object({
    op: z.literal('rule'),
    family: z.union([z.literal(4), z.literal(6)]),
    priority: z.number().int().min(1).max(32_765),
    table,
    uids: z.tuple([z.number().int().min(0), z.number().int().min(0)]).optional(),
    iif: ifName.optional(),
    fwmark: z.number().int().min(1).max(4_294_967_295).optional(),
  })
  .strict();

const appsSchema = z
  .object({
    nftTable: z.string().regex(APPS_NFT_TABLE),
    cgroups: z.array(z.string().regex(APPS_CGROUP)),
    direct: z.string().regex(APPS_CGROUP),
    outbounds: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,32}$/), z.string().regex(APPS_CGROUP)),
  })
  .strict();

const journalSchema = z
  .object({
    version: z.literal(JOURNAL_VERSION),
    tool: z.literal('tunroute'),
    dev: ifName,
    pid: z.number().int().positive(),
    // Optional only so that journals of older versions can still be undone (see Journal.pidStart).
    pidStart: z.string().regex(/^\d{1,20}$/).optional(),
    startedAt: z.string(),
    killSwitch: z.boolean(),
    changes: z.array(z.union([routeChange, ruleChange])),
    // Only read by `why`, which checks what it uses; never turned into commands.
    explain: z.custom<ExplainData>((v) => typeof v === 'object' && v !== null && 'include' in v && 'exclude' in v).optional(),
    apps: appsSchema.optional(),
    appsOff: z.string().max(500).optional(),
    nmUnmanaged: ifName.optional(),
    resolved: z
      .object({ dev: ifName, dns: z.string().refine((a) => ipToU32(a) !== undefined) })
      .strict()
      .optional(),
  })
  .strict();

export { HOST_STATE_DIR, defaultStateDir } from './state-dir.js';

/** --state-dir (or the config's stateDir) if given, else the default for this namespace. */
export function resolveStateDir(given: string | undefined): string {
  return given ?? defaultStateDir();
}

/**
 * Remove an instance dir once it is empty, and a per-namespace state dir once that is empty
 * (never the host's dir, never a user's). A tunroute that gave up root cannot remove its
 * instance dir (the state dir is root's): the next `up` or `down` as root does.
 */
export function pruneStateDir(dir: string): void {
  let stateDir = dir;
  if (isInstanceDir(dir)) {
    try {
      rmdirSync(dir);
    } catch {
      return; // not empty, or not ours to remove: leave it
    }
    stateDir = dirname(dir);
  }
  const netnsRoot = join(HOST_STATE_DIR, 'netns');
  if (dirname(stateDir) !== netnsRoot) return;
  for (const d of [stateDir, netnsRoot]) {
    try {
      rmdirSync(d);
    } catch {
      return; // not empty (or gone): leave it
    }
  }
}

/** Remove the empty device dirs (of `dev`, or all) of a state dir; a full one, or one we may not remove, stays. */
export function pruneInstanceDirs(stateDir: string, dev?: string): void {
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(INSTANCE_DIR_PREFIX) || (dev !== undefined && name !== `${INSTANCE_DIR_PREFIX}${dev}`)) continue;
    try {
      rmdirSync(join(stateDir, name));
    } catch {
      // not empty, not a dir, or not ours to remove
    }
  }
}

/** `<stateDir>/dev-<dev>/routes-<dev>.json` (see instanceDirOf for why a dir of its own). */
export function journalPath(stateDir: string, dev: string): string {
  return join(instanceDirOf(stateDir, dev), `routes-${dev}.json`);
}

/** Check (with `create`, make) the dir a state file lives in: an instance dir, or a state dir (older journals). */
function checkDirOf(dir: string, create: boolean): boolean {
  return isInstanceDir(dir) ? checkInstanceDir(dir, { create }) : checkStateDir(dir, { create });
}

/** A journal as read: one written by an older tunroute may lack `pidStart`. */
export type StoredJournal = Omit<Journal, 'pidStart'> & { pidStart?: string };

/** Is the tunroute that wrote the journal (same pid and start time, our node and CLI) still running? */
export function ownerAlive(pid: number, pidStart: string | undefined): boolean {
  return ownerRunsTunroute(pid, pidStart);
}

/** Flags for a journal's temp file: a new file, never through a symlink, never an old file. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Write a new file (O_EXCL: a leftover of a dead writer with our pid is removed first), fsync it. */
function writeDurably(path: string, data: string | Uint8Array): void {
  let fd: number;
  try {
    fd = openSync(path, CREATE_FLAGS, 0o600);
  } catch (e) {
    if (errCode(e) !== 'EEXIST') throw e;
    unlinkSync(path); // removes a symlink itself, never its target
    fd = openSync(path, CREATE_FLAGS, 0o600);
  }
  try {
    // Root writing into the dir of the user tunroute will run as: the file is that user's too.
    const owner = ownerOfFilesIn(dirname(path));
    if (owner !== undefined) fchownSync(fd, owner.uid, owner.gid);
    if (typeof data === 'string') writeSync(fd, data);
    else for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every filesystem lets a directory be fsynced; the rename is atomic either way.
  }
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** Create the journal; fails if one exists already (another tunroute got there first). */
export function createJournal(path: string, j: Journal): void {
  const dir = dirname(path);
  checkDirOf(dir, true);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeDurably(tmp, JSON.stringify(j));
    linkSync(tmp, path); // atomic, and refuses to replace an existing journal
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // never written
    }
    if (errCode(e) === 'EEXIST') {
      throw new TunrouteError('TR_TUN_BUSY', `Another tunroute has just started on ${j.dev} (${path} appeared): run only one per device.`, e);
    }
    throw new TunrouteError('TR_ROUTE_APPLY', `Cannot write the route journal ${path} (${errCode(e) ?? String(e)}): pass a writable directory with --state-dir.`, e);
  }
  unlinkSync(tmp);
  syncDir(dir);
}

/** Replace the journal (it exists and is ours). */
export function replaceJournal(path: string, j: StoredJournal): void {
  replaceFile(path, JSON.stringify(j));
}

/** Write `text` to `path` whole or not at all: a new temp file (never through a link), fsync, rename. */
function replaceFile(path: string, text: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeDurably(tmp, text);
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/**
 * Another file tunroute keeps in the state dir beside the journals (the fake-IP table): written
 * as a journal is, whole or not at all, in a dir no one else can write (checked, made if
 * missing).
 */
export function writeStateFile(path: string, text: string | Uint8Array): void {
  checkDirOf(dirname(path), true);
  replaceFile(path, text);
}

/** The temp file writeStateFileInBackground writes before its rename (one per process and file). */
export function backgroundTempOf(path: string): string {
  return `${path}.tmp-${process.pid}-bg`;
}

/**
 * writeStateFile for a big file written while traffic flows (the fake-IP table: 5 MB at 131,000
 * names): the write and the fsync run in libuv's thread pool, so the event loop never waits for
 * the disk. Only the rename runs here, on the event loop, and only if `wanted()` still says so
 * once the data is on disk: a synchronous save made meanwhile (the last one, at stop) must not
 * be replaced by this older one. Resolves to whether the file was replaced; the temp file is
 * removed on every other way out.
 */
export async function writeStateFileInBackground(path: string, parts: readonly Uint8Array[], wanted: () => boolean): Promise<boolean> {
  checkDirOf(dirname(path), true);
  const tmp = backgroundTempOf(path);
  let replaced = false;
  try {
    let fh: FileHandle;
    try {
      fh = await open(tmp, CREATE_FLAGS, 0o600);
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      await unlink(tmp); // a leftover of ours; removes a symlink itself, never its target
      fh = await open(tmp, CREATE_FLAGS, 0o600);
    }
    try {
      const owner = ownerOfFilesIn(dirname(path));
      if (owner !== undefined) await fh.chown(owner.uid, owner.gid);
      for (const part of parts) for (let off = 0; off < part.length; ) off += (await fh.write(part, off, part.length - off)).bytesWritten;
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (!wanted()) return false;
    renameSync(tmp, path);
    replaced = true;
  } finally {
    if (!replaced) await unlink(tmp).catch(() => undefined);
  }
  await syncDirInBackground(dirname(path));
  return true;
}

async function syncDirInBackground(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // As syncDir: the rename is atomic either way.
  }
}

/**
 * A state file's text, or undefined when there is none. As for journals: never through a link,
 * a regular file only, and at most `maxBytes` (a bigger one is refused, not read).
 */
export function readStateFile(path: string, maxBytes: number): string | undefined {
  if (!checkDirOf(dirname(path), false)) return undefined;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return undefined;
    throw new TunrouteError('TR_STATE_DIR', `Cannot read ${shown(path)} (${errCode(e) === 'ELOOP' ? 'it is a symbolic link' : (errCode(e) ?? String(e))}): remove it; tunroute writes it anew.`, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > maxBytes) {
      throw new TunrouteError('TR_STATE_DIR', `${shown(path)} is ${st.isFile() ? `larger than ${maxBytes} bytes` : 'not a regular file'}: remove it; tunroute writes it anew.`);
    }
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** The journal at `path`, or undefined if there is none. A corrupt journal is an error that says what to do. */
export function readJournal(path: string): StoredJournal | undefined {
  let text: string;
  try {
    // O_NOFOLLOW: a symlink in place of a journal is refused (ELOOP), never read through.
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (errCode(e) === 'ENOENT') return undefined;
    const why = errCode(e) === 'ELOOP' ? 'it is a symbolic link' : errCode(e) === 'EINVAL' ? 'it is not a regular file' : (errCode(e) ?? String(e));
    throw new TunrouteError('TR_ROUTE_APPLY', `Cannot read the route journal ${shown(path)} (${why}): run tunroute as root, and remove anything in the state directory that tunroute did not write.`, e);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = undefined;
  }
  const r = journalSchema.safeParse(data);
  if (!r.success) {
    throw new TunrouteError(
      'TR_ROUTE_APPLY',
      `The route journal ${path} is damaged, so tunroute cannot tell what to undo: compare \`ip rule\` and \`ip route show table all\` (tunroute's entries say "proto 211"), remove those by hand, then delete the file.`,
    );
  }
  return r.data;
}

/** Take a journal for cleanup: rename it to `.cleanup-<our pid>`. Undefined if someone else took it (or it is gone). */
export function claimJournal(path: string): string | undefined {
  const claimed = `${path}.cleanup-${process.pid}`;
  try {
    renameSync(path, claimed);
    return claimed;
  } catch (e) {
    if (errCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if (errCode(e) !== 'ENOENT') throw e;
  }
}

export interface StateFiles {
  /** routes-<dev>.json */
  journals: Array<{ path: string; dev: string }>;
  /** journals being cleaned up, with the cleaner's pid */
  claims: Array<{ path: string; dev: string; pid: number }>;
  /** half-written journals, with the writer's pid */
  temps: Array<{ path: string; pid: number }>;
}

/**
 * What the state dir holds (for one device, or all): the files in each instance dir
 * (dev-<dev>/), and those of older versions in the state dir itself. A missing dir holds nothing.
 */
export function listStateFiles(stateDir: string, dev?: string): StateFiles {
  const out: StateFiles = { journals: [], claims: [], temps: [] };
  if (!checkStateDir(stateDir)) return out;
  const names = namesIn(stateDir);
  addStateFiles(out, stateDir, names, dev);
  for (const name of names) {
    const d = /^dev-([A-Za-z0-9_.-]{1,15})$/.exec(name)?.[1];
    if (d === undefined || (dev !== undefined && d !== dev)) continue;
    const dir = join(stateDir, name);
    // A device dir handed to the user tunroute runs as is closed to other users: one who is
    // not root could not undo what it lists anyway (and learns that from the device step).
    if (checkInstanceDir(dir)) addStateFiles(out, dir, namesIn(dir, (process.geteuid?.() ?? 0) !== 0), dev);
  }
  return out;
}

function namesIn(dir: string, closedIsEmpty = false): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    if (errCode(e) === 'ENOENT' || (closedIsEmpty && errCode(e) === 'EACCES')) return [];
    throw new TunrouteError('TR_ROUTE_APPLY', `Cannot read the state directory ${dir} (${errCode(e) ?? String(e)}): run tunroute as root.`, e);
  }
}

function addStateFiles(out: StateFiles, dir: string, names: string[], dev: string | undefined): void {
  for (const name of names) {
    const m = /^routes-([A-Za-z0-9_.-]{1,15})\.json(?:\.(cleanup|tmp)-(\d+))?$/.exec(name);
    if (!m) continue;
    const d = m[1];
    if (dev !== undefined && d !== dev) continue;
    const path = join(dir, name);
    if (m[2] === undefined) out.journals.push({ path, dev: d });
    else if (m[2] === 'cleanup') out.claims.push({ path, dev: d, pid: Number(m[3]) });
    else out.temps.push({ path, pid: Number(m[3]) });
  }
}

/** The journal path a claim or temp file belongs to. */
export function journalOf(path: string): string {
  return join(dirname(path), basename(path).replace(/\.(cleanup|tmp)-\d+$/, ''));
}
