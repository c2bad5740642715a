/**
 * The server's UDP socket, bound to the config's `listen` address: the same transport the
 * tunnel client uses (see src/wireguard/udp-transport.ts): the addon's batched socket
 * when it is built, else node:dgram.
 */
import { TunrouteError } from '../errors.js';
import type { UdpTransport } from '../wireguard/transport.js';
import { openUdpTransport } from '../wireguard/udp-transport.js';

export interface ServerTransportOptions {
  address: string;
  port: number;
  /** The config file, for the error message. */
  file?: string;
  maxQueued?: number;
  bufferBytes?: number;
  /** The tunnel MTU: datagrams up to a transport message for it are received whole. */
  mtu?: number;
  /** Socket errors after bind (the socket stays open). */
  onError?: (err: Error) => void;
}

/** The one sentence for a failed bind. */
function bindError(e: NodeJS.ErrnoException, address: string, port: number, file: string | undefined): TunrouteError {
  const where = file === undefined ? 'listen' : `listen in ${file}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return new TunrouteError('TR_LISTEN', `UDP port ${port} on ${address} is already in use (another tunroute server or WireGuard?): stop it, or set another port in ${where}.`, e);
    case 'EACCES':
    case 'EPERM':
      return new TunrouteError('TR_LISTEN', `UDP port ${port} on ${address} needs privileges this user does not have: use a port above 1023 in ${where}.`, e);
    case 'EADDRNOTAVAIL':
      return new TunrouteError('TR_LISTEN', `${address} is not an address of this host, so UDP port ${port} cannot be bound there: use one of its addresses or 0.0.0.0 in ${where}.`, e);
    default:
      return new TunrouteError('TR_LISTEN', `UDP ${address}:${port} cannot be bound (${e.code ?? e.message}): check ${where}.`, e);
  }
}

/**
 * The server's socket is the tunnel client's transport, bound to `listen`, with a larger
 * send queue (many peers; node:dgram only) and bind errors that name the server's config.
 */
export function openServerTransport(opts: ServerTransportOptions): Promise<UdpTransport> {
  return openUdpTransport({
    address: opts.address,
    port: opts.port,
    maxQueued: opts.maxQueued ?? 1024,
    bufferBytes: opts.bufferBytes,
    maxDatagramBytes: opts.mtu === undefined ? undefined : opts.mtu + 64,
    onError: opts.onError,
    bindError: (e) => bindError(e, opts.address, opts.port, opts.file),
  });
}
