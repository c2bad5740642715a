/**
 * Split DNS (`dns.servers`): names of some domains are asked of another resolver, through the
 * outbound that reaches it — the office's names of the office's resolver, through the office's
 * proxy — as dnsmasq's `--server=/corp.example/10.0.0.53` and systemd-resolved's routing
 * domains do. The most specific domain wins (net/domain-set.ts); a name no entry covers goes
 * to the fallback answerer.
 *
 * The question's name is read once here (a parse of the header and question); the chosen
 * answerer parses the query again, as it would anyway.
 */
import { canonicalDomain } from '../net/domain.js';
import { DomainSet, type DomainPattern } from '../net/domain-set.js';
import { DnsMessage, DNS_CLASS_IN } from './message.js';
import type { DnsAnswerer, DnsResolveResult } from './resolver.js';

export interface SplitDnsRoute {
  readonly patterns: readonly DomainPattern[];
  readonly answerer: DnsAnswerer;
}

export class SplitDnsAnswerer implements DnsAnswerer {
  private readonly set = new DomainSet<DnsAnswerer>();

  constructor(
    routes: readonly SplitDnsRoute[],
    private readonly fallback: DnsAnswerer,
  ) {
    for (const r of routes) for (const p of r.patterns) this.set.add(p, r.answerer);
  }

  /** The answerer for canonical `name`: its split-DNS server's, else the fallback. */
  answererFor(name: string): DnsAnswerer {
    return this.set.match(name)?.value ?? this.fallback;
  }

  resolve(query: Uint8Array, maxAnswerBytes?: number): Promise<DnsResolveResult> {
    if (this.set.size === 0) return this.fallback.resolve(query, maxAnswerBytes);
    const q = DnsMessage.parse(query);
    const name = q?.question !== undefined && q.question.qclass === DNS_CLASS_IN ? canonicalDomain(q.question.key) : undefined;
    return (name === undefined ? this.fallback : this.answererFor(name)).resolve(query, maxAnswerBytes);
  }
}
