/**
 * DNS over TCP while hijacking (dns.mode hijack / fakeip): a TCP connection an app opens to
 * port 53 — whatever the address, as for UDP (udp-relay.ts) — is terminated here and answered
 * by the same answerer as the UDP queries (fake-IP answers, split DNS, the cache). No upstream
 * connection is opened for it: the answerer reaches its resolvers its own way.
 *
 *   SYN to :53 ─► TcpRelay's hook ─► DnsOverTcp.take ─► a DnsTcpSession on the connection
 *   bytes ─► DnsTcpReader (dns/tcp-framing.ts) ─► each query ─► answerer (65,535-byte limit)
 *                                                              └► framed answer ─► the app
 *
 * RFC 7766: several queries on one connection, pipelined; answers are written as they come
 * (possibly out of order, each carries its query's ID). Bounds, so one app cannot hold much:
 * - a query is at most `maxQueryBytes` (a larger length prefix: the connection is reset; the
 *   framing cannot resynchronise);
 * - at most `maxInFlight` queries per connection are being answered or written; beyond it the
 *   bytes stay unread, so the app's window closes (backpressure, not memory);
 * - at most `maxConnections` connections (beyond: RST);
 * - a connection idle for `idleMs` (nothing in flight) is closed with FIN (RFC 7766 §6.2.3),
 *   and reset if the app has not closed its side `idleMs` later. The engine's 1 s sweep does
 *   it: no timer per connection.
 * A failed query (upstream down, timeout, busy) is answered SERVFAIL: TCP has no ICMP to say so.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { DnsMessage, DNS_RCODE_SERVFAIL, errorResponse } from '../dns/message.js';
import type { DnsAnswerer, DnsResolveResult } from '../dns/resolver.js';
import { DNS_TCP_MAX_MESSAGE, DnsTcpReader, frameDnsMessage } from '../dns/tcp-framing.js';
import { u32ToIp } from '../net/ipv4.js';
import type { TcpConnection } from '../stack/tcp/connection.js';
import type { TcpSynRequest } from '../stack/tcp/table.js';
import type { CloseReason, TcpListener } from '../stack/tcp/types.js';
import type { TcpStack } from '../stack/tcp-stack.js';
import type { TcpFlowInfo } from './tcp-relay.js';
import { LimitLog } from './limit-log.js';

export const DNS_TCP_DEFAULTS = {
  maxConnections: 256,
  maxInFlight: 16,
  /** Queries are small (a name and an OPT record); 4 KiB leaves room for any EDNS option. */
  maxQueryBytes: 4096,
  idleMs: 10_000,
  /** Receive window: two largest queries. */
  rcvBufBytes: 8192,
  /** Send buffer: answers beyond it wait in the session's queue (bounded by maxInFlight). */
  sndBufBytes: 16 * 1024,
} as const;

export interface DnsOverTcpOptions {
  stack: TcpStack;
  dns: DnsAnswerer;
  clock: Clock;
  logger: Logger;
  maxConnections?: number;
  maxInFlight?: number;
  maxQueryBytes?: number;
  idleMs?: number;
}

export interface DnsOverTcpStats {
  connectionsOpen: number;
  connectionsTotal: number;
  /** SYNs refused at maxConnections. */
  refusedLimit: number;
  queries: number;
  answered: number;
  /** Queries answered SERVFAIL because the answerer failed (or was busy). */
  failed: number;
  /** Queries the answerer could not parse (dropped), and connections reset for a bad length prefix. */
  malformed: number;
  /** Connections closed after `idleMs` without a query. */
  idleClosed: number;
}

export class DnsOverTcp {
  readonly stats: DnsOverTcpStats = { connectionsOpen: 0, connectionsTotal: 0, refusedLimit: 0, queries: 0, answered: 0, failed: 0, malformed: 0, idleClosed: 0 };
  /** @internal */ readonly o: Required<DnsOverTcpOptions>;
  private readonly sessions = new Set<DnsTcpSession>();
  /** Ids apart from the relay's flows (which count up from 1), so `status` never shows one twice. */
  private nextId = 0x4000_0000;
  private readonly limitLog: LimitLog;

  constructor(opts: DnsOverTcpOptions) {
    this.o = {
      maxConnections: DNS_TCP_DEFAULTS.maxConnections,
      maxInFlight: DNS_TCP_DEFAULTS.maxInFlight,
      maxQueryBytes: DNS_TCP_DEFAULTS.maxQueryBytes,
      idleMs: DNS_TCP_DEFAULTS.idleMs,
      ...opts,
    };
    this.limitLog = new LimitLog(this.o.clock, this.o.logger, `DNS-over-TCP connection limit (${this.o.maxConnections}) reached: new connections to port 53 get RST until some close`);
  }

  /**
   * The TCP relay's hook for a SYN: true when the SYN is ours (port 53 while hijacking) and
   * was accepted or refused here; false: the relay carries it as any other flow.
   */
  readonly take = (req: TcpSynRequest): boolean => {
    if (req.dstPort !== 53) return false;
    const o = this.o;
    if (this.sessions.size >= o.maxConnections) {
      this.stats.refusedLimit++;
      this.limitLog.hit(() => ({ src: `${u32ToIp(req.srcIp)}:${req.srcPort}`, dst: u32ToIp(req.dstIp) }));
      req.reject();
      return true;
    }
    const s = new DnsTcpSession(this, this.nextId++, req.srcIp, req.srcPort, req.dstIp);
    const stack = o.stack;
    s.conn = req.accept({
      iss: stack.random32(),
      tsOffset: stack.random32(),
      mss: stack.mss,
      maxSegmentPayload: stack.maxSegmentPayload,
      output: stack.outputMode,
      rcvBufSize: DNS_TCP_DEFAULTS.rcvBufBytes,
      sndBufSize: DNS_TCP_DEFAULTS.sndBufBytes,
      listener: s,
    });
    this.sessions.add(s);
    this.stats.connectionsOpen++;
    this.stats.connectionsTotal++;
    // Nothing to wait for: the answer is ours to give, so the SYN-ACK goes now.
    s.conn.completeAccept(o.clock.now());
    stack.schedule();
    return true;
  };

  /** @internal */
  ended(s: DnsTcpSession): void {
    if (this.sessions.delete(s)) this.stats.connectionsOpen--;
  }

  /** Close idle connections (the engine's 1 s sweep). */
  sweep(): void {
    if (this.sessions.size === 0) return;
    const now = this.o.clock.now();
    for (const s of this.sessions) s.checkIdle(now);
    this.o.stack.schedule();
  }

  /** The open connections as `status` lists flows (outbound 'dns'). */
  flowInfo(): TcpFlowInfo[] {
    const now = this.o.clock.now();
    return [...this.sessions].map((s) => s.info(now));
  }

  /** Reset the connection with this id (as flowInfo lists it); false if none is open. */
  close(id: number): boolean {
    for (const s of this.sessions) {
      if (s.id === id) {
        s.abort();
        this.o.stack.schedule();
        return true;
      }
    }
    return false;
  }

  /** Reset every connection (stop). */
  closeAll(): void {
    for (const s of [...this.sessions]) s.abort();
    this.o.stack.schedule();
  }
}

/** One app connection to port 53. */
class DnsTcpSession implements TcpListener {
  conn!: TcpConnection;
  private readonly reader: DnsTcpReader;
  /** Queries being answered, plus answers not yet wholly written to the connection. */
  private inFlight = 0;
  /** Framed answers waiting for room in the send buffer; `outAt` is how much of the first went. */
  private out: Uint8Array[] | undefined;
  private outAt = 0;
  private peerFin = false;
  private done = false;
  /** When it last had a query or an answer. */
  private lastActive: number;
  /** When the idle FIN was sent; 0: not yet. */
  private idleFinAt = 0;
  private readonly createdAt: number;
  private bytesUp = 0;
  private bytesDown = 0;

  constructor(
    private readonly owner: DnsOverTcp,
    readonly id: number,
    private readonly srcIp: number,
    private readonly srcPort: number,
    private readonly dstIp: number,
  ) {
    this.reader = new DnsTcpReader(owner.o.maxQueryBytes);
    this.createdAt = this.lastActive = owner.o.clock.now();
  }

  onData(chunk: Uint8Array): void {
    if (this.done) return;
    this.bytesUp += chunk.length;
    this.reader.push(chunk);
    this.pump();
  }

  onPeerFin(): void {
    this.peerFin = true;
    this.finishIfDone();
  }

  onWritable(): void {
    this.flush();
    this.pump();
  }

  onClosed(_reason: CloseReason): void {
    if (this.done) return;
    this.done = true;
    this.out = undefined;
    this.owner.ended(this);
  }

  abort(): void {
    if (this.done) return;
    this.conn.abort(this.owner.o.clock.now());
  }

  /** Hand out whole queries while fewer than maxInFlight are in flight; the rest waits unread. */
  private pump(): void {
    const o = this.owner.o;
    const stats = this.owner.stats;
    while (!this.done && this.inFlight < o.maxInFlight) {
      const before = this.reader.buffered;
      const r = this.reader.next();
      if (r.kind === 'more') break;
      if (r.kind === 'malformed') {
        stats.malformed++;
        if (o.logger.isLevelEnabled('debug')) o.logger.debug({ src: `${u32ToIp(this.srcIp)}:${this.srcPort}`, length: r.length }, 'DNS over TCP: a length prefix no query can have: connection reset');
        this.abort();
        return;
      }
      // The query's bytes leave our buffer: the app's window opens by that much, and the
      // stack may reuse the chunks they were read from. The query is answered later: a copy.
      const query = r.message.slice();
      this.conn.consumed(before - this.reader.buffered);
      this.ask(query);
    }
    o.stack.schedule();
    this.finishIfDone();
  }

  private ask(query: Uint8Array): void {
    const stats = this.owner.stats;
    stats.queries++;
    this.inFlight++;
    this.lastActive = this.owner.o.clock.now();
    void this.owner.o.dns.resolve(query, DNS_TCP_MAX_MESSAGE).then((r) => this.answered(query, r));
  }

  private answered(query: Uint8Array, r: DnsResolveResult): void {
    const stats = this.owner.stats;
    let answer: Uint8Array | undefined;
    if (r.kind === 'answer') {
      stats.answered++;
      answer = r.answer;
    } else if (r.kind === 'error' || (r.kind === 'drop' && r.why === 'busy')) {
      stats.failed++;
      const q = DnsMessage.parse(query);
      if (q !== undefined) answer = errorResponse(q, DNS_RCODE_SERVFAIL);
    } else if (r.why === 'malformed') {
      stats.malformed++;
    }
    if (this.done) return;
    if (answer === undefined) {
      this.inFlight--;
      this.pump();
      return;
    }
    (this.out ??= []).push(frameDnsMessage(answer));
    this.flush();
    this.pump();
  }

  /** Write queued answers while the send buffer takes them; each whole one frees a slot. */
  private flush(): void {
    const out = this.out;
    if (out === undefined || this.done) return;
    while (out.length > 0) {
      const head = out[0];
      const n = this.conn.write(this.outAt === 0 ? head : head.subarray(this.outAt));
      this.bytesDown += n;
      this.outAt += n;
      if (this.outAt < head.length) break;
      out.shift();
      this.outAt = 0;
      this.inFlight--;
      this.lastActive = this.owner.o.clock.now();
    }
    if (out.length === 0) this.out = undefined;
  }

  /** The app closed its side and everything it asked is answered: close ours. */
  private finishIfDone(): void {
    if (this.peerFin && this.inFlight === 0 && !this.done) {
      this.conn.shutdownWrite();
      this.owner.o.stack.schedule();
    }
  }

  /** @internal The sweep: FIN after idleMs without work; RST if the app has not closed idleMs later. */
  checkIdle(now: number): void {
    if (this.done || this.inFlight > 0) return;
    const idleMs = this.owner.o.idleMs;
    if (this.idleFinAt === 0) {
      if (now - this.lastActive < idleMs) return;
      this.idleFinAt = now;
      this.owner.stats.idleClosed++;
      this.conn.shutdownWrite();
    } else if (now - this.idleFinAt >= idleMs) {
      this.abort();
    }
  }

  info(now: number): TcpFlowInfo {
    return {
      id: this.id,
      src: `${u32ToIp(this.srcIp)}:${this.srcPort}`,
      dst: `${u32ToIp(this.dstIp)}:53`,
      outbound: 'dns',
      state: this.inFlight > 0 ? 'resolving' : this.conn.state,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      ageMs: Math.round(now - this.createdAt),
    };
  }
}
