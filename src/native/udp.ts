/**
 * The typed view of the addon's batched UDP socket (native/udp.c, in the same
 * build/Release/tunroute_native.node as the TUN device, loaded by addon.ts). Only the
 * tunnel's NativeUdpTransport uses it.
 *
 * Addresses are IPv4 as host-order uint32 (192.0.2.1 is 0xc0000201), ports host order.
 */
import { TunrouteError } from '../errors.js';
import { addonPath, loadNative, type NativeFd } from './addon.js';

/** Opaque handle of a running batched receiver (returned by udpStartReceiver). */
export interface NativeUdpReceiverHandle {
  readonly __brand: 'NativeUdpReceiverHandle';
}

/**
 * Called once per wake-up with the number of datagrams received. Datagram i is at
 * buffer[offsets[i] .. offsets[i] + lengths[i]), from addrs[i]:ports[i]. The four arrays are the
 * same on every call (filled in place). A negative count is -errno of a fatal socket error; the
 * receiver has then stopped itself.
 */
export type NativeUdpReceiveCallback = (
  count: number,
  offsets: Uint32Array,
  lengths: Uint32Array,
  addrs: Uint32Array,
  ports: Uint32Array,
) => void;

export interface NativeUdpSocket {
  fd: NativeFd;
  /** The bound port (the kernel's pick when 0 was asked). */
  port: number;
  /** SO_SNDBUF / SO_RCVBUF as the kernel reports them (twice what was set: its bookkeeping). */
  sndbuf: number;
  rcvbuf: number;
  /** Whether the kernel knows UDP_SEGMENT (UDP GSO, Linux 4.18+). */
  gso: boolean;
}

export interface NativeUdpAddon {
  /**
   * A non-blocking IPv4 UDP socket bound to address:port (no SO_REUSEADDR: a port in use fails),
   * with SO_SNDBUF/SO_RCVBUF of bufferBytes (forced beyond the sysctl cap when privileged; 0
   * leaves the defaults); with `device`, bound to that interface (SO_BINDTODEVICE: its route
   * lookups see only routes through it; needs CAP_NET_RAW). Throws NativeErrnoError (code
   * EADDRINUSE, EACCES, EADDRNOTAVAIL, ENODEV, EPERM, ...).
   */
  udpOpen(address: string, port: number, bufferBytes: number, device?: string): NativeUdpSocket;
  /** Starts polling fd; receives up to maxDatagrams per wake-up into slot i = buffer[i * slotSize ..]. */
  udpStartReceiver(
    fd: NativeFd,
    buffer: Uint8Array,
    maxDatagrams: number,
    slotSize: number,
    callback: NativeUdpReceiveCallback,
  ): NativeUdpReceiverHandle;
  /** Stops and releases a receiver; idempotent, safe inside the callback. */
  udpStopReceiver(handle: NativeUdpReceiverHandle): void;
  /**
   * sendmmsg of datagram i = buf[offsets[i] .. + lengths[i]) to addrs[i]:ports[i], i < count.
   * Returns how many went (a full socket buffer stops the batch early, without an error), or
   * -errno when the first one failed for another reason. With UDP_SEND_GSO in flags, runs to one
   * destination of one size go as single UDP_SEGMENT messages. Never throws on I/O errors.
   */
  udpSendMany(
    fd: NativeFd,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint32Array,
    ports: Uint32Array,
    count: number,
    flags: number,
  ): number;
  /** Closes the socket; idempotent. */
  udpClose(fd: NativeFd): void;
  /** udpSendMany flag: UDP generic segmentation offload. */
  readonly UDP_SEND_GSO: number;
}

const FUNCTIONS = ['udpOpen', 'udpStartReceiver', 'udpStopReceiver', 'udpSendMany', 'udpClose'] as const;

function hasUdp(m: object): m is NativeUdpAddon {
  const rec = m as Record<string, unknown>;
  return FUNCTIONS.every((f) => typeof rec[f] === 'function') && typeof rec.UDP_SEND_GSO === 'number';
}

/** The addon's UDP functions. Throws TunrouteError TR_NATIVE_MISSING when not built or out of date. */
export function loadNativeUdp(): NativeUdpAddon {
  const mod: object = loadNative();
  if (!hasUdp(mod)) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      `The native addon at ${addonPath()} has no batched UDP socket (it is out of date): rebuild it with \`npm run build\` in the tunroute folder.`,
    );
  }
  return mod;
}

/** The addon's UDP functions, or undefined when the addon is not built. */
export function tryLoadNativeUdp(): NativeUdpAddon | undefined {
  try {
    return loadNativeUdp();
  } catch {
    return undefined;
  }
}
