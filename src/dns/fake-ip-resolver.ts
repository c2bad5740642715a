/**
 * `dns.mode: fakeip`: the answerer for queries caught by tunroute.
 *
 *   query for N ─► N tunneled? ─no──► the upstream answerer (the real answer)
 *                      │yes
 *                      ├─ A (class IN)           ─► a fake address for N, at once, locally
 *                      ├─ AAAA, HTTPS, SVCB      ─► NODATA (NOERROR, no records): no IPv6 and no
 *                      │                             address hints that would bypass the pool
 *                      └─ any other type         ─► the upstream answerer (MX, TXT, SRV… are
 *                                                    asked through the proxy, as hijack does)
 *
 * "Tunneled" is the caller's predicate: every name in a full tunnel, the names of the domain
 * routes in a split tunnel by domain. In a split tunnel by domain, a name that is not tunneled
 * is asked of `direct` (the system's resolver, out of the host's own interface) with every
 * type: it gets its real address and its flows go the host's way. A flow to a fake address is later carried to N by name
 * (the pool answers nameOf), so the client never resolves N itself and no query for N leaves.
 *
 * The fake answers carry a short TTL (1 s by default, as Clash's fake-ip-ttl): apps ask again
 * often, which keeps their names' addresses recently used in the pool, and a stale answer
 * never outlives the pool's memory of it by long.
 */
import type { Logger } from '../logger.js';
import { canonicalDomain } from '../net/domain.js';
import type { FakeIpPool } from './fake-ip.js';
import { QueryQuestion, readQueryQuestion } from './question-key.js';
import {
  DnsMessage,
  addressAnswer,
  errorResponse,
  writeAddressAnswer,
  DNS_CLASS_IN,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_HTTPS,
  DNS_TYPE_SVCB,
} from './message.js';
import type { DnsAnswerer, DnsResolveResult } from './resolver.js';

export const FAKE_IP_TTL_S = 1;

const NO_ADDRESSES: readonly number[] = [];

export interface FakeIpResolverOptions {
  pool: FakeIpPool;
  /** Whether canonical `name` goes through the tunnel (and so gets a fake address). */
  tunneled: (name: string) => boolean;
  /** Who answers everything else; undefined: those queries get SERVFAIL. */
  upstream: DnsAnswerer | undefined;
  /** Who answers names that are not tunneled; default `upstream`. */
  direct?: DnsAnswerer;
  ttl?: number;
  logger?: Logger;
}

export interface FakeIpResolverStats {
  /** A answers from the pool. */
  fake: number;
  /** AAAA/HTTPS/SVCB queries for tunneled names answered with no records. */
  empty: number;
  /** Queries passed to the upstream answerer. */
  forwarded: number;
  /** Queries for names that go direct, passed to the direct answerer. */
  direct: number;
  /** A queries refused (SERVFAIL) because every pool address was busy. */
  exhausted: number;
  /** Not a standard query with one question. */
  malformed: number;
}

export class FakeIpResolver implements DnsAnswerer {
  readonly stats: FakeIpResolverStats = { fake: 0, empty: 0, forwarded: 0, direct: 0, exhausted: 0, malformed: 0 };
  private readonly pool: FakeIpPool;
  private readonly tunneled: (name: string) => boolean;
  private readonly upstream: DnsAnswerer | undefined;
  private readonly direct: DnsAnswerer | undefined;
  /** TTL of the fake answers, seconds. */
  readonly ttl: number;
  private readonly log: Logger | undefined;
  private readonly one = [0];
  /** The fast path's question, reused. */
  private readonly q = new QueryQuestion();

  constructor(o: FakeIpResolverOptions) {
    this.pool = o.pool;
    this.tunneled = o.tunneled;
    this.upstream = o.upstream;
    this.direct = o.direct;
    this.ttl = o.ttl ?? FAKE_IP_TTL_S;
    this.log = o.logger;
  }

  resolve(queryBytes: Uint8Array, maxAnswerBytes?: number): Promise<DnsResolveResult> {
    const q = DnsMessage.parse(queryBytes);
    if (q === undefined || q.isResponse || q.opcode !== 0 || q.question === undefined) {
      this.stats.malformed++;
      return Promise.resolve({ kind: 'drop', why: 'malformed' });
    }
    const { qtype, qclass } = q.question;
    const name = qclass === DNS_CLASS_IN ? canonicalDomain(q.question.key) : undefined;
    if (name !== undefined && this.tunneled(name)) {
      if (qtype === DNS_TYPE_A) return Promise.resolve(this.fakeA(q, name));
      if (qtype === DNS_TYPE_AAAA || qtype === DNS_TYPE_HTTPS || qtype === DNS_TYPE_SVCB) {
        this.stats.empty++;
        return Promise.resolve({ kind: 'answer', answer: addressAnswer(q, [], this.ttl), via: 'local' });
      }
    } else if (name !== undefined && this.direct !== undefined) {
      this.stats.direct++;
      return this.direct.resolve(queryBytes, maxAnswerBytes);
    }
    return this.forward(q, queryBytes, maxAnswerBytes);
  }

  /**
   * The fast path (DnsAnswerer.answerNow): A, AAAA, HTTPS and SVCB of a tunneled name, read
   * with readQueryQuestion and answered into `out` with no allocation but the name's string.
   * Everything else (and whatever the fast reader leaves to the general parser) is 0: resolve()
   * decides, with the same outcome for the names both accept.
   */
  answerNow(query: Uint8Array, out: Uint8Array): number {
    const q = this.q;
    if (!readQueryQuestion(query, q) || q.qclass !== DNS_CLASS_IN) return 0;
    const qtype = q.qtype;
    if (qtype !== DNS_TYPE_A && qtype !== DNS_TYPE_AAAA && qtype !== DNS_TYPE_HTTPS && qtype !== DNS_TYPE_SVCB) return 0;
    if (!this.tunneled(q.name)) return 0;
    if (qtype !== DNS_TYPE_A) {
      this.stats.empty++;
      return writeAddressAnswer(query, q.end, NO_ADDRESSES, this.ttl, out);
    }
    const ip = this.handOut(q.name);
    if (ip === undefined) {
      // Rare: the general view builds the SERVFAIL (its question as asked).
      const m = DnsMessage.parse(query);
      if (m === undefined) return 0;
      const answer = this.exhausted(m);
      out.set(answer);
      return answer.length;
    }
    this.one[0] = ip;
    return writeAddressAnswer(query, q.end, this.one, this.ttl, out);
  }

  /**
   * DnsAnswerer.addressNow: the fake address of a tunneled name, handed out now (as an A
   * answer of answerNow); undefined for a name that goes direct and when every address is busy
   * (the general path then answers SERVFAIL and logs it).
   */
  addressNow(name: string): number | undefined {
    return this.tunneled(name) ? this.handOut(name) : undefined;
  }

  /** The pool's address for `name`, counted as a fake answer; undefined when every address is busy. */
  private handOut(name: string): number | undefined {
    const ip = this.pool.lookup(name);
    if (ip !== undefined) this.stats.fake++;
    return ip;
  }

  private fakeA(q: DnsMessage, name: string): DnsResolveResult {
    const ip = this.handOut(name);
    if (ip === undefined) return { kind: 'answer', answer: this.exhausted(q), via: 'local' };
    this.one[0] = ip;
    return { kind: 'answer', answer: addressAnswer(q, this.one, this.ttl), via: 'local' };
  }

  /** SERVFAIL: every pool address is held by a live flow (counted, logged now and then). */
  private exhausted(q: DnsMessage): Uint8Array {
    this.stats.exhausted++;
    if (this.stats.exhausted === 1 || this.stats.exhausted % 1000 === 0) {
      this.log?.warn({ capacity: this.pool.stats.capacity, refused: this.stats.exhausted }, 'fake-IP pool exhausted: every address is held by a live flow; new names get SERVFAIL (widen dns.fakeIpRange)');
    }
    return errorResponse(q, DNS_RCODE_SERVFAIL);
  }

  private forward(q: DnsMessage, queryBytes: Uint8Array, maxAnswerBytes: number | undefined): Promise<DnsResolveResult> {
    this.stats.forwarded++;
    if (this.upstream === undefined) return Promise.resolve({ kind: 'answer', answer: errorResponse(q, DNS_RCODE_SERVFAIL), via: 'local' });
    return this.upstream.resolve(queryBytes, maxAnswerBytes);
  }
}
