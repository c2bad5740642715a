/**
 * Reading a file a user named (config, CIDR list, wg-quick file, key file). tunroute runs as
 * root, so the path may name anything: it must be a regular file (not /dev/zero, a FIFO or a
 * directory) no larger than the cap for its kind, checked on the opened descriptor (fstat), so
 * nothing can be swapped in between the check and the read. A symlink to a regular file is
 * fine: the user gave the path. Opened O_NONBLOCK so that a FIFO never blocks the open.
 *
 * Caps (documented in the README, "Limits"):
 *   - LIST_FILE_MAX_BYTES, 64 MiB: CIDR files and the config file; a 1,000,000-line CIDR file
 *     is ~20 MB.
 *   - SMALL_FILE_MAX_BYTES, 1 MiB: wg-quick files and key files (a few hundred bytes each).
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { TunrouteError, shownPath } from '../errors.js';
import type { Logger } from '../logger.js';

export const LIST_FILE_MAX_BYTES = 64 * 1024 * 1024;
export const SMALL_FILE_MAX_BYTES = 1024 * 1024;

export interface InputFileSpec {
  /** What the file is, for messages: "the CIDR file", "the tunnel file". */
  readonly what: string;
  /** Where its path came from, for messages: "routes.includeFiles[0]", "--tunnel". */
  readonly via: string;
  readonly maxBytes: number;
  /** The sentence for a file that cannot be opened, from the errno code ("ENOENT"). */
  cannot(code: string): string;
}

export interface InputFile {
  readonly text: string;
  /** The file's permission bits (for the private-key warning). */
  readonly mode: number;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}

function mib(n: number): string {
  return `${Math.round((n / (1024 * 1024)) * 10) / 10} MiB`;
}

/**
 * An opened regular file's text (UTF-8), read to EOF but never past `size` (what fstat said)
 * capped at `maxBytes`: undefined when it grew while it was read. Read errors are thrown.
 */
export function readToEnd(fd: number, size: number, maxBytes: number): string | undefined {
  const buf = Buffer.allocUnsafe(Math.min(maxBytes, size) + 1);
  let len = 0;
  for (;;) {
    if (len === buf.length) return undefined;
    const n = readSync(fd, buf, len, buf.length - len, null);
    if (n === 0) return buf.toString('utf8', 0, len);
    len += n;
  }
}

/** The file's text (UTF-8) and mode; every failure is one TunrouteError sentence (TR_CONFIG_READ). */
export function readInputFile(path: string, spec: InputFileSpec): InputFile {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw new TunrouteError('TR_CONFIG_READ', spec.cannot((e as NodeJS.ErrnoException).code ?? 'error'), e);
  }
  try {
    const st = fstatSync(fd);
    const name = `${spec.what} ${shownPath(path)} (${spec.via})`;
    if (!st.isFile()) {
      throw new TunrouteError('TR_CONFIG_READ', `${name} is ${kindOf(st)}, not a regular file: give the path of a regular file.`);
    }
    if (st.size > spec.maxBytes) {
      throw new TunrouteError('TR_CONFIG_READ', `${name} is ${mib(st.size)}, more than the ${mib(spec.maxBytes)} tunroute reads for it: split it or trim it.`);
    }
    let text: string | undefined;
    try {
      text = readToEnd(fd, st.size, spec.maxBytes);
    } catch (e) {
      throw new TunrouteError('TR_CONFIG_READ', spec.cannot((e as NodeJS.ErrnoException).code ?? 'error'), e);
    }
    if (text === undefined) {
      throw new TunrouteError('TR_CONFIG_READ', `${name} grew while tunroute read it: read it again once it is complete.`);
    }
    return { text, mode: st.mode & 0o7777 };
  } finally {
    closeSync(fd);
  }
}

/**
 * The warning wg-quick prints for a key file others can read ("Warning: `FILE' is world
 * accessible"), for any file that holds a private key; also when only its group can.
 */
export function warnIfShared(path: string, mode: number, log: Pick<Logger, 'warn'> | undefined): void {
  if (log === undefined || (mode & 0o077) === 0) return;
  const who = (mode & 0o007) !== 0 ? 'world accessible' : 'accessible to its group';
  log.warn({ file: path, mode: `0${(mode & 0o777).toString(8)}` }, `Warning: \`${shownPath(path)}' is ${who} and holds a private key: chmod 600 it`);
}
