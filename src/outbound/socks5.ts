/**
 * SOCKS5 CONNECT outbound (RFC 1928, username/password auth RFC 1929) on our own client
 * (socks5-client.ts; the wire messages in socks5-wire.ts).
 *
 *   client                                   proxy
 *     ── TCP connect ─────────────────────────►        (typed errno → proxy_down)
 *     ── 05 01 method ───────────────────────►        greeting, one method when pipelined
 *     ── 01 ulen user plen pass ─────────────►        only with credentials
 *     ── 05 01 00 01 dst.addr dst.port ──────►        CONNECT, IPv4 destination
 *     ◄──────────────────────────── 05 method ──
 *     ◄─────────────────────────── 01 status ──
 *     ◄──── 05 rep 00 atyp bnd.addr bnd.port ──        rep 0x00 = succeeded
 *
 * Latency: the three requests leave in one write when the proxy reads them that way (learnt
 * per proxy, see socks5-client.ts; microsocks does not), otherwise each step is one small
 * write on a `noDelay` socket, sent as soon as the previous reply arrives — no cork, no
 * MSG_MORE, so no ~200 ms Nagle/delayed-ACK stall (FACTS.md). The promise resolves only after
 * the proxy's CONNECT succeeded, so the app's SYN-ACK still means the destination accepted.
 */
import type { Socket } from 'node:net';
import { monotonicClock, type Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import {
  UpstreamError,
  newOutboundStats,
  type ConnectCancel,
  type ConnectOptions,
  type Destination,
  type Outbound,
  type OutboundStats,
  type PendingConnect,
  type TcpUpstream,
  type UpstreamReason,
  connectProblem,
  destinationText,
} from './outbound.js';
import {
  Socks5Connector,
  type Socks5Failure,
  type Socks5Handshake,
  type Socks5HandshakeOwner,
  type Socks5PipelineMemory,
  type Socks5PipelineMode,
  type Socks5PipelineVerdict,
} from './socks5-client.js';
import { SOCKS5_CMD_CONNECT } from './socks5-wire.js';
import { formatSocks5Url, type Socks5Url } from './socks5-url.js';

export { SOCKS5_REPLY_REASONS } from './socks5-client.js';

export const SOCKS5_DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface Socks5OutboundOptions {
  /** The name rules refer to. */
  readonly name: string;
  /** The proxy, as parsed by parseSocks5Url. */
  readonly proxy: Socks5Url;
  /** Deadline for proxy connect + handshake when connectTcp gets none; default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Pipelined handshakes: 'learn' per proxy (default), or always 'on' / 'off'. */
  readonly pipeline?: Socks5PipelineMode;
  /** Where verdicts about proxies are kept; the process-wide memory by default. */
  readonly pipelineMemory?: Socks5PipelineMemory;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** The connector options for a parsed proxy URL. */
export function connectorOptions(opts: Socks5OutboundOptions): ConstructorParameters<typeof Socks5Connector>[0] {
  return {
    host: opts.proxy.host,
    port: opts.proxy.port,
    ...(opts.proxy.auth === undefined ? {} : { auth: opts.proxy.auth }),
    ...(opts.pipeline === undefined ? {} : { pipeline: opts.pipeline }),
    ...(opts.pipelineMemory === undefined ? {} : { memory: opts.pipelineMemory }),
  };
}

/** One connectTcp in flight: the promise's ends and what the messages need. */
class ConnectAttempt implements Socks5HandshakeOwner, PendingConnect {
  handshake: Socks5Handshake | undefined;
  signal: AbortSignal | undefined;
  /** The caller's cancel slot, which holds this attempt while it is pending. */
  cancelSlot: ConnectCancel | undefined;

  constructor(
    private readonly outbound: Socks5Outbound,
    readonly dst: Destination,
    readonly started: number,
    private readonly resolve: (s: TcpUpstream) => void,
    private readonly reject: (e: UpstreamError) => void,
  ) {}

  handshakeDone(socket: Socket): void {
    this.unlisten();
    this.outbound.established(this);
    this.resolve(socket);
  }

  handshakeFailed(f: Socks5Failure): void {
    this.unlisten();
    this.reject(this.outbound.attemptFailed(this, f));
  }

  /** The caller's AbortSignal fired (`this` is the signal's listener object). */
  handleEvent(): void {
    this.handshake?.fail({ reason: 'aborted', detail: 'aborted by the caller', cause: this.signal?.reason });
  }

  /** The caller cancelled through its ConnectCancel. */
  cancel(): void {
    this.handshake?.fail({ reason: 'aborted', detail: 'aborted by the caller' });
  }

  private unlisten(): void {
    this.signal?.removeEventListener('abort', this);
    this.signal = undefined;
    if (this.cancelSlot?.pending === this) this.cancelSlot.pending = undefined;
    this.cancelSlot = undefined;
    this.handshake = undefined;
  }
}

export class Socks5Outbound implements Outbound {
  readonly kind = 'socks5' as const;
  readonly name: string;
  readonly stats: OutboundStats = newOutboundStats();
  /** Sum of setup times (proxy connect + handshake) of established connects, in ms. */
  tcpSetupMsTotal = 0;

  protected readonly connector: Socks5Connector;
  private readonly proxy: Socks5Url;
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly clock: Clock;
  private closed = false;

  constructor(opts: Socks5OutboundOptions) {
    this.name = opts.name;
    this.proxy = opts.proxy;
    this.timeoutMs = opts.connectTimeoutMs ?? SOCKS5_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new RangeError(`connectTimeoutMs must be > 0, got ${this.timeoutMs}`);
    this.logger = opts.logger;
    this.clock = opts.clock ?? monotonicClock;
    this.connector = new Socks5Connector(connectorOptions(opts));
  }

  /** The proxy address with the password hidden, for logs and status. */
  get proxyUrl(): string {
    return formatSocks5Url(this.proxy);
  }

  /** What was learnt about this proxy and pipelined handshakes (undefined: not yet known). */
  get pipelineVerdict(): Socks5PipelineVerdict | undefined {
    return this.connector.pipelineVerdict;
  }

  connectTcp(dst: Destination, opts: ConnectOptions = {}): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    const problem = connectProblem(this.name, this.closed, dst, opts.signal, 0);
    if (problem !== undefined) return Promise.reject(this.failed(...problem));
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const started = this.clock.now();
    return new Promise<TcpUpstream>((resolve, reject) => {
      const attempt = new ConnectAttempt(this, dst, started, resolve, reject);
      const signal = opts.signal;
      if (signal !== undefined) {
        attempt.signal = signal;
        signal.addEventListener('abort', attempt, { once: true });
      }
      if (opts.cancel !== undefined) {
        attempt.cancelSlot = opts.cancel;
        opts.cancel.pending = attempt;
      }
      attempt.handshake = this.connector.open(SOCKS5_CMD_CONNECT, { host: dst.name ?? dst.ip, port: dst.port }, timeoutMs, attempt);
    });
  }

  close(): Promise<void> {
    this.closed = true;
    this.connector.failAll({ reason: 'aborted', detail: `outbound '${this.name}' was closed` });
    return Promise.resolve();
  }

  /** @internal A ConnectAttempt succeeded. */
  established(a: ConnectAttempt): void {
    this.stats.tcpEstablished++;
    this.tcpSetupMsTotal += this.clock.now() - a.started;
  }

  /** @internal A ConnectAttempt failed: count it, log it, and build its error. */
  attemptFailed(a: ConnectAttempt, f: Socks5Failure): UpstreamError {
    const target = destinationText(a.dst);
    const err = this.error(f.reason, `${target} via SOCKS5 proxy ${this.proxyAddr()}: ${f.detail}`, f.cause);
    this.stats.tcpFailures[f.reason]++;
    if (this.logger?.isLevelEnabled('debug') === true) {
      this.logger.debug({ outbound: this.name, dst: target, reason: f.reason }, err.message);
    }
    return err;
  }

  private proxyAddr(): string {
    return `${this.proxy.host}:${this.proxy.port}`;
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
