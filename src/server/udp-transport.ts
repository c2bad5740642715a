/**
 * The server's UDP socket: `node:dgram` bound to the config's `listen` address, behind the
 * UdpTransport interface the tunnel speaks through.
 *
 * UDP has no backpressure: what the kernel cannot take at once is queued by libuv, and that
 * queue is bounded (`maxQueued`): beyond it datagrams are dropped and counted, like a full NIC
 * queue, and the peers' own TCP backs off. Socket buffers are raised to 4 MiB where the kernel
 * allows (it caps them at net.core.[rw]mem_max without error).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { TunrouteError } from '../errors.js';
import type { Endpoint } from '../outbound/wireguard/endpoint.js';
import type { UdpTransport } from './tunnel.js';

export interface ServerTransportOptions {
  address: string;
  port: number;
  /** The config file, for the error message. */
  file?: string;
  maxQueued?: number;
  bufferBytes?: number;
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

export class ServerUdpTransport implements UdpTransport {
  sendDrops = 0;
  private handler: ((data: Uint8Array, from: Endpoint) => void) | undefined;
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    readonly port: number,
    private readonly maxQueued: number,
  ) {
    // rinfo has `address` and `port`: it is the Endpoint, no copy per datagram.
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.handler?.(msg, rinfo));
  }

  static open(opts: ServerTransportOptions): Promise<ServerUdpTransport> {
    const socket = createSocket({ type: 'udp4' });
    return new Promise<ServerUdpTransport>((resolve, reject) => {
      const onBindError = (e: NodeJS.ErrnoException): void => {
        socket.close();
        reject(bindError(e, opts.address, opts.port, opts.file));
      };
      socket.once('error', onBindError);
      socket.bind({ port: opts.port, address: opts.address, exclusive: true }, () => {
        socket.off('error', onBindError);
        socket.on('error', (e) => opts.onError?.(e));
        const bytes = opts.bufferBytes ?? 4 * 1024 * 1024;
        try {
          socket.setSendBufferSize(bytes);
          socket.setRecvBufferSize(bytes);
        } catch {
          // refused: the defaults work, only with more loss under bursts
        }
        resolve(new ServerUdpTransport(socket, socket.address().port, opts.maxQueued ?? 1024));
      });
    });
  }

  onMessage(handler: (data: Uint8Array, from: Endpoint) => void): void {
    this.handler = handler;
  }

  send(data: Uint8Array, to: Endpoint): boolean {
    if (this.closed || this.socket.getSendQueueCount() >= this.maxQueued) {
      this.sendDrops++;
      return false;
    }
    this.socket.send(data, to.port, to.address, this.afterSend);
    return true;
  }

  private readonly afterSend = (err: Error | null): void => {
    if (err) this.sendDrops++;
  };

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handler = undefined;
    this.socket.close();
  }
}
