/**
 * HTTP CONNECT outbound (RFC 9110 §9.3.6; Basic auth RFC 7617): the office proxy that offers
 * nothing but HTTP (squid, tinyproxy, a corporate gateway).
 *
 *   client                                   proxy
 *     ── TCP connect ─────────────────────────►        (typed errno → proxy_down)
 *     ── CONNECT host:port HTTP/1.1 ──────────►        one write: request line, Host,
 *        [Proxy-Authorization: Basic …]                 credentials when the URL has them
 *     ◄──────────────── HTTP/1.1 200 … \r\n\r\n ──     2xx: the socket is now the tunnel
 *
 * After the 2xx the socket is handed to the relay exactly as the SOCKS5 outbound hands over
 * its socket (paused, with any bytes that followed the header block put back in front), so the
 * splice is the same and there is no per-byte work of ours after the CONNECT.
 *
 * TCP only: there is no `openUdp`, so the UDP relay answers UDP to this outbound with ICMP
 * (administratively prohibited), as for a SOCKS5 proxy that refuses UDP ASSOCIATE, and the DNS
 * resolver (hijack, fake-IP upstream queries) asks over TCP through a CONNECT. A fake-IP flow
 * goes as `CONNECT name:port`: the proxy resolves the name, the client never does.
 *
 * Status codes and what the stack makes of them:
 *   2xx → established;  407 → auth_failed (one sentence: credentials missing or refused), and
 *   401 the same (tinyproxy 1.11 answers a CONNECT with wrong or no credentials 401, not 407);
 *   403, 405 → not_allowed;  502, 503 → unreachable (the proxy could not reach the destination;
 *   squid and tinyproxy both answer so when the destination refuses, which the app sees as RST
 *   either way);  504 → timeout;  anything else → protocol.
 * The password is never part of a message: errors name the proxy by host:port only.
 *
 * Per connect: one socket (a subclass that carries its attempt, so the listeners are
 * module-level functions, not closures) and one attempt object; the deadlines of all attempts
 * of an outbound share one timer (deadline-sweep.ts), as the SOCKS5 connector's do.
 */
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
  PROXY_DOWN_CODES,
  connectProblem,
  destinationText,
} from './outbound.js';
import { discardSetupSocket, releaseSetupSocket, setupSocket, type SetupSocket, type SocketSetup } from './setup-socket.js';
import { DeadlineSweep } from './deadline-sweep.js';
import { HttpWireError, basicAuthLine, emitConnectRequest, parseConnectResponse } from './http-wire.js';
import { formatProxyUrl, type HttpProxyUrl } from './proxy-url.js';

export const HTTP_DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface HttpOutboundOptions {
  /** The name rules refer to. */
  readonly name: string;
  /** The proxy, as parsed by parseProxyUrl. */
  readonly proxy: HttpProxyUrl;
  /** Deadline for proxy connect + CONNECT reply when connectTcp gets none; default 10 s. */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

/** The reason a non-2xx status stands for (see the table above). */
export function reasonOfStatus(status: number): UpstreamReason {
  if (status === 407 || status === 401) return 'auth_failed';
  if (status === 403 || status === 405) return 'not_allowed';
  if (status === 502 || status === 503) return 'unreachable';
  if (status === 504) return 'timeout';
  return 'protocol';
}

/** One connectTcp in flight. */
class HttpConnectAttempt implements PendingConnect, SocketSetup {
  socket: SetupSocket | undefined;
  signal: AbortSignal | undefined;
  cancelSlot: ConnectCancel | undefined;
  private step: 'connect' | 'reply' | 'done' = 'connect';
  /** Reply bytes so far, only when the header block arrived in pieces. */
  private buf: Buffer | undefined;

  constructor(
    private readonly outbound: HttpOutbound,
    readonly dst: Destination,
    readonly started: number,
    readonly deadline: number,
    readonly timeoutMs: number,
    private readonly resolve: (s: TcpUpstream) => void,
    private readonly reject: (e: UpstreamError) => void,
  ) {}

  start(host: string, port: number): void {
    const s = setupSocket(this);
    this.socket = s;
    s.connect({ host, port });
  }

  connected(): void {
    if (this.step !== 'connect' || this.socket === undefined) return;
    this.step = 'reply';
    this.socket.write(this.outbound.request(this.dst));
  }

  received(chunk: Buffer): void {
    if (this.step !== 'reply') return;
    const b = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = undefined;
    let r: ReturnType<typeof parseConnectResponse>;
    try {
      r = parseConnectResponse(b);
    } catch (e) {
      if (!(e instanceof HttpWireError)) throw e;
      this.fail('protocol', `the proxy does not speak HTTP (${e.message})`, e);
      return;
    }
    if (r === undefined) {
      this.buf = Buffer.from(b);
      return;
    }
    if (r.status < 200 || r.status > 299) {
      this.fail(reasonOfStatus(r.status), this.outbound.statusText(r.status, r.reason));
      return;
    }
    const s = this.socket as SetupSocket;
    this.finish();
    releaseSetupSocket(s);
    // Bytes the destination sent right behind the header block (an SSH or SMTP banner): back
    // in front of the read buffer, for the relay to read once it resumes the socket.
    if (b.length > r.length) s.unshift(Buffer.from(b.subarray(r.length)));
    this.outbound.established(this);
    this.resolve(s);
  }

  socketError(err: NodeJS.ErrnoException): void {
    if (this.step === 'connect') {
      const code = err.code ?? 'unknown error';
      this.fail('proxy_down', `cannot reach the proxy: ${code}${PROXY_DOWN_CODES.has(code) ? '' : ' (unexpected error)'}`, err);
      return;
    }
    this.hungUp(err);
  }

  socketEnd(): void {
    this.hungUp(undefined);
  }

  hungUp(cause: unknown): void {
    if (this.step === 'done') return;
    this.fail('proxy_down', 'the proxy closed the connection before it answered the CONNECT', cause);
  }

  /** For the outbound's deadline sweep. */
  wakeAt(): number {
    return this.deadline;
  }

  /** The deadline passed. */
  wake(): void {
    // A proxy that does not even complete the TCP handshake is down (or black-holed); once it
    // accepted, a slow answer is a timeout.
    if (this.step === 'connect') this.fail('proxy_down', `the proxy did not accept a TCP connection within ${this.timeoutMs} ms`);
    else this.fail('timeout', `the proxy did not answer the CONNECT within ${this.timeoutMs} ms`);
  }

  /** The caller's AbortSignal fired (`this` is the listener object). */
  handleEvent(): void {
    this.fail('aborted', 'aborted by the caller', this.signal?.reason);
  }

  /** The caller cancelled through its ConnectCancel. */
  cancel(): void {
    this.fail('aborted', 'aborted by the caller');
  }

  fail(reason: UpstreamReason, detail: string, cause?: unknown): void {
    if (this.step === 'done') return;
    const s = this.socket;
    this.finish();
    if (s !== undefined) discardSetupSocket(s);
    this.reject(this.outbound.attemptFailed(this, reason, detail, cause));
  }

  private finish(): void {
    this.step = 'done';
    this.buf = undefined;
    this.signal?.removeEventListener('abort', this);
    this.signal = undefined;
    if (this.cancelSlot?.pending === this) this.cancelSlot.pending = undefined;
    this.cancelSlot = undefined;
    if (this.socket !== undefined) this.socket.setup = undefined;
    this.socket = undefined;
    this.outbound.deadlines.pending.delete(this);
  }
}

export class HttpOutbound implements Outbound {
  readonly kind = 'http' as const;
  readonly name: string;
  readonly stats: OutboundStats = newOutboundStats();
  /** Sum of setup times (proxy connect + CONNECT reply) of established connects, in ms. */
  tcpSetupMsTotal = 0;
  /** @internal Attempts in flight, and the one timer of their deadlines. */
  readonly deadlines = new DeadlineSweep<HttpConnectAttempt>();

  private readonly proxy: HttpProxyUrl;
  private readonly authLine: string;
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly clock: Clock;
  private closed = false;

  constructor(opts: HttpOutboundOptions) {
    this.name = opts.name;
    this.proxy = opts.proxy;
    this.timeoutMs = opts.connectTimeoutMs ?? HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new RangeError(`connectTimeoutMs must be > 0, got ${this.timeoutMs}`);
    this.authLine = opts.proxy.auth === undefined ? '' : basicAuthLine(opts.proxy.auth.username, opts.proxy.auth.password);
    this.logger = opts.logger;
    this.clock = opts.clock ?? monotonicClock;
  }

  /** The proxy address with the password hidden, for logs and status. */
  get proxyUrl(): string {
    return formatProxyUrl(this.proxy);
  }

  connectTcp(dst: Destination, opts: ConnectOptions = {}): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    const problem = connectProblem(this.name, this.closed, dst, opts.signal, 1);
    if (problem !== undefined) return Promise.reject(this.failed(...problem));
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const started = this.clock.now();
    return new Promise<TcpUpstream>((resolve, reject) => {
      const a = new HttpConnectAttempt(this, dst, started, performance.now() + timeoutMs, timeoutMs, resolve, reject);
      const signal = opts.signal;
      if (signal !== undefined) {
        a.signal = signal;
        signal.addEventListener('abort', a, { once: true });
      }
      if (opts.cancel !== undefined) {
        a.cancelSlot = opts.cancel;
        opts.cancel.pending = a;
      }
      this.deadlines.add(a);
      a.start(this.proxy.host, this.proxy.port);
    });
  }

  close(): Promise<void> {
    this.closed = true;
    for (const a of [...this.deadlines.pending]) a.fail('aborted', `outbound '${this.name}' was closed`);
    this.deadlines.stop();
    return Promise.resolve();
  }

  /** @internal The request for `dst`: by name for a fake-IP flow, else by address. */
  request(dst: Destination): Buffer {
    return emitConnectRequest({ host: dst.name ?? dst.ip, port: dst.port }, this.authLine);
  }

  /** @internal The sentence for a refusal: the status, and for 407 what to do about it. */
  statusText(status: number, reason: string): string {
    // The reason phrase is the proxy's text: cut and stripped of control characters.
    const phrase = reason.replace(/[^\x20-\x7e]/g, '').slice(0, 60);
    const said = `the proxy answered ${status}${phrase === '' ? '' : ` ${phrase}`}`;
    if (reasonOfStatus(status) !== 'auth_failed') return said;
    return this.proxy.auth === undefined
      ? `${said}: it requires a user name and password; give them as http://USER:PASS@${this.proxyAddr()}`
      : `${said}: it refused the user name and password of the proxy URL; check them`;
  }

  /** @internal An attempt succeeded. */
  established(a: HttpConnectAttempt): void {
    this.stats.tcpEstablished++;
    this.tcpSetupMsTotal += this.clock.now() - a.started;
  }

  /** @internal An attempt failed: count it, log it, and build its error. */
  attemptFailed(a: HttpConnectAttempt, reason: UpstreamReason, detail: string, cause?: unknown): UpstreamError {
    const target = destinationText(a.dst);
    const err = new UpstreamError(reason, this.name, `${target} via HTTP proxy ${this.proxyAddr()}: ${detail}`, cause);
    this.stats.tcpFailures[reason]++;
    if (this.logger?.isLevelEnabled('debug') === true) this.logger.debug({ outbound: this.name, dst: target, reason }, err.message);
    return err;
  }

  private proxyAddr(): string {
    return `${this.proxy.host}:${this.proxy.port}`;
  }

  /** An error for an attempt that never started (no socket): counted here. */
  private failed(reason: UpstreamReason, message: string): UpstreamError {
    this.stats.tcpFailures[reason]++;
    return new UpstreamError(reason, this.name, message);
  }
}
