/**
 * The outbound that re-originates flows as ordinary sockets of this host: TCP through
 * `net.connect`, UDP through `dgram`. It is what `tunroute server` uses in its default
 * (userspace) mode, where a peer's decrypted TCP and UDP are terminated by our stack and carried
 * on from the server's own address — the userspace equivalent of a kernel WireGuard server with
 * forwarding and masquerading.
 *
 * Failures map onto the reasons the stack answers with (see outbound.ts):
 *   ECONNREFUSED, ECONNRESET during connect     → refused      (RST / ICMP port unreachable)
 *   EHOSTUNREACH, ENETUNREACH, ENETDOWN, …      → unreachable  (RST / ICMP host unreachable)
 *   EACCES, EPERM (a local firewall rule)        → not_allowed
 *   our deadline or ETIMEDOUT                    → timeout
 *
 * UDP: one association is one UDP socket. It is `connect()`ed to the first destination it
 * sends to — the relay opens one association per flow, so that is the flow's destination —
 * which gives the behaviour of a Linux NAT in front of a VPN server: only that remote's replies
 * come back (endpoint-dependent filtering, as conntrack does), and the ICMP port/host
 * unreachable it provokes surfaces as ECONNREFUSED/EHOSTUNREACH, which we report through
 * `unreachable()` so that the peer's app gets its own ICMP error. A send to any other
 * destination (not something the relay does) goes through a second, unconnected socket.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { Socket, isIPv4 } from 'node:net';
import { monotonicClock, type Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { POOLED_READS } from './pooled-reads.js';
import {
  UpstreamError,
  newOutboundStats,
  newUdpOutboundStats,
  type ConnectOptions,
  type Destination,
  type Outbound,
  type OutboundStats,
  type PendingConnect,
  type TcpUpstream,
  type UdpOpenOptions,
  type UdpOutboundStats,
  type UdpUpstream,
  type UdpUpstreamHandlers,
  type UpstreamReason,
  connectProblem,
  destinationText,
} from './outbound.js';

export const DIRECT_DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Datagrams waiting in one association's socket beyond which sends are dropped (UDP sheds load). */
export const DIRECT_UDP_MAX_SEND_QUEUE = 512;

export interface DirectOutboundOptions {
  /** The name rules refer to; default 'direct'. */
  readonly name?: string;
  /** Deadline for a TCP connect when connectTcp gets none; default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Source address for outgoing sockets (default: the kernel picks by route). */
  readonly localAddress?: string;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** The reason a socket errno stands for; undefined for errors that say nothing about the destination. */
export function reasonOfErrno(code: string | undefined): UpstreamReason | undefined {
  switch (code) {
    case 'ECONNREFUSED':
    case 'ECONNRESET':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENETDOWN':
    case 'EHOSTDOWN':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    case 'EACCES':
    case 'EPERM':
      return 'not_allowed';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return undefined;
  }
}

export class DirectOutbound implements Outbound {
  readonly kind = 'direct' as const;
  readonly name: string;
  readonly stats: OutboundStats = newOutboundStats();
  private readonly udpStats: UdpOutboundStats = newUdpOutboundStats();
  private readonly timeoutMs: number;
  private readonly localAddress: string | undefined;
  private readonly logger: Logger | undefined;
  private readonly clock: Clock;
  private readonly inFlight = new Set<(err: UpstreamError) => void>();
  private readonly live = new Set<DirectUdpAssociation>();
  private closed = false;

  constructor(opts: DirectOutboundOptions = {}) {
    this.name = opts.name ?? 'direct';
    this.timeoutMs = opts.connectTimeoutMs ?? DIRECT_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new RangeError(`connectTimeoutMs must be > 0, got ${this.timeoutMs}`);
    this.localAddress = opts.localAddress;
    this.logger = opts.logger;
    this.clock = opts.clock ?? monotonicClock;
    this.stats.udp = this.udpStats;
  }

  /** UDP associations open now. */
  get udpAssociations(): number {
    return this.live.size;
  }

  connectTcp(dst: Destination, opts: ConnectOptions = {}): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    const target = destinationText(dst);
    const signal = opts.signal;
    const cancel = opts.cancel;
    const problem = connectProblem(this.name, this.closed, dst, signal, 1);
    if (problem !== undefined) return Promise.reject(this.failed(...problem));
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;

    return new Promise<TcpUpstream>((resolve, reject) => {
      // allowHalfOpen: after the destination's FIN the app may still send (half-close).
      const socket = new Socket({ allowHalfOpen: true, ...POOLED_READS });
      let settled = false;
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (cancel !== undefined && cancel.pending === pending) cancel.pending = undefined;
        socket.removeListener('error', onError);
        socket.removeListener('connect', onConnect);
        this.inFlight.delete(fail);
      };
      const fail = (err: UpstreamError): void => {
        if (settled) return;
        settled = true;
        cleanup();
        socket.destroy();
        this.stats.tcpFailures[err.reason]++;
        if (this.logger?.isLevelEnabled('debug') === true) this.logger.debug({ outbound: this.name, dst: target, reason: err.reason }, err.message);
        reject(err);
      };
      const onAbort = (): void => fail(this.error('aborted', `${target}: aborted by the caller`, signal?.reason));
      const pending: PendingConnect = { cancel: onAbort };
      const onError = (err: NodeJS.ErrnoException): void => {
        const reason = reasonOfErrno(err.code) ?? 'unreachable';
        fail(this.error(reason, `${target}: connect failed: ${err.code ?? err.message}`, err));
      };
      const onConnect = (): void => {
        if (settled) return;
        settled = true;
        cleanup();
        socket.pause();
        this.stats.tcpEstablished++;
        resolve(socket);
      };
      const timer = setTimeout(() => fail(this.error('timeout', `${target}: no answer to the TCP connect within ${timeoutMs} ms`)), timeoutMs);
      this.inFlight.add(fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (cancel !== undefined) cancel.pending = pending;
      socket.once('error', onError);
      socket.once('connect', onConnect);
      socket.setNoDelay(true);
      // A name (a fake-IP flow routed direct) is resolved here, by the system's resolver.
      socket.connect({ host: dst.name ?? dst.ip, port: dst.port, ...(this.localAddress === undefined ? {} : { localAddress: this.localAddress }) });
    });
  }

  openUdp(opts: UdpOpenOptions = {}): Promise<UdpUpstream> {
    const s = this.udpStats;
    s.attempts++;
    const fail = (reason: UpstreamReason, message: string, cause?: unknown): Promise<never> => {
      s.failures[reason]++;
      return Promise.reject(new UpstreamError(reason, this.name, `UDP socket: ${message}`, cause));
    };
    if (this.closed) return fail('aborted', `outbound '${this.name}' is closed`);
    if (opts.signal?.aborted === true) return fail('aborted', 'aborted before it started');
    return new Promise<UdpUpstream>((resolve, reject) => {
      const sock = createSocket({ type: 'udp4' });
      const onError = (err: NodeJS.ErrnoException): void => {
        sock.close();
        s.failures.unreachable++;
        reject(new UpstreamError('unreachable', this.name, `UDP socket: cannot bind: ${err.code ?? err.message}`, err));
      };
      sock.once('error', onError);
      sock.bind({ address: this.localAddress ?? '0.0.0.0', port: 0 }, () => {
        sock.removeListener('error', onError);
        if (this.closed || opts.signal?.aborted === true) {
          sock.close();
          s.failures.aborted++;
          reject(new UpstreamError('aborted', this.name, 'UDP socket: aborted while opening'));
          return;
        }
        s.established++;
        const a = new DirectUdpAssociation(this.name, sock, s, this.localAddress, this.logger, () => this.live.delete(a));
        this.live.add(a);
        resolve(a);
      });
    });
  }

  close(): Promise<void> {
    this.closed = true;
    for (const fail of [...this.inFlight]) fail(this.error('aborted', `outbound '${this.name}' was closed`));
    for (const a of [...this.live]) a.close();
    return Promise.resolve();
  }

  private error(reason: UpstreamReason, message: string, cause?: unknown): UpstreamError {
    return new UpstreamError(reason, this.name, message, cause);
  }

  /** An error for an attempt that never started (no socket): counted here. */
  private failed(reason: UpstreamReason, message: string): UpstreamError {
    this.stats.tcpFailures[reason]++;
    return this.error(reason, message);
  }
}

/** One UDP socket, connected to the first destination it sends to. */
class DirectUdpAssociation implements UdpUpstream {
  readonly relay: Destination;
  private handlers: UdpUpstreamHandlers | undefined;
  private state: 'unconnected' | 'connecting' | 'connected' = 'unconnected';
  private peer: Destination | undefined;
  /** Datagrams for `peer` sent while the connect completes (at most DIRECT_UDP_MAX_SEND_QUEUE). */
  private waiting: Buffer[] = [];
  /** For destinations other than `peer`: opened on demand, unconnected. */
  private other: UdpSocket | undefined;
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly sock: UdpSocket,
    private readonly stats: UdpOutboundStats,
    private readonly localAddress: string | undefined,
    private readonly logger: Logger | undefined,
    private readonly onEnd: () => void,
  ) {
    const a = sock.address();
    this.relay = { ip: a.address, port: a.port };
    sock.on('message', this.onMessage);
    sock.on('error', this.onError);
  }

  setHandlers(h: UdpUpstreamHandlers): void {
    this.handlers = h;
  }

  send(dst: Destination, payload: Uint8Array): boolean {
    if (this.closed) return false;
    const s = this.stats;
    // A destination by name (a fake-IP flow routed direct): dgram resolves it here.
    const host = dst.name ?? dst.ip;
    if (this.peer === undefined) {
      this.peer = { ip: host, port: dst.port };
      this.state = 'connecting';
      this.sock.connect(dst.port, host, () => {
        if (this.closed) return;
        this.state = 'connected';
        const queued = this.waiting;
        this.waiting = [];
        for (const b of queued) this.sock.send(b);
      });
    }
    // One copy: the caller's bytes are a view into a reused buffer, and dgram sends later.
    const copy = Buffer.from(payload);
    if (host === this.peer.ip && dst.port === this.peer.port) {
      if (this.state === 'connecting') {
        if (this.waiting.length >= DIRECT_UDP_MAX_SEND_QUEUE) return this.dropped();
        this.waiting.push(copy);
      } else {
        if (this.sock.getSendQueueCount() >= DIRECT_UDP_MAX_SEND_QUEUE) return this.dropped();
        this.sock.send(copy);
      }
    } else {
      const o = this.otherSocket();
      if (o.getSendQueueCount() >= DIRECT_UDP_MAX_SEND_QUEUE) return this.dropped();
      o.send(copy, dst.port, host);
    }
    s.datagramsUp++;
    s.bytesUp += payload.length;
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiting = [];
    this.sock.removeListener('message', this.onMessage);
    this.sock.close();
    if (this.other !== undefined) {
      this.other.removeAllListeners('message');
      this.other.close();
    }
    this.onEnd();
  }

  private dropped(): false {
    this.stats.dropped++;
    return false;
  }

  private otherSocket(): UdpSocket {
    if (this.other === undefined) {
      const o = createSocket({ type: 'udp4' });
      o.on('message', this.onMessage);
      o.on('error', () => {}); // unconnected: ICMP errors do not surface; nothing to report
      o.bind({ address: this.localAddress ?? '0.0.0.0', port: 0 });
      this.other = o;
    }
    return this.other;
  }

  private readonly onMessage = (msg: Buffer, rinfo: { address: string; port: number }): void => {
    const h = this.handlers;
    if (h === undefined || !isIPv4(rinfo.address)) {
      this.stats.dropped++;
      return;
    }
    this.stats.datagramsDown++;
    this.stats.bytesDown += msg.length;
    h.message(msg, { ip: rinfo.address, port: rinfo.port });
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    if (this.closed) return;
    // ICMP errors about what we sent to the connected destination.
    const reason = reasonOfErrno(err.code);
    if (reason === 'refused') return this.handlers?.unreachable?.('refused');
    if (reason === 'unreachable') return this.handlers?.unreachable?.('unreachable');
    const e = new UpstreamError(reason ?? 'unreachable', this.name, `UDP socket to ${this.peer?.ip ?? '?'}:${this.peer?.port ?? 0} failed: ${err.code ?? err.message}`, err);
    if (this.logger?.isLevelEnabled('debug') === true) this.logger.debug({ outbound: this.name }, e.message);
    this.close();
    this.stats.lost++;
    this.handlers?.closed(e);
  };
}
