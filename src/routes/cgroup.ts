/**
 * The I/O side of per-app routing (apps.ts has the plan): find cgroup v2, create and remove
 * tunroute's cgroups, load and delete its nftables table. `up` does it after writing the
 * journal; `down`, the watchdog and `up`'s own stop undo it from what the journal lists.
 */
import { spawn } from 'node:child_process';
import { lchownSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { basename } from 'node:path';
import type { Logger } from '../logger.js';
import { APPS_CGROUP_RE, APPS_NFT_TABLE_RE, type AppsEnv, type JournalApps } from './apps.js';
import { HOST_STATE_DIR } from './state-dir.js';

/** The cgroup2 mount point from /proc/self/mountinfo, or undefined. */
export function cgroup2Mount(mountinfo: string): string | undefined {
  const mounts: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    if (line.slice(sep + 3).split(' ')[0] !== 'cgroup2') continue;
    const mp = line.slice(0, sep).split(' ')[4];
    if (mp !== undefined) mounts.push(mp.replace(/\\040/g, ' '));
  }
  // The standard places first (nft resolves cgroup paths under /sys/fs/cgroup).
  return mounts.find((m) => m === '/sys/fs/cgroup') ?? mounts.find((m) => m === '/sys/fs/cgroup/unified') ?? mounts[0];
}

/** The subtree's name for a state dir: "tunroute", or "tunroute-netns-NS" for /run/tunroute/netns/NS. */
export function appsBaseName(stateDir: string): string {
  return stateDir.startsWith(`${HOST_STATE_DIR}/netns/`) ? `tunroute-netns-${basename(stateDir)}` : 'tunroute';
}

function run(cmd: string, args: readonly string[], input?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 4096)));
    child.on('error', (e) => resolve({ code: -1, stderr: e.message }));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr: stderr.trim() }));
    if (input !== undefined) {
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(input);
    }
  });
}

/** Whether per-app routing can be had here: cgroup v2 under /sys/fs/cgroup and a working nft. */
export async function probeApps(stateDir: string): Promise<{ env: AppsEnv } | { off: string }> {
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return { off: 'cannot read /proc/self/mountinfo' };
  }
  const mount = cgroup2Mount(mountinfo);
  if (mount === undefined) return { off: 'cgroup v2 is not mounted (mount -t cgroup2 none /sys/fs/cgroup)' };
  if (mount !== '/sys/fs/cgroup' && mount !== '/sys/fs/cgroup/unified') return { off: `cgroup v2 is mounted at ${mount}, but nftables looks for cgroups under /sys/fs/cgroup` };
  const nft = await run('nft', ['--version']);
  if (nft.code !== 0) return { off: 'nftables is not installed (apt-get install nftables)' };
  return { env: { mount, base: appsBaseName(stateDir) } };
}

/** Create the cgroups (an existing one, left by a dead tunroute, is taken as it is). */
export function createCgroups(paths: readonly string[], owner?: { uid: number; gid: number }): void {
  for (const p of paths) {
    try {
      mkdirSync(p, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Delegated (cgroup v2's own way: the dir and its control files) to the user `up` runs as
    // once it gave up root, so that its stop can remove them. Only the subtree's top stays
    // root's to remove (its parent is the cgroup root): the next `up` reuses it.
    if (owner !== undefined) {
      lchownSync(p, owner.uid, owner.gid);
      for (const f of ['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control']) {
        try {
          lchownSync(`${p}/${f}`, owner.uid, owner.gid);
        } catch {
          // not every kernel has every file
        }
      }
    }
  }
}

/**
 * Remove the cgroups, deepest first, with the empty leaves `exec` left below them (a killed
 * exec cannot remove its own). A cgroup that still holds a process stays (the kernel refuses):
 * its paths are returned.
 */
export function removeCgroups(paths: readonly string[]): string[] {
  const busy: string[] = [];
  for (const p of [...paths].reverse()) {
    try {
      for (const d of readdirSync(p, { withFileTypes: true })) {
        if (d.isDirectory() && /^exec-\d+$/.test(d.name)) {
          try {
            rmdirSync(`${p}/${d.name}`);
          } catch {
            busy.push(`${p}/${d.name}`);
          }
        }
      }
      rmdirSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // EACCES: the subtree's top, which a tunroute that gave up root may not remove (see createCgroups).
      if (code !== 'ENOENT' && code !== 'EACCES' && code !== 'EPERM') busy.push(p);
    }
  }
  return busy;
}

/** Load an nft script as one transaction. */
export async function loadNft(script: string): Promise<{ ok: boolean; stderr: string }> {
  const r = await run('nft', ['-f', '-'], script);
  return { ok: r.code === 0, stderr: r.stderr };
}

/** Delete tunroute's table (gone already: fine). */
export async function deleteNftTable(table: string): Promise<{ ok: boolean; stderr: string }> {
  if (!APPS_NFT_TABLE_RE.test(table)) return { ok: false, stderr: `refusing to delete table ${table}: not tunroute's` };
  const r = await run('nft', ['delete', 'table', 'inet', table]);
  return { ok: r.code === 0 || /No such file/.test(r.stderr), stderr: r.stderr };
}

/** Undo per-app routing as a journal lists it: the table, then the cgroups. */
export async function tearDownApps(apps: JournalApps, log: Logger): Promise<void> {
  const nft = await deleteNftTable(apps.nftTable);
  if (!nft.ok) log.warn({ table: apps.nftTable, stderr: nft.stderr }, 'could not delete the nftables table of per-app routing');
  const busy = removeCgroups(apps.cgroups.filter((c) => APPS_CGROUP_RE.test(c)));
  if (busy.length > 0) log.warn({ busy }, 'some cgroups of per-app routing still hold processes (started with tunroute exec): they stay until those end; run tunroute down again then');
}
