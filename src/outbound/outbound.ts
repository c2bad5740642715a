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
 * UDP (SOCKS5 UDP ASSOCIATE) will be added as an optional member
 * `openUdp?(opts: {signal?: AbortSignal; timeoutMs?: number}): Promise<UdpUpstream>` and a
 * `'udp'` entry in the stats; TCP users do not change, and UDP users test for the member.
 */
import type { Socket } from 'node:net';
import { TunrouteError } from '../errors.js';

/** Where a terminated flow was headed. `ip` is IPv4 dotted-quad (tunroute routes IPv4 only). */
export interface Destination {
  readonly ip: string;
  readonly port: number;
}

/**
 * The re-originated stream. It is a real `net.Socket`, so the splice gets backpressure for
 * free: `write()` returns false and `'drain'` follows; `pause()`/`resume()` throttle reads.
 */
export type TcpUpstream = Socket;

export interface ConnectOptions {
  /** Abort the attempt (e.g. the app reset its connection first); rejects with reason 'aborted'. */
  readonly signal?: AbortSignal;
  /** Deadline for the whole setup (proxy TCP connect + SOCKS handshake); the outbound's default otherwise. */
  readonly timeoutMs?: number;
}

export const OUTBOUND_KINDS = ['socks5', 'block'] as const;
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
  /** Abort connects in flight (they reject with 'aborted') and refuse new ones. Idempotent. */
  close(): Promise<void>;
}
