/**
 * The typed loader of the C addon (native/tun.c, built by node-gyp into
 * build/Release/tunroute_native.node). The TUN link and the WireGuard transports load it through here.
 *
 * The addon is loaded lazily, once, on first use, so that everything that never opens a TUN
 * device (unit tests, `tunroute check`, the tunnel server) works without a native build.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TunrouteError } from '../errors.js';

/**
 * An open descriptor as JS holds it: an opaque object the addon made (open, udpOpen) and checks
 * on every call, never a number, so a forged or stale integer cannot reach a system call (it is
 * a TypeError). Closing marks it closed (a second close does nothing; other calls throw EBADF);
 * a handle collected while still open closes its descriptor.
 */
export interface NativeFd {
  readonly __brand: 'NativeFd';
}

/** Opaque handle of a running batched reader (returned by startReader). */
export interface NativeReaderHandle {
  readonly __brand: 'NativeReaderHandle';
}

/**
 * Called once per uv_poll wake-up with the number of packets read. Packet i is at
 * buffer[offsets[i] .. offsets[i] + lengths[i]). offsets/lengths are the same two arrays on every
 * call (filled in place). A negative count is -errno of a fatal read error; the reader has then
 * stopped itself.
 */
export type NativeReadCallback = (count: number, offsets: Uint32Array, lengths: Uint32Array) => void;

/** The address of a fake A answer for canonical `name` (0: the packet goes to JS); sizes of the DNS messages. */
export type NativeDnsDecide = (name: string, queryBytes: number, answerBytes: number) => number;

export interface NativeTunAddon {
  /** Opens /dev/net/tun and attaches it to device `name` ('' lets the kernel pick). Throws NativeErrnoError. */
  open(name: string, opts: { vnetHdr: boolean; multiQueue: boolean }): { fd: NativeFd; name: string };
  /** TUNSETOFFLOAD with a combination of the TUN_F_* flags. Throws NativeErrnoError. */
  setOffload(fd: NativeFd, flags: number): void;
  /** Starts polling fd; reads up to maxPackets packets per wake-up into slot i = buffer[i * slotSize ..]. */
  startReader(
    fd: NativeFd,
    buffer: Buffer,
    maxPackets: number,
    slotSize: number,
    callback: NativeReadCallback,
  ): NativeReaderHandle;
  /** Stops and releases a reader; idempotent, safe inside the callback. */
  stopReader(handle: NativeReaderHandle): void;
  /**
   * Plain A queries this reader reads are answered in C with decide(name, queryBytes,
   * answerBytes)'s address (0: handed to the callback as a packet); null turns it off.
   * vnetLen: the device's virtio-net header size (0 or 10). Absent in older builds.
   */
  setDnsResponder?(handle: NativeReaderHandle, decide: NativeDnsDecide | null, vnetLen: number, ttl: number): void;
  /** The answer the reader would write for `packet` (setDnsResponder's), or null: it would go to JS. For tests. Absent in older builds. */
  fakeDnsAnswer?(packet: Uint8Array, vnetLen: number, ttl: number, decide: NativeDnsDecide): Buffer | null;
  /** write() of buf[offset .. offset + length): bytes written, or -errno. Never throws on I/O errors. */
  write(fd: NativeFd, buf: Uint8Array, offset: number, length: number): number;
  /**
   * One write() per packet i = buf[offsets[i] .. + lengths[i]), i < count; stops at the first
   * error and puts its errno in errnoOut[0] (0 when all were written). Returns packets written.
   * Never throws on I/O errors.
   */
  writeMany(fd: NativeFd, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, errnoOut: Uint32Array): number;
  /** One packet from three pieces (writev; `tail` may be empty): bytes written, or -errno. Never throws on I/O errors. */
  writeParts(fd: NativeFd, head: Uint8Array, body: Uint8Array, tail: Uint8Array): number;
  /** Closes the descriptor; idempotent. */
  close(fd: NativeFd): void;
  /** RFC 1071 ones'-complement sum of buf[offset .. offset + length) plus `initial`, folded to 16 bits, not inverted. */
  checksum(buf: Uint8Array, offset: number, length: number, initial: number): number;
  /** malloc_trim: give the allocator's free pages back to the kernel; true when some were. Absent in older builds. */
  trimMemory?(): boolean;
  /** RLIMIT_NOFILE as [soft, hard] (Infinity: unlimited). Absent in older builds (native/limits.c). */
  getNofile?(): [number, number];
  /** Sets the soft RLIMIT_NOFILE (≤ the hard one). Throws NativeErrnoError. */
  setNofile?(soft: number): void;
  /**
   * The uid owning the local TCP socket srcIp:srcPort → dstIp:dstPort (host-order u32
   * addresses), by sock_diag in this network namespace; -1 when there is none. Never blocks.
   */
  socketOwner?(srcIp: number, srcPort: number, dstIp: number, dstPort: number): number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  /** Size of the virtio-net header that prefixes every packet when vnetHdr is on (10). */
  readonly VNET_HDR_LEN: number;
}

/** What the addon throws for a failed system call. */
export interface NativeErrnoError extends Error {
  /** errno name, e.g. 'EBUSY'. */
  code: string;
  errno: number;
  syscall: string;
}

export function isNativeErrnoError(e: unknown): e is NativeErrnoError {
  return (
    e instanceof Error &&
    typeof (e as Partial<NativeErrnoError>).code === 'string' &&
    typeof (e as Partial<NativeErrnoError>).errno === 'number'
  );
}

const ADDON_FILE = 'build/Release/tunroute_native.node';

const FUNCTIONS = [
  'open',
  'setOffload',
  'startReader',
  'stopReader',
  'write',
  'writeMany',
  'writeParts',
  'close',
  'checksum',
] as const;
const CONSTANTS = ['TUN_F_CSUM', 'TUN_F_TSO4', 'TUN_F_TSO6', 'TUN_F_TSO_ECN', 'TUN_F_USO4', 'TUN_F_USO6', 'VNET_HDR_LEN'] as const;

function isAddon(m: unknown): m is NativeTunAddon {
  if (typeof m !== 'object' || m === null) return false;
  const rec = m as Record<string, unknown>;
  return FUNCTIONS.every((f) => typeof rec[f] === 'function') && CONSTANTS.every((c) => typeof rec[c] === 'number');
}

/**
 * The path of a node-gyp output (e.g. build/Release/...) under the package root, the nearest
 * folder above this file that holds binding.gyp (src/native/ under vitest, dist/native/ when
 * built, and the tools' own copy in dist-tools/src/native/ are at different depths).
 */
export function builtFile(file: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'binding.gyp'))) {
    const up = dirname(dir);
    if (up === dir) return fileURLToPath(new URL(`../../${file}`, import.meta.url));
    dir = up;
  }
  return join(dir, file);
}

/** The addon's path (see builtFile). */
export function addonPath(): string {
  return builtFile(ADDON_FILE);
}

let cached: NativeTunAddon | undefined;

/** The addon, loaded on first call. Throws TunrouteError TR_NATIVE_MISSING when it is not built. */
export function loadNative(): NativeTunAddon {
  if (cached !== undefined) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      'The native addon is not built: run `npm run build` in the tunroute folder.',
    );
  }
  let mod: unknown;
  try {
    mod = createRequire(import.meta.url)(path) as unknown;
  } catch (e) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      `The native addon at ${path} failed to load (${e instanceof Error ? e.message : String(e)}): rebuild it with \`npm run build\` in the tunroute folder.`,
      e,
    );
  }
  if (!isAddon(mod)) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      `The native addon at ${path} is out of date: rebuild it with \`npm run build\` in the tunroute folder.`,
    );
  }
  cached = mod;
  return mod;
}

/** The addon, or undefined when it is not built (for tests that skip without it). */
export function tryLoadNative(): NativeTunAddon | undefined {
  try {
    return loadNative();
  } catch {
    return undefined;
  }
}
