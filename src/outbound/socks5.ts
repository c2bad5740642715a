/**
 * SOCKS5 CONNECT outbound (RFC 1928, username/password auth RFC 1929) on the npm `socks`
 * client.
 *
 *   client                                   proxy
 *     ── TCP connect ─────────────────────────►        (ours: typed errno → proxy_down)
 *     ── 05 nmethods methods ────────────────►        greeting
 *     ◄──────────────────────────── 05 method ──
 *     ── 01 ulen user plen pass ─────────────►        only if the proxy chose 0x02
 *     ◄─────────────────────────── 01 status ──
 *     ── 05 01 00 01 dst.addr dst.port ──────►        CONNECT, IPv4 destination
 *     ◄──── 05 rep 00 atyp bnd.addr bnd.port ──        rep 0x00 = succeeded
 *
 * Latency: each step is one small write on a `noDelay` socket, sent as soon as the previous
 * reply arrives — no cork, no MSG_MORE, so no ~200 ms Nagle/delayed-ACK stall (FACTS.md). We
 * do not pipeline greeting and CONNECT: microsocks hangs when they arrive in one write, and
 * the `socks` client waits for each reply anyway. Measured on loopback: see the test file.
 *
 * We open the TCP connection to the proxy ourselves and hand it to `socks` as
 * `existing_socket`, for two reasons: a failure to reach the proxy keeps its typed `errno`
 * code (the library flattens socket errors into message strings), and the connect, the
 * handshake and the caller's AbortSignal share one deadline that we own.
 */
import { Socket } from 'node:net';
import { SocksClient, type SocksClientError, type SocksProxy } from 'socks';
import { monotonicClock, type Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import {
  UpstreamError,
  newOutboundStats,
  type ConnectOptions,
  type Destination,
  type Outbound,
  type OutboundStats,
  type TcpUpstream,
  type UpstreamReason,
  connectProblem,
} from './outbound.js';
import { formatSocks5Url, type Socks5Url } from './socks5-url.js';

export const SOCKS5_DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface Socks5OutboundOptions {
  /** The name rules refer to. */
  readonly name: string;
  /** The proxy, as parsed by parseSocks5Url. */
  readonly proxy: Socks5Url;
  /** Deadline for proxy connect + handshake when connectTcp gets none; default 10 s. */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** SOCKS5 reply codes (RFC 1928 §6) and what each means to the stack. */
export const SOCKS5_REPLY_REASONS: ReadonlyMap<number, UpstreamReason> = new Map<number, UpstreamReason>([
  [0x01, 'unreachable'], // general SOCKS server failure (microsocks: any other errno)
  [0x02, 'not_allowed'], // connection not allowed by ruleset
  [0x03, 'unreachable'], // network unreachable
  [0x04, 'unreachable'], // host unreachable
  [0x05, 'refused'], // connection refused
  [0x06, 'timeout'], // TTL expired (microsocks and dante send it when their connect times out)
  [0x07, 'protocol'], // command not supported
  [0x08, 'protocol'], // address type not supported
]);

/**
 * The `socks` library names reply codes by its `Socks5Response` enum in the error message
 * ("Socks5 proxy rejected connection - ConnectionRefused"); it exports neither the enum nor
 * its ERRORS table, so we keep our own copy of the names.
 */
const SOCKS5_REPLY_NAMES: Readonly<Record<string, number>> = {
  Failure: 0x01,
  NotAllowed: 0x02,
  NetworkUnreachable: 0x03,
  HostUnreachable: 0x04,
  ConnectionRefused: 0x05,
  TTLExpired: 0x06,
  CommandNotSupported: 0x07,
  AddressNotSupported: 0x08,
};

export interface ClassifiedSocksError {
  readonly reason: UpstreamReason;
  /** The SOCKS5 reply code, when the proxy sent a failure reply. */
  readonly replyCode?: number;
  /** What went wrong, in words, for the UpstreamError message. */
  readonly detail: string;
}

/**
 * Map a `socks` error to a reason. The library's SocksClientError carries only a message
 * string (no reply code, no errno), so this parses the message defensively: known phrases
 * from socks 2.8's ERRORS table first, anything unrecognised falls back to 'protocol'.
 */
export function classifySocksError(message: string): ClassifiedSocksError {
  const rejected = /rejected connection - (\w+)/.exec(message);
  if (rejected !== null) {
    const code = SOCKS5_REPLY_NAMES[rejected[1]];
    if (code === undefined) return { reason: 'protocol', detail: `the proxy sent an unknown reply code (${message})` };
    const reason = SOCKS5_REPLY_REASONS.get(code) ?? 'protocol';
    return { reason, replyCode: code, detail: `the proxy replied 0x0${code.toString(16)} (${rejected[1]})` };
  }
  if (/authentication failed/i.test(message)) {
    return { reason: 'auth_failed', detail: 'the proxy rejected the user name or password' };
  }
  if (/no accepted authentication type/i.test(message)) {
    return { reason: 'auth_failed', detail: 'the proxy accepts none of our authentication methods (a user name and password may be required)' };
  }
  if (/unknown authentication type/i.test(message)) {
    return { reason: 'protocol', detail: 'the proxy chose an authentication method we did not offer' };
  }
  if (/timed out/i.test(message)) return { reason: 'timeout', detail: 'the SOCKS handshake timed out' };
  if (/^Socket closed$/i.test(message) || /ECONNRESET|EPIPE/.test(message)) {
    return { reason: 'proxy_down', detail: 'the proxy closed the connection during the SOCKS handshake' };
  }
  return { reason: 'protocol', detail: `SOCKS handshake failed: ${message}` };
}

const PROXY_DOWN_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

/**
 * `socks` arms a timeout timer when it starts and never clears it; its closure holds the client,
 * which holds our socket and our listeners (and through them a whole flow) until it fires. Once
 * the handshake is over, cut those references so the pending timer keeps only an empty shell.
 */
export function releaseSocksClient(client: SocksClient): void {
  client.removeAllListeners();
  const shell = client as unknown as { socket?: unknown; options?: { existing_socket?: unknown } };
  shell.socket = undefined;
  if (shell.options !== undefined) shell.options = { ...shell.options, existing_socket: undefined };
}

export class Socks5Outbound implements Outbound {
  readonly kind = 'socks5' as const;
  readonly name: string;
  readonly stats: OutboundStats = newOutboundStats();
  /** Sum of setup times (proxy connect + handshake) of established connects, in ms. */
  tcpSetupMsTotal = 0;

  private readonly proxy: Socks5Url;
  private readonly socksProxy: SocksProxy;
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly clock: Clock;
  private readonly inFlight = new Set<(err: UpstreamError) => void>();
  private closed = false;

  constructor(opts: Socks5OutboundOptions) {
    this.name = opts.name;
    this.proxy = opts.proxy;
    this.timeoutMs = opts.connectTimeoutMs ?? SOCKS5_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new RangeError(`connectTimeoutMs must be > 0, got ${this.timeoutMs}`);
    this.logger = opts.logger;
    this.clock = opts.clock ?? monotonicClock;
    this.socksProxy = {
      host: opts.proxy.host,
      port: opts.proxy.port,
      type: 5,
      ...(opts.proxy.auth === undefined ? {} : { userId: opts.proxy.auth.username, password: opts.proxy.auth.password }),
    };
  }

  /** The proxy address with the password hidden, for logs and status. */
  get proxyUrl(): string {
    return formatSocks5Url(this.proxy);
  }

  connectTcp(dst: Destination, opts: ConnectOptions = {}): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    const target = `${dst.ip}:${dst.port}`;
    const signal = opts.signal;
    const problem = connectProblem(this.name, this.closed, dst, signal, 0);
    if (problem !== undefined) return Promise.reject(this.failed(...problem));
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const started = this.clock.now();

    return new Promise<TcpUpstream>((resolve, reject) => {
      // allowHalfOpen: a destination that half-closes (shutdown(SHUT_WR)) must still receive
      // what the app sends afterwards; Node would otherwise end our side on its FIN.
      const socket = new Socket({ allowHalfOpen: true });
      let settled = false;
      let phase: 'connect' | 'handshake' = 'connect';

      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.removeListener('error', onConnectError);
        socket.removeListener('connect', onConnect);
        socket.removeListener('end', onEarlyEnd);
        this.inFlight.delete(fail);
      };
      const fail = (err: UpstreamError): void => {
        if (settled) return;
        settled = true;
        cleanup();
        socket.destroy();
        this.stats.tcpFailures[err.reason]++;
        if (this.logger?.isLevelEnabled('debug') === true) {
          this.logger.debug({ outbound: this.name, dst: target, reason: err.reason }, err.message);
        }
        reject(err);
      };
      const onAbort = (): void => fail(this.error('aborted', `${target}: aborted by the caller`, signal?.reason));
      const onConnectError = (err: NodeJS.ErrnoException): void => {
        const code = err.code ?? 'unknown error';
        const known = PROXY_DOWN_CODES.has(code) ? '' : ' (unexpected error)';
        fail(this.error('proxy_down', `${target}: cannot reach SOCKS5 proxy ${this.proxyAddr()}: ${code}${known}`, err));
      };
      // Half-open sockets do not close on the proxy's FIN, so a proxy that hangs up in the
      // middle of the handshake has to be noticed here.
      const onEarlyEnd = (): void =>
        fail(this.error('proxy_down', `${target}: SOCKS5 proxy ${this.proxyAddr()} closed the connection during the handshake`));
      const onConnect = (): void => {
        if (settled) return;
        phase = 'handshake';
        socket.once('end', onEarlyEnd);
        socket.removeListener('error', onConnectError);
        this.handshake(socket, dst, started + timeoutMs - this.clock.now(), {
          established: (excess) => {
            if (settled) return;
            settled = true;
            cleanup();
            if (excess !== undefined) socket.unshift(excess);
            this.stats.tcpEstablished++;
            this.tcpSetupMsTotal += this.clock.now() - started;
            resolve(socket);
          },
          failed: (message) => {
            const c = classifySocksError(message);
            fail(this.error(c.reason, `${target} via SOCKS5 proxy ${this.proxyAddr()}: ${c.detail}`));
          },
        });
      };
      const timer = setTimeout(() => {
        // A proxy that does not even complete the TCP handshake is down (or black-holed), which
        // says more than 'timeout'; once it accepted, a slow answer is a timeout.
        if (phase === 'connect') {
          fail(this.error('proxy_down', `${target}: SOCKS5 proxy ${this.proxyAddr()} did not accept a TCP connection within ${timeoutMs} ms`));
        } else {
          fail(this.error('timeout', `${target}: the SOCKS5 handshake with ${this.proxyAddr()} took longer than ${timeoutMs} ms`));
        }
      }, timeoutMs);

      this.inFlight.add(fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onConnectError);
      socket.once('connect', onConnect);
      // Nagle off before the first byte: every handshake message goes out at once.
      socket.setNoDelay(true);
      socket.connect({ host: this.proxy.host, port: this.proxy.port });
    });
  }

  close(): Promise<void> {
    this.closed = true;
    for (const fail of [...this.inFlight]) fail(this.error('aborted', `outbound '${this.name}' was closed`));
    return Promise.resolve();
  }

  /**
   * Run the SOCKS5 handshake on a connected socket. On success the socket is left paused,
   * and any bytes that arrived together with the CONNECT reply are passed back as `excess`.
   */
  private handshake(
    socket: Socket,
    dst: Destination,
    remainingMs: number,
    done: { established(excess: Buffer | undefined): void; failed(message: string): void },
  ): void {
    const client = new SocksClient({
      command: 'connect',
      proxy: this.socksProxy,
      destination: { host: dst.ip, port: dst.port },
      // Our own timer fires first; this one only guards against a leak if ours were lost.
      timeout: Math.max(1, remainingMs) + 1000,
      existing_socket: socket,
    });
    client.once('error', (err: SocksClientError) => {
      releaseSocksClient(client);
      done.failed(err.message);
    });
    client.once('established', () => {
      // socks 2.8, on 'established', schedules a setImmediate that re-emits the bytes that came
      // with the reply as a raw 'data' event and then resume()s the socket. Our caller has no
      // 'data' listener yet, so those bytes (an SSH or SMTP banner) would be lost. We catch them
      // and, in our own setImmediate (queued after theirs, with no I/O phase in between), pause
      // the socket again and put them back at the front of its read buffer.
      const caught: Buffer[] = [];
      const catchData = (chunk: Buffer): void => {
        caught.push(chunk);
      };
      // socks has removed its 'error' handler; until our caller adds one, an error must not crash.
      const ignoreError = (): void => {};
      socket.on('data', catchData);
      socket.on('error', ignoreError);
      setImmediate(() => {
        // After socks' own setImmediate (it re-emitted the excess bytes and is done with us).
        releaseSocksClient(client);
        socket.removeListener('data', catchData);
        socket.removeListener('error', ignoreError);
        socket.pause();
        if (socket.destroyed) {
          done.failed('Socket closed');
          return;
        }
        done.established(caught.length === 0 ? undefined : caught.length === 1 ? caught[0] : Buffer.concat(caught));
      });
    });
    client.connect(socket);
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
