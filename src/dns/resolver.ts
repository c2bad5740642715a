/**
 * The DNS hijack resolver: every query an app sends to port 53 — whatever address it was
 * sent to — is answered by one configured upstream resolver, reached through the proxy, so no
 * query leaves any other way.
 *
 *   app query ─► cache? ─hit─► answer (query's ID, aged TTLs)
 *                  │miss
 *                  ▼
 *      transport for this proxy: 'udp' ─► shared UDP ASSOCIATE ─► upstream:53 ──┐
 *                  │ (openUdp missing, or the proxy refused UDP ASSOCIATE:       │ TC=1, or no
 *                  │  remembered: 'tcp' from then on)                            │ answer after
 *                  ▼                                                            ▼ the retries
 *      DNS over TCP through CONNECT (RFC 1035 §4.2.2, RFC 7766: 2-byte length prefix)
 *
 * UDP: one association, shared by all queries and kept while in use (closed after
 * `udpIdleMs` without queries). Each query goes out under an ID of ours, unique among the
 * queries in flight; an answer must come from the upstream's address, carry an ID we are
 * waiting for and echo the same question, else it is ignored (RFC 5452's checks).
 *
 * TCP: one connection per query through `connectTcp` (the proxy's CONNECT), torn down after the
 * answer. A refused connect ('refused') is what the caller turns into ICMP port unreachable.
 *
 * Answers go back with the app's ID, cached per `DnsCache`, and cut to what the app accepts
 * over UDP (its EDNS size, else 512 bytes): a larger answer is replaced by an empty TC=1
 * response, so the app asks again over TCP (RFC 7766 §5).
 */
import { randomInt } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import {
  UpstreamError,
  UPSTREAM_REASONS,
  isUpstreamError,
  type Destination,
  type Outbound,
  type UdpUpstream,
  type UpstreamReason,
} from '../outbound/outbound.js';
import { DnsCache } from './cache.js';
import { DnsMessage, setDnsId, truncatedResponse, withDnsId } from './message.js';

export const DNS_RESOLVER_DEFAULTS = {
  udpTimeoutMs: 2000,
  udpAttempts: 2,
  tcpTimeoutMs: 5000,
  maxInFlight: 512,
  udpIdleMs: 30_000,
  /** Queries in a row that only TCP could answer (UDP silent) before UDP is given up for good. */
  udpGiveUpAfter: 5,
} as const;

export type DnsTransport = 'udp' | 'tcp';

export interface DnsResolverOptions {
  /** The upstream resolver (IPv4 and port), as the proxy should reach it. */
  upstream: Destination;
  /** The proxy the upstream is reached through. */
  outbound: Outbound;
  clock: Clock;
  logger?: Logger;
  /** An answer cache; `false` for none. Default: a DnsCache with its defaults. */
  cache?: DnsCache | false;
  /** Force a transport; default: UDP when the outbound can, else TCP (and remembered). */
  transport?: DnsTransport;
  udpTimeoutMs?: number;
  /** UDP tries per query before TCP. */
  udpAttempts?: number;
  /** Connect + exchange over TCP. */
  tcpTimeoutMs?: number;
  /** Queries in flight beyond which new ones are dropped. */
  maxInFlight?: number;
  udpIdleMs?: number;
}

export type DnsResolveResult =
  | { readonly kind: 'answer'; readonly answer: Uint8Array; readonly via: 'cache' | 'local' | DnsTransport }
  /** The upstream could not be reached or did not answer; `reason` says how. */
  | { readonly kind: 'error'; readonly reason: UpstreamReason; readonly message: string }
  /** Not a query (malformed, a response, no question), or too many in flight: say nothing. */
  | { readonly kind: 'drop'; readonly why: 'malformed' | 'busy' | 'closed' };

/** What answers a caught query: the hijack resolver, or the fake-IP one in front of it. */
export interface DnsAnswerer {
  /**
   * `maxAnswerBytes`: the largest answer the app takes; default its UDP limit (EDNS size, else
   * 512). DNS over TCP passes 65,535: the whole answer, never TC=1.
   */
  resolve(query: Uint8Array, maxAnswerBytes?: number): Promise<DnsResolveResult>;
  /**
   * Optional fast path: the answer to `query` when it is known at once (the fake-IP answerer's
   * own answers), written at `out[0]` (`out` holds DNS_UDP_DEFAULT_SIZE bytes); returns its
   * length, or 0 when the query needs resolve(). Saves the promise and the copies per query.
   */
  answerNow?(query: Uint8Array, out: Uint8Array): number;
  /**
   * Optional, for the link's own answers to plain A queries (native/fake_dns.c): the address
   * the answer to an A query for canonical `name` carries when this answerer gives it at once
   * (a fake address, counted as answerNow counts it); undefined when the query needs the
   * general path.
   */
  addressNow?(name: string): number | undefined;
}

export interface DnsResolverStats {
  queries: number;
  cacheHits: number;
  udpAnswers: number;
  tcpAnswers: number;
  /** UDP answers with TC=1, asked again over TCP. */
  truncatedRetries: number;
  /** UDP tries that got no answer in time. */
  udpTimeouts: number;
  /** Answers cut to TC=1 because the app's UDP limit was smaller. */
  truncatedForApp: number;
  /** Answers ignored: wrong source, unknown ID, another question, unparsable. */
  ignored: number;
  malformed: number;
  busy: number;
  failures: Record<UpstreamReason, number>;
}

interface PendingUdp {
  readonly query: DnsMessage;
  readonly done: (answer: DnsMessage | undefined) => void;
}

export class DnsResolver implements DnsAnswerer {
  readonly upstream: Destination;
  readonly outbound: Outbound;
  readonly cache: DnsCache | undefined;
  private readonly log: Logger | undefined;
  private readonly udpTimeoutMs: number;
  private readonly udpAttempts: number;
  private readonly tcpTimeoutMs: number;
  private readonly maxInFlight: number;
  private readonly udpIdleMs: number;
  /** Learnt per proxy: undefined until the first query decides. */
  private mode: DnsTransport | undefined;
  private tcpOnlyStreak = 0;
  private inFlight = 0;
  private closed = false;

  private assoc: UdpUpstream | undefined;
  private assocOpening: Promise<UdpUpstream> | undefined;
  private readonly pending = new Map<number, PendingUdp>();
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly tcpSockets = new Set<Socket>();

  readonly stats: DnsResolverStats;

  constructor(opts: DnsResolverOptions) {
    this.upstream = opts.upstream;
    this.outbound = opts.outbound;
    this.log = opts.logger;
    this.cache = opts.cache === false ? undefined : (opts.cache ?? new DnsCache({ clock: opts.clock }));
    this.udpTimeoutMs = opts.udpTimeoutMs ?? DNS_RESOLVER_DEFAULTS.udpTimeoutMs;
    this.udpAttempts = opts.udpAttempts ?? DNS_RESOLVER_DEFAULTS.udpAttempts;
    this.tcpTimeoutMs = opts.tcpTimeoutMs ?? DNS_RESOLVER_DEFAULTS.tcpTimeoutMs;
    this.maxInFlight = opts.maxInFlight ?? DNS_RESOLVER_DEFAULTS.maxInFlight;
    this.udpIdleMs = opts.udpIdleMs ?? DNS_RESOLVER_DEFAULTS.udpIdleMs;
    this.mode = opts.transport ?? (this.outbound.openUdp === undefined ? 'tcp' : undefined);
    const failures = {} as Record<UpstreamReason, number>;
    for (const r of UPSTREAM_REASONS) failures[r] = 0;
    this.stats = { queries: 0, cacheHits: 0, udpAnswers: 0, tcpAnswers: 0, truncatedRetries: 0, udpTimeouts: 0, truncatedForApp: 0, ignored: 0, malformed: 0, busy: 0, failures };
  }

  /** The transport this proxy gets: 'udp', 'tcp', or undefined before the first query decided. */
  get transport(): DnsTransport | undefined {
    return this.mode;
  }

  /**
   * Answer one query (the payload of an app's UDP datagram to port 53; copied, the caller may
   * reuse its buffer). Never rejects.
   */
  async resolve(queryBytes: Uint8Array, maxAnswerBytes?: number): Promise<DnsResolveResult> {
    if (this.closed) return { kind: 'drop', why: 'closed' };
    const query = DnsMessage.parse(new Uint8Array(queryBytes));
    if (query === undefined || query.isResponse || query.question === undefined || query.opcode !== 0) {
      this.stats.malformed++;
      return { kind: 'drop', why: 'malformed' };
    }
    this.stats.queries++;
    const cached = this.cache?.get(query);
    if (cached !== undefined) {
      this.stats.cacheHits++;
      return { kind: 'answer', answer: this.fitForApp(query, cached, maxAnswerBytes), via: 'cache' };
    }
    if (this.inFlight >= this.maxInFlight) {
      this.stats.busy++;
      return { kind: 'drop', why: 'busy' };
    }
    this.inFlight++;
    try {
      const { answer, via } = await this.ask(query);
      if (this.closed) return { kind: 'drop', why: 'closed' };
      this.cache?.put(query, answer);
      const out = new Uint8Array(answer.bytes);
      setDnsId(out, query.id);
      return { kind: 'answer', answer: this.fitForApp(query, out, maxAnswerBytes), via };
    } catch (e) {
      const err = isUpstreamError(e) ? e : new UpstreamError('protocol', this.outbound.name, `DNS: ${e instanceof Error ? e.message : String(e)}`, e);
      this.stats.failures[err.reason]++;
      if (this.log?.isLevelEnabled('debug') === true) this.log.debug({ upstream: this.upstream, reason: err.reason, q: query.question.name }, err.message);
      return { kind: 'error', reason: err.reason, message: err.message };
    } finally {
      this.inFlight--;
    }
  }

  /** Stop: pending queries get no answer, sockets are closed. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    for (const p of [...this.pending.values()]) p.done(undefined);
    this.pending.clear();
    this.assoc?.close();
    this.assoc = undefined;
    for (const s of this.tcpSockets) s.destroy();
    this.tcpSockets.clear();
  }

  /** An answer the app can take (over UDP: its limit): TC=1 and no records if it is larger. */
  private fitForApp(query: DnsMessage, answer: Uint8Array, limit = query.udpPayloadSize): Uint8Array {
    if (answer.length <= limit) return answer;
    this.stats.truncatedForApp++;
    return truncatedResponse(query, DnsMessage.parse(answer));
  }

  private async ask(query: DnsMessage): Promise<{ answer: DnsMessage; via: DnsTransport }> {
    if (this.mode !== 'tcp') {
      const a = await this.viaUdp(query);
      if (a !== undefined && !a.truncated) {
        this.tcpOnlyStreak = 0;
        this.stats.udpAnswers++;
        return { answer: a, via: 'udp' };
      }
      if (a !== undefined) this.stats.truncatedRetries++;
      const t = await this.viaTcp(query);
      if (a === undefined && this.mode === 'udp' && ++this.tcpOnlyStreak >= DNS_RESOLVER_DEFAULTS.udpGiveUpAfter) {
        // The proxy accepts associations but nothing comes back (a firewall, a proxy that
        // drops UDP): stop paying the UDP timeout on every query.
        this.setMode('tcp', `${this.tcpOnlyStreak} queries in a row were answered only over TCP`);
      }
      this.stats.tcpAnswers++;
      return { answer: t, via: 'tcp' };
    }
    const t = await this.viaTcp(query);
    this.stats.tcpAnswers++;
    return { answer: t, via: 'tcp' };
  }

  private setMode(mode: DnsTransport, why: string): void {
    if (this.mode === mode) return;
    this.mode = mode;
    this.log?.info({ outbound: this.outbound.name, upstream: `${this.upstream.ip}:${this.upstream.port}`, transport: mode }, `DNS through '${this.outbound.name}' now goes over ${mode.toUpperCase()}: ${why}`);
    if (mode === 'tcp') {
      this.assoc?.close();
      this.assoc = undefined;
    }
  }

  // --- UDP ---------------------------------------------------------------------------------

  /**
   * The answer over UDP, or undefined when UDP gave none (timeouts, association lost or
   * refused: the caller tries TCP). Throws only when closed.
   */
  private async viaUdp(query: DnsMessage): Promise<DnsMessage | undefined> {
    let assoc: UdpUpstream;
    try {
      assoc = await this.association();
    } catch (e) {
      const reason = isUpstreamError(e) ? e.reason : 'protocol';
      if (reason === 'protocol' || reason === 'not_allowed') {
        this.setMode('tcp', `the proxy refused UDP ASSOCIATE (${reason})`);
      }
      return undefined;
    }
    if (this.mode === undefined) this.setMode('udp', 'the proxy granted UDP ASSOCIATE');
    for (let attempt = 0; attempt < this.udpAttempts && !this.closed; attempt++) {
      const a = await this.udpExchange(assoc, query);
      if (a !== undefined) return a;
      if (this.assoc !== assoc) return undefined; // lost meanwhile
    }
    return undefined;
  }

  private udpExchange(assoc: UdpUpstream, query: DnsMessage): Promise<DnsMessage | undefined> {
    return new Promise((resolve) => {
      let id = randomInt(0, 0x10000);
      for (let k = 0; this.pending.has(id) && k < 0x10000; k++) id = (id + 1) & 0xffff;
      const timer = setTimeout(() => {
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        this.stats.udpTimeouts++;
        resolve(undefined);
      }, this.udpTimeoutMs);
      const entry: PendingUdp = {
        query,
        done: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
      };
      this.pending.set(id, entry);
      this.touchIdle();
      if (!assoc.send(this.upstream, withDnsId(query.bytes, id))) {
        this.pending.delete(id);
        entry.done(undefined);
      }
    });
  }

  private association(): Promise<UdpUpstream> {
    if (this.assoc !== undefined) return Promise.resolve(this.assoc);
    if (this.assocOpening !== undefined) return this.assocOpening;
    if (this.outbound.openUdp === undefined) return Promise.reject(new UpstreamError('protocol', this.outbound.name, 'this outbound carries no UDP'));
    const p = this.outbound.openUdp({ timeoutMs: this.tcpTimeoutMs }).then(
      (a) => {
        this.assocOpening = undefined;
        if (this.closed || this.mode === 'tcp') {
          a.close();
          throw new UpstreamError('aborted', this.outbound.name, 'DNS resolver closed');
        }
        this.assoc = a;
        a.setHandlers({
          message: (payload, from) => this.onUdpAnswer(payload, from),
          closed: () => {
            if (this.assoc !== a) return;
            this.assoc = undefined;
            // Whatever was waiting on it gets no answer over UDP: those queries go to TCP.
            for (const [id, q] of [...this.pending]) {
              this.pending.delete(id);
              q.done(undefined);
            }
          },
        });
        this.touchIdle();
        return a;
      },
      (e: unknown) => {
        this.assocOpening = undefined;
        throw e;
      },
    );
    this.assocOpening = p;
    return p;
  }

  private onUdpAnswer(payload: Uint8Array, from: Destination): void {
    const msg = from.ip === this.upstream.ip && from.port === this.upstream.port ? DnsMessage.parse(payload) : undefined;
    const p = msg === undefined || !msg.isResponse ? undefined : this.pending.get(msg.id);
    if (msg === undefined || p === undefined || !msg.sameQuestion(p.query)) {
      this.stats.ignored++;
      return;
    }
    this.pending.delete(msg.id);
    p.done(msg);
  }

  /** Close the association after `udpIdleMs` without queries. */
  private touchIdle(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.pending.size > 0) return this.touchIdle();
      this.assoc?.close();
      this.assoc = undefined;
    }, this.udpIdleMs);
    this.idleTimer.unref();
  }

  // --- TCP ---------------------------------------------------------------------------------

  /** One exchange over a fresh CONNECT; throws an UpstreamError. */
  private async viaTcp(query: DnsMessage): Promise<DnsMessage> {
    const name = this.outbound.name;
    const deadline = performance.now() + this.tcpTimeoutMs;
    const socket = await this.outbound.connectTcp(this.upstream, { timeoutMs: this.tcpTimeoutMs });
    if (this.closed) {
      socket.destroy();
      throw new UpstreamError('aborted', name, 'DNS resolver closed');
    }
    this.tcpSockets.add(socket);
    return new Promise<DnsMessage>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let have = 0;
      let settled = false;
      const finish = (err: UpstreamError | undefined, msg?: DnsMessage): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.tcpSockets.delete(socket);
        socket.destroy();
        if (err !== undefined) reject(err);
        else resolve(msg!);
      };
      const timer = setTimeout(
        () => finish(new UpstreamError('timeout', name, `DNS over TCP to ${this.upstream.ip}:${this.upstream.port}: no answer within ${this.tcpTimeoutMs} ms`)),
        Math.max(1, deadline - performance.now()),
      );
      socket.on('data', (d: Buffer) => {
        chunks.push(d);
        have += d.length;
        if (have < 2) return;
        const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        chunks.length = 0;
        chunks.push(all);
        const len = (all[0] << 8) | all[1];
        if (have < 2 + len) return;
        const msg = DnsMessage.parse(new Uint8Array(all.subarray(2, 2 + len)));
        if (msg === undefined || !msg.isResponse || msg.id !== query.id || !msg.sameQuestion(query)) {
          this.stats.ignored++;
          finish(new UpstreamError('protocol', name, `DNS over TCP to ${this.upstream.ip}:${this.upstream.port}: the answer does not match the query`));
          return;
        }
        finish(undefined, msg);
      });
      socket.on('error', (e) => finish(new UpstreamError('unreachable', name, `DNS over TCP to ${this.upstream.ip}:${this.upstream.port}: ${e.message}`, e)));
      socket.on('close', () => finish(new UpstreamError('unreachable', name, `DNS over TCP to ${this.upstream.ip}:${this.upstream.port}: closed before a whole answer`)));
      const frame = Buffer.allocUnsafe(2 + query.bytes.length);
      frame[0] = query.bytes.length >>> 8;
      frame[1] = query.bytes.length & 0xff;
      frame.set(query.bytes, 2);
      socket.write(frame);
      socket.resume();
    });
  }
}
