/**
 * The tunnel's UDP socket (the interface is in transport.ts, as wireguard-go's `conn.Bind`): the tunnel only
 * sends datagrams to endpoints and is told about the ones that arrive. Two real transports:
 * NativeUdpTransport (native-udp-transport.ts: recvmmsg/sendmmsg batches through the addon),
 * and DgramTransport here (a `node:dgram` socket) when the addon is not built;
 * `openUdpTransport` picks. Unit tests pass an in-memory one, so a tunnel runs without a network.
 *
 * UDP has no backpressure: a datagram the kernel cannot take at once is dropped and counted
 * (DgramTransport first lets libuv queue up to `maxQueued`), like a full NIC queue, and the
 * apps' own TCP backs off.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { TunrouteError } from '../errors.js';
import { tryLoadNativeUdp } from '../native/udp.js';
import type { Endpoint } from './endpoint.js';
import type { DatagramHandler, DgramTransportOptions, UdpTransport } from './transport.js';
import { NativeUdpTransport } from './native-udp-transport.js';

export class DgramTransport implements UdpTransport {
  sendDrops = 0;
  private handler: DatagramHandler | undefined;
  private closed = false;

  private constructor(
    private readonly socket: Socket,
    readonly port: number,
    private readonly maxQueued: number,
  ) {
    // rinfo already has `address` and `port`: it is the Endpoint, no copy per datagram.
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.handler?.(msg, rinfo));
  }

  /** Bind a UDP socket; fails in one sentence when the port is taken. */
  static open(opts: DgramTransportOptions = {}): Promise<DgramTransport> {
    const socket = createSocket({ type: 'udp4' });
    const wanted = opts.port ?? 0;
    return new Promise<DgramTransport>((resolve, reject) => {
      const onBindError = (e: NodeJS.ErrnoException): void => {
        socket.close();
        if (opts.bindError !== undefined) return reject(opts.bindError(e));
        const why = e.code === 'EADDRINUSE' ? 'is already in use' : `cannot be bound (${e.code ?? e.message})`;
        reject(new TunrouteError('TR_UPSTREAM', `UDP port ${wanted} for the tunnel ${why}: pick another ListenPort (listenPort), or leave it out for any free port.`, e));
      };
      socket.once('error', onBindError);
      socket.bind({ port: wanted, address: opts.address, exclusive: true }, () => {
        socket.off('error', onBindError);
        socket.on('error', (e) => opts.onError?.(e));
        const bytes = opts.bufferBytes ?? 4 * 1024 * 1024;
        try {
          socket.setSendBufferSize(bytes);
          socket.setRecvBufferSize(bytes);
        } catch {
          // capped or refused: the defaults work, only slower under bursts
        }
        resolve(new DgramTransport(socket, socket.address().port, opts.maxQueued ?? 512));
      });
    });
  }

  onMessage(handler: DatagramHandler): void {
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

/**
 * The tunnel's UDP socket: the addon's batched one when the addon is built (unless
 * TUNROUTE_NATIVE_UDP=0 in the environment, for comparisons), else node:dgram. Both fail to
 * bind with the same one sentence (opts.bindError, else the tunnel's ListenPort one).
 *
 * UDP GSO is on unless the caller says otherwise (TUNROUTE_UDP_GSO=0 turns it off for
 * comparisons): the segments of one super-packet leave as one message that the kernel cuts,
 * measured +15–40 % upload through wireguard-go on a quiet lab (486/394 → 554/550 Mbit/s).
 */
export async function openUdpTransport(opts: DgramTransportOptions = {}): Promise<UdpTransport> {
  const native = process.env.TUNROUTE_NATIVE_UDP === '0' ? undefined : tryLoadNativeUdp();
  if (native === undefined) return DgramTransport.open(opts);
  return NativeUdpTransport.open(native, { gso: process.env.TUNROUTE_UDP_GSO !== '0', ...opts });
}
