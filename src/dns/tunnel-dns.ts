/**
 * Names that go through a WireGuard tunnel are asked of that tunnel's resolver (wg-quick's
 * `DNS =`), through the tunnel, and get their real answer — never a fake address, and never a
 * query to the local network.
 *
 *   caught query for N ─► tunnelOf(N) ─ a tunnel T ─► T's resolver (through T), or SERVFAIL when
 *                             │                       T has no usable DNS server (logged once)
 *                             └ none ───────────────► the next answerer (fake IP, split DNS, …)
 *
 * Why real answers: a WireGuard outbound forwards whole IP packets, so the packets of a flow
 * must carry the address the peer's side can reach. A fake address would enter the tunnel as
 * it is (the peer knows nothing of our pool); the real address from the tunnel's own resolver
 * is what wg-quick gives its user, and it is routed into the tunnel by the tunnel's AllowedIPs
 * (config/tunnels.ts turns them into routes and rules).
 *
 * `tunnelOf` is the caller's (dns-setup.ts): a domain rule naming a tunnel, or, for a full
 * tunnel over WireGuard, every name.
 */
import type { Logger } from '../logger.js';
import { canonicalDomain } from '../net/domain.js';
import { DnsMessage, DNS_CLASS_IN, DNS_RCODE_SERVFAIL, errorResponse } from './message.js';
import { QueryQuestion, readQueryQuestion } from './question-key.js';
import type { DnsAnswerer, DnsResolveResult } from './resolver.js';

export interface TunnelDnsAnswererOptions {
  /** The tunnel canonical `name` goes through, or undefined. */
  tunnelOf: (name: string) => string | undefined;
  /** Each tunnel's answerer (a resolver through it, or a NoTunnelDnsAnswerer). */
  tunnels: ReadonlyMap<string, DnsAnswerer>;
  /** Everything else. */
  next: DnsAnswerer;
}

export interface TunnelDnsStats {
  /** Queries sent to a tunnel's answerer. */
  tunneled: number;
}

export class TunnelDnsAnswerer implements DnsAnswerer {
  readonly stats: TunnelDnsStats = { tunneled: 0 };
  private readonly q = new QueryQuestion();

  constructor(private readonly o: TunnelDnsAnswererOptions) {}

  /**
   * The next answerer's fast path (fake IP's answers at once), for names no tunnel takes: a
   * tunnel in the config must not cost every other name its synchronous answer. 0 (resolve()
   * decides) for a tunnel's name and for whatever the fast reader leaves to the general parser.
   */
  answerNow(query: Uint8Array, out: Uint8Array): number {
    const next = this.o.next;
    if (next.answerNow === undefined || !readQueryQuestion(query, this.q)) return 0;
    if (this.q.qclass === DNS_CLASS_IN && this.o.tunnelOf(this.q.name) !== undefined) return 0;
    return next.answerNow(query, out);
  }

  /** The next answerer's addressNow, for names no tunnel takes (as answerNow). */
  addressNow(name: string): number | undefined {
    const next = this.o.next;
    if (next.addressNow === undefined || this.o.tunnelOf(name) !== undefined) return undefined;
    return next.addressNow(name);
  }

  resolve(query: Uint8Array, maxAnswerBytes?: number): Promise<DnsResolveResult> {
    const q = DnsMessage.parse(query);
    const name = q?.question !== undefined && q.question.qclass === DNS_CLASS_IN ? canonicalDomain(q.question.key) : undefined;
    const tunnel = name === undefined ? undefined : this.o.tunnelOf(name);
    const answerer = tunnel === undefined ? undefined : this.o.tunnels.get(tunnel);
    if (answerer === undefined) return this.o.next.resolve(query, maxAnswerBytes);
    this.stats.tunneled++;
    return answerer.resolve(query, maxAnswerBytes);
  }
}

/**
 * A tunnel with no DNS server tunroute can use: its names get SERVFAIL (asking anyone else
 * would send them outside the tunnel). `why` is logged once, at the first query.
 */
export class NoTunnelDnsAnswerer implements DnsAnswerer {
  private logged = false;

  constructor(
    private readonly why: string,
    private readonly log: Logger | undefined,
  ) {}

  resolve(query: Uint8Array): Promise<DnsResolveResult> {
    const q = DnsMessage.parse(query);
    if (q === undefined || q.isResponse || q.question === undefined) return Promise.resolve({ kind: 'drop', why: 'malformed' });
    if (!this.logged) {
      this.logged = true;
      this.log?.warn({ name: q.question.name }, this.why);
    }
    return Promise.resolve({ kind: 'answer', answer: errorResponse(q, DNS_RCODE_SERVFAIL), via: 'local' });
  }
}
