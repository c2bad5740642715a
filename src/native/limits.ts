/**
 * The addon's process limits and socket owners (native/limits.c), typed: the open-file limit
 * raised to its hard value at start, and the owner (uid) of an app's socket by its 4-tuple.
 * Without the addon (unit tests, an old build) each answers undefined and the caller keeps its
 * defaults.
 */
import { readFileSync } from 'node:fs';
import { tryLoadNative } from './addon.js';

export interface NofileLimits {
  /** The soft limit before start. */
  before: number;
  /** The soft limit now. */
  soft: number;
  hard: number;
}

/** The kernel's ceiling for any open-file limit (a hard limit of "unlimited" stops here). */
function nrOpen(): number {
  try {
    const n = Number.parseInt(readFileSync('/proc/sys/fs/nr_open', 'utf8'), 10);
    return Number.isFinite(n) && n > 0 ? n : 1_048_576;
  } catch {
    return 1_048_576;
  }
}

/**
 * Raise the soft RLIMIT_NOFILE to the hard one (any process may). Returns the limits, or
 * undefined without the addon. A refused raise keeps the soft limit (it is what we get).
 */
export function raiseNofile(): NofileLimits | undefined {
  const n = tryLoadNative();
  if (n?.getNofile === undefined || n.setNofile === undefined) return undefined;
  const [before, hard] = n.getNofile();
  const target = Math.min(hard, nrOpen(), 0xffff_ffff);
  if (target > before) {
    try {
      n.setNofile(target);
    } catch {
      // e.g. EPERM under a seccomp or LSM policy: carry on with the soft limit.
    }
  }
  const [soft] = n.getNofile();
  return { before, soft, hard };
}

/** The owner lookup of the addon (sock_diag), or undefined without it. */
export function socketOwnerLookup(): ((srcIp: number, srcPort: number, dstIp: number, dstPort: number) => number | undefined) | undefined {
  const n = tryLoadNative();
  if (n?.socketOwner === undefined) return undefined;
  return (srcIp, srcPort, dstIp, dstPort) => {
    const uid = n.socketOwner!(srcIp, srcPort, dstIp, dstPort);
    return uid >= 0 ? uid : undefined;
  };
}
