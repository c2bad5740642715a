/**
 * Least privilege for `tunroute up`. Root is needed to open the device and to apply the routes;
 * carrying packets, the part that parses what every app and every peer sends, needs only
 * CAP_NET_ADMIN (following route changes, removing the routes and rules at stop, through `ip`).
 * So once started, `up` becomes an ordinary user (`user`, default "tunroute", made by
 * scripts/install.sh) that keeps CAP_NET_ADMIN alone (native/drop_privs.h says how, thread by
 * thread). The watchdog and the route monitor run as that user from their start
 * (routes/manager.ts); the device's files live in a dir of the state dir handed to it
 * (routes/state-dir.ts instanceDirOf).
 *
 * Not dropping is a warning, not an error: a host without the user, or a state dir that user
 * cannot reach, still gets a working tunnel, told why it runs as root.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Config } from './config/schema.js';
import { TunrouteError } from './errors.js';
import type { Logger } from './logger.js';
import { isNativeErrnoError, loadNativePrivileges } from './native/index.js';
import { resolveStateDir } from './routes/journal.js';
import type { RunAs } from './routes/manager.js';
import { dirsFromRoot, instanceDirOf } from './routes/state-dir.js';

/** CAP_NET_ADMIN (linux/capability.h): the one capability `up` keeps. */
export const CAP_NET_ADMIN = 12;

/** CAP_CHOWN, CAP_SETGID, CAP_SETUID, CAP_SETPCAP: what handing the dir over and dropping take. */
const DROP_NEEDS = (1n << 0n) | (1n << 6n) | (1n << 7n) | (1n << 8n);

/** What `up` keeps, as CapEff shows it in /proc/PID/status. */
export const KEPT_CAPS_MASK = 1n << BigInt(CAP_NET_ADMIN);

/**
 * The user `up` will run as once started, or undefined to keep what it is: not root already, or
 * `user: root`, or (warned) a user that does not exist or cannot reach the state dir.
 */
export function resolveRunAs(config: Config, log: Logger): RunAs | undefined {
  if ((process.geteuid?.() ?? -1) !== 0) return undefined;
  const user = config.user;
  if (user === 'root') {
    log.debug('user: root, so tunroute keeps root while it carries packets');
    return undefined;
  }
  // A service manager may have taken the capabilities a drop needs already (the systemd unit's
  // bounding set): then this process is as confined as it will get from us.
  const caps = privilegesOf(readFileSync('/proc/self/status', 'utf8')).capEff;
  if ((caps & DROP_NEEDS) !== DROP_NEEDS) {
    log.info({ user, capEff: `0x${caps.toString(16)}` }, `tunroute keeps its uid: it lacks CAP_SETUID, CAP_SETGID, CAP_SETPCAP or CAP_CHOWN to become ${user} (a service manager confines it already)`);
    return undefined;
  }
  const ids = loadNativePrivileges().lookupUser(user);
  if (ids === undefined) {
    log.warn(
      { user },
      `user "${user}" does not exist, so tunroute keeps root while it carries packets: create it (useradd --system --no-create-home --shell /usr/sbin/nologin ${user}; scripts/install.sh does), or set user: root to keep root on purpose`,
    );
    return undefined;
  }
  if (ids.uid === 0) return undefined;
  const dir = instanceDirOf(resolveStateDir(config.stateDir), config.tun.name);
  const blocked = unreachableDir(dirname(dir), ids.uid, ids.gid);
  if (blocked !== undefined) {
    log.warn(
      { user, dir: blocked },
      `user "${user}" cannot enter ${blocked}, where tunroute keeps its files, so tunroute keeps root while it carries packets: let others enter it (chmod o+x) or pass another --state-dir`,
    );
    return undefined;
  }
  return { user, uid: ids.uid, gid: ids.gid };
}

/** The first dir from / down to `dir` that uid/gid may not search (x), or undefined. */
function unreachableDir(dir: string, uid: number, gid: number): string | undefined {
  for (const d of dirsFromRoot(dir)) {
    let st;
    try {
      st = statSync(d);
    } catch {
      return undefined; // made later, by root, mode 0755 (state-dir.ts)
    }
    const bit = st.uid === uid ? 0o100 : st.gid === gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return d;
  }
  return undefined;
}

/** This process's capability sets and ids, from /proc/self/status. */
export interface ProcessPrivileges {
  uids: number[];
  capEff: bigint;
  capPrm: bigint;
  capBnd: bigint;
  capAmb: bigint;
}

export function privilegesOf(statusText: string): ProcessPrivileges {
  const field = (name: string): string => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(statusText)?.[1]?.trim() ?? '';
  const caps = (name: string): bigint => BigInt(`0x${field(name) || '0'}`);
  return {
    uids: field('Uid').split(/\s+/).filter(Boolean).map(Number),
    capEff: caps('CapEff'),
    capPrm: caps('CapPrm'),
    capBnd: caps('CapBnd'),
    capAmb: caps('CapAmb'),
  };
}

/**
 * Become runAs keeping CAP_NET_ADMIN only. Throws TR_PRIVILEGES when the kernel refuses a step
 * (the caller stops: a process half way down is not one to keep running).
 */
export function dropPrivileges(runAs: RunAs, log: Logger): void {
  try {
    loadNativePrivileges().dropPrivileges(runAs.uid, runAs.gid, Number(KEPT_CAPS_MASK & 0xffffffffn), Number(KEPT_CAPS_MASK >> 32n));
  } catch (e) {
    const why = isNativeErrnoError(e) ? `${e.syscall}: ${e.code}` : String(e);
    throw new TunrouteError('TR_PRIVILEGES', `Cannot give up root to run as ${runAs.user} (${why}): set user: root to keep root, or check that no security module forbids setuid.`, e);
  }
  const now = privilegesOf(readFileSync('/proc/self/status', 'utf8'));
  log.info(
    { user: runAs.user, uid: runAs.uid, gid: runAs.gid, capEff: `0x${now.capEff.toString(16)}` },
    `gave up root: carrying packets as ${runAs.user} with CAP_NET_ADMIN only`,
  );
}
