/**
 * The one interface every terminate-and-re-originate upstream implements.
 *
 * The userspace stack terminates an app's TCP connection, asks the chosen outbound for a stream
 * to the same destination, and splices the two. If the outbound cannot deliver, it rejects
 * with an UpstreamError whose `reason` tells the stack what to do (today: answer RST for every
 * reason, and count it under that reason).
 *
 * The WireGuard tunnel does not implement this interface: it forwards whole IP packets and
 * never terminates a flow (see DESIGN.md, "Terminate for SOCKS, forward for the tunnel").
 *
 * UDP (SOCKS5 UDP ASSOCIATE) is the optional member `openUdp` (see socks5-udp.ts) with an
 * optional `udp` entry in the stats; TCP users do not change, and UDP users test for the member.
 */
import { isIPv4, type Socket } from 'node:net';
import { TunrouteError } from '../errors.js';

/** Where a terminated flow was headed. `ip` is IPv4 dotted-quad (tunroute routes IPv4 only). */
export interface Destination {
  readonly ip: string;
  readonly port: number;
  /**
   * The name the app asked for, when the flow is to a fake-IP address (canonical, see
   * net/domain.ts). Then `ip` is only the fake address: a proxy is asked for the name (it
   * resolves it, the client never does) and a direct outbound resolves it itself.
   */
  readonly name?: string;
}

/** host:port of a destination for messages: the name when it has one. */
export function destinationText(dst: Destination): string {
  return `${dst.name ?? dst.ip}:${dst.port}`;
}

/**
 * The re-originated stream. It is a real `net.Socket`, so the splice gets backpressure for
 * free: `write()` returns false and `'drain'` follows; `pause()`/`resume()` throttle reads.
 */
export type TcpUpstream = Socket;

/** errno codes of a failed TCP connect to a proxy that plainly mean "the proxy is not there". */
export const PROXY_DOWN_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

/**
 * The checks every `connectTcp` makes before it starts anything: the reason and message of
 * the failure, or undefined to go on. `minPort` 0 lets port 0 through (a SOCKS server is the
 * one to refuse it); a direct socket cannot connect there at all.
 */
export function connectProblem(outbound: string, closed: boolean, dst: Destination, signal: AbortSignal | undefined, minPort: 0 | 1): [UpstreamReason, string] | undefined {
  const target = destinationText(dst);
  if (closed) return ['aborted', `${target}: outbound '${outbound}' is closed`];
  if (!isIPv4(dst.ip) || !Number.isInteger(dst.port) || dst.port < minPort || dst.port > 65535) return ['protocol', `${target} is not an IPv4 address and port`];
  if (signal?.aborted === true) return ['aborted', `${target}: aborted before it started`];
  return undefined;
}

/** A connect in flight that its caller may call off (see ConnectCancel). */
export interface PendingConnect {
  /** Give up: the connect rejects with reason 'aborted'. Harmless once it settled. */
  cancel(): void;
}

/**
 * A cheap stand-in for an AbortSignal, for a caller that starts a connect per flow (the relay:
 * an AbortController with its signal, event target and listener maps cost ~0.6 KB per flow and
 * stayed for the flow's life). The outbound puts its attempt into `pending` while the connect
 * is in flight and clears it when the attempt settles; the caller gives up with
 * `pending?.cancel()`. The caller's own object serves, so cancelling allocates nothing.
 */
export interface ConnectCancel {
  pending: PendingConnect | undefined;
}

export interface ConnectOptions {
  /** Abort the attempt (e.g. the app reset its connection first); rejects with reason 'aborted'. */
  readonly signal?: AbortSignal;
  /** The same as `signal`, without the AbortController: see ConnectCancel. */
  readonly cancel?: ConnectCancel;
  /** Deadline for the whole setup (proxy TCP connect + SOCKS handshake); the outbound's default otherwise. */
  readonly timeoutMs?: number;
}

export const OUTBOUND_KINDS = ['socks5', 'http', 'block', 'direct'] as const;
export type OutboundKind = (typeof OUTBOUND_KINDS)[number];

/**
 * Why an upstream connection could not be made.
 * - refused: the destination actively refused (SOCKS 0x05); the stack answers RST.
 * - unreachable: the destination network/host could not be reached (SOCKS 0x01, 0x03, 0x04).
 * - timeout: the deadline passed after the proxy accepted us (handshake or CONNECT too slow),
 *   or the proxy's own connect timed out (SOCKS 0x06 TTL expired).
 * - proxy_down: the proxy itself could not be reached (TCP connect to it failed or did not
 *   complete before the deadline), or it closed the connection before answering.
 * - auth_failed: the proxy rejected our credentials or offered no method we can use.
 * - not_allowed: a rule forbids it (SOCKS 0x02, or the block outbound).
 * - protocol: the proxy broke the protocol or does not support the request (0x07, 0x08, garbage, closed mid-handshake).
 * - aborted: the caller's AbortSignal fired or the outbound was closed; nothing to answer.
 */
export const UPSTREAM_REASONS = [
  'refused',
  'unreachable',
  'timeout',
  'proxy_down',
  'auth_failed',
  'not_allowed',
  'protocol',
  'aborted',
] as const;
export type UpstreamReason = (typeof UPSTREAM_REASONS)[number];

export class UpstreamError extends TunrouteError {
  readonly reason: UpstreamReason;
  /** The name of the outbound that failed, for logs and counters. */
  readonly outbound: string;

  constructor(reason: UpstreamReason, outbound: string, message: string, cause?: unknown) {
    super('TR_UPSTREAM', message, cause);
    this.name = 'UpstreamError';
    this.reason = reason;
    this.outbound = outbound;
  }
}

export function isUpstreamError(e: unknown): e is UpstreamError {
  return e instanceof UpstreamError;
}

/** Counters for one outbound; failures are split by reason. Plain numbers, cheap to bump. */
export interface OutboundStats {
  /** connectTcp calls. */
  tcpAttempts: number;
  /** connectTcp calls that resolved with a socket. */
  tcpEstablished: number;
  tcpFailures: Record<UpstreamReason, number>;
  /** Present on outbounds that carry UDP. */
  udp?: UdpOutboundStats;
}

/** UDP counters of an outbound that implements openUdp. */
export interface UdpOutboundStats {
  /** openUdp calls. */
  attempts: number;
  /** openUdp calls that resolved with an association. */
  established: number;
  failures: Record<UpstreamReason, number>;
  /** Associations that ended by themselves (the proxy closed the control connection, …). */
  lost: number;
  datagramsUp: number;
  bytesUp: number;
  datagramsDown: number;
  bytesDown: number;
  /** Datagrams dropped: send queue full, malformed or foreign frames from the relay. */
  dropped: number;
}

export function newUdpOutboundStats(): UdpOutboundStats {
  const failures = {} as Record<UpstreamReason, number>;
  for (const r of UPSTREAM_REASONS) failures[r] = 0;
  return { attempts: 0, established: 0, failures, lost: 0, datagramsUp: 0, bytesUp: 0, datagramsDown: 0, bytesDown: 0, dropped: 0 };
}

export function newOutboundStats(): OutboundStats {
  const failures = {} as Record<UpstreamReason, number>;
  for (const r of UPSTREAM_REASONS) failures[r] = 0;
  return { tcpAttempts: 0, tcpEstablished: 0, tcpFailures: failures };
}

export interface Outbound {
  /** The name rules refer to (e.g. 'proxy', 'block'). */
  readonly name: string;
  readonly kind: OutboundKind;
  /** Live counters (read-only for callers; snapshot with structuredClone if you keep them). */
  readonly stats: Readonly<OutboundStats>;
  /**
   * Open a stream to `dst` through this upstream. Resolves once the upstream confirms the
   * connection (for SOCKS5: after a successful CONNECT reply); rejects with an UpstreamError.
   *
   * The socket is returned **paused**, with any bytes the destination already sent (a server
   * banner that arrived together with the SOCKS reply) kept in its read buffer: attach the
   * handlers, then call `resume()` (or `pipe()`). Nothing is lost in between.
   */
  connectTcp(dst: Destination, opts?: ConnectOptions): Promise<TcpUpstream>;
  /**
   * Open a UDP association through this upstream: one local endpoint from which datagrams go
   * to any destination and from which replies of any remote come back. Resolves once the
   * upstream confirmed it; rejects with an UpstreamError ('protocol' or 'not_allowed' when the
   * upstream cannot carry UDP). Absent on outbounds that never carry UDP.
   */
  openUdp?(opts?: UdpOpenOptions): Promise<UdpUpstream>;
  /** Abort connects in flight (they reject with 'aborted') and refuse new ones. Idempotent. */
  close(): Promise<void>;
}

export interface UdpOpenOptions {
  /** Abort the attempt; rejects with reason 'aborted'. */
  readonly signal?: AbortSignal;
  /** Deadline for the whole setup; the outbound's default otherwise. */
  readonly timeoutMs?: number;
}

/** What an association reports to its user. */
export interface UdpUpstreamHandlers {
  /** A datagram from `from` (any remote). The payload belongs to the handler. */
  message(payload: Uint8Array, from: Destination): void;
  /**
   * The association ended by itself (the upstream closed it, the relay became unreachable).
   * Not called after the user's own close(). Nothing is delivered afterwards.
   */
  closed(err: UpstreamError): void;
  /**
   * Optional: the upstream reported that a datagram could not be delivered (a SOCKS5 proxy
   * relaying ICMP port/host unreachable); the association lives on.
   */
  unreachable?(reason: Extract<UpstreamReason, 'refused' | 'unreachable'>): void;
}

/** One UDP association through an upstream. */
export interface UdpUpstream {
  /** Where the upstream relays our datagrams (for logs). */
  readonly relay: Destination;
  /** Install the receivers; datagrams that arrive before are dropped. */
  setHandlers(h: UdpUpstreamHandlers): void;
  /**
   * Send one datagram to `dst`. The bytes are copied before return. False when it was dropped
   * (closed, or the local send queue is full: UDP has no backpressure, so we shed load).
   */
  send(dst: Destination, payload: Uint8Array): boolean;
  /** End the association and release its sockets. Idempotent. */
  close(): void;
}
