/**
 * What the tunnel needs of its UDP socket, as wireguard-go's `conn.Bind`: send datagrams to
 * endpoints, be told about the ones that arrive. The implementations (udp-transport.ts over
 * node:dgram, native-udp-transport.ts over the addon) and the in-memory ones of the tests import
 * this file; the runtime never knows which one it has.
 */
import type { TunrouteError } from '../errors.js';
import type { Endpoint } from './endpoint.js';

/**
 * A datagram that arrived, from `from`. `data` is valid only during the call: the native
 * transport receives the next batch into the same memory, so a handler that keeps the bytes (or a
 * view of them) must copy them. `from` may be kept (it is never changed; the same object comes
 * again while the source stays the same).
 */
export type DatagramHandler = (data: Uint8Array, from: Endpoint) => void;

export interface UdpTransport {
  /** The local UDP port. */
  readonly port: number;
  /** Set the one receiver; datagrams that arrive before are dropped. */
  onMessage(handler: DatagramHandler): void;
  /** Send one datagram; the bytes must not change afterwards. False when it was dropped. */
  send(data: Uint8Array, to: Endpoint): boolean;
  /** Datagrams dropped because the send queue was full or the socket failed. */
  readonly sendDrops: number;
  /** Stop receiving and release the socket; idempotent. */
  close(): void;
}

export interface DgramTransportOptions {
  /** Local port (wg-quick ListenPort); 0 or absent: an ephemeral port. */
  port?: number;
  /** Local address; default every IPv4 address. */
  address?: string;
  /** Datagrams libuv may hold beyond what the kernel took, before new ones are dropped (default 512). */
  maxQueued?: number;
  /** SO_SNDBUF / SO_RCVBUF wanted (the kernel caps them at wmem_max / rmem_max); default 4 MiB. */
  bufferBytes?: number;
  /**
   * The largest datagram to receive whole (the native transport's slot size; longer ones arrive
   * cut and fail to authenticate). Default 2048: a WireGuard message for a tunnel MTU up to 2,000.
   */
  maxDatagramBytes?: number;
  /** Socket errors after bind (logged by the caller; the socket stays open). */
  onError?: (err: Error) => void;
  /** The one sentence for a failed bind; the default speaks of the tunnel's ListenPort. */
  bindError?: (err: NodeJS.ErrnoException) => TunrouteError;
}
