/**
 * A small DNS answer cache for the hijack resolver (RFC 1035 §7.4, RFC 2308 for negative
 * answers), keyed by (qname lower-cased, qtype, qclass).
 *
 *   - An answer lives for its smallest record TTL (`DnsMessage.minTtl`: the answer records, or
 *     the SOA for NXDOMAIN/NODATA), capped by `maxTtlSec` so that a moved name is picked up.
 *     TTL 0 answers, truncated answers, records that do not parse, and RCODEs other than
 *     NOERROR and NXDOMAIN are not cached (SERVFAIL is a statement about now, not the name).
 *   - A hit is served with the query's ID, the query's question bytes (same name, maybe other
 *     letter case: 0x20 randomisation) and every TTL lowered by the time it was held.
 *   - Bounded: an lru-cache of `maxEntries`; expiry on the injected clock, checked on lookup
 *     (no timers).
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';
import { DNS_HEADER_LEN, DNS_RCODE_NOERROR, DNS_RCODE_NXDOMAIN, DnsMessage, agedCopy, setDnsId } from './message.js';

export const DNS_CACHE_DEFAULTS = {
  maxEntries: 1024,
  /** An hour: long enough to matter, short enough that a changed record is seen. */
  maxTtlSec: 3600,
} as const;

export interface DnsCacheOptions {
  clock: Clock;
  maxEntries?: number;
  maxTtlSec?: number;
}

export interface DnsCacheStats {
  hits: number;
  misses: number;
  stored: number;
  /** Answers not stored (TTL 0, truncated, SERVFAIL…). */
  uncacheable: number;
}

interface Entry {
  readonly answer: DnsMessage;
  readonly storedAt: number;
}

/** The cache key of a question. */
export function dnsCacheKey(msg: DnsMessage): string | undefined {
  const q = msg.question;
  return q === undefined ? undefined : `${q.key}|${q.qtype}|${q.qclass}`;
}

export class DnsCache {
  readonly maxTtlSec: number;
  private readonly clock: Clock;
  private readonly lru: LRUCache<string, Entry>;
  readonly stats: DnsCacheStats = { hits: 0, misses: 0, stored: 0, uncacheable: 0 };

  constructor(opts: DnsCacheOptions) {
    this.clock = opts.clock;
    this.maxTtlSec = opts.maxTtlSec ?? DNS_CACHE_DEFAULTS.maxTtlSec;
    const clock = this.clock;
    this.lru = new LRUCache<string, Entry>({
      max: opts.maxEntries ?? DNS_CACHE_DEFAULTS.maxEntries,
      ttlAutopurge: false,
      ttlResolution: 0,
      // lru-cache reads a start time of 0 as "no TTL": keep the clock off 0.
      perf: { now: () => clock.now() + 1 },
    });
  }

  get size(): number {
    return this.lru.size;
  }

  /** The cached answer to `query`, ready to send (ID, question and TTLs adjusted), or undefined. */
  get(query: DnsMessage): Uint8Array | undefined {
    const key = dnsCacheKey(query);
    const e = key === undefined ? undefined : this.lru.get(key);
    if (e === undefined) {
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    const ageSec = Math.floor((this.clock.now() - e.storedAt) / 1000);
    const out = agedCopy(e.answer, ageSec);
    setDnsId(out, query.id);
    // The question as this client wrote it (same length: same name up to letter case).
    const qLen = query.questionEnd - DNS_HEADER_LEN;
    if (e.answer.questionEnd - DNS_HEADER_LEN === qLen) out.set(query.bytes.subarray(DNS_HEADER_LEN, query.questionEnd), DNS_HEADER_LEN);
    return out;
  }

  /** Remember `answer` (a response to `query`) when it may be cached; returns whether it was. */
  put(query: DnsMessage, answer: DnsMessage): boolean {
    const key = dnsCacheKey(query);
    const rcode = answer.rcode;
    const ttl = answer.minTtl();
    if (
      key === undefined ||
      !answer.isResponse ||
      answer.truncated ||
      (rcode !== DNS_RCODE_NOERROR && rcode !== DNS_RCODE_NXDOMAIN) ||
      !answer.sameQuestion(query) ||
      ttl === undefined ||
      ttl <= 0
    ) {
      this.stats.uncacheable++;
      return false;
    }
    const ttlMs = Math.min(ttl, this.maxTtlSec) * 1000;
    // Keep our own copy: the caller's buffer may be reused.
    const own = DnsMessage.parse(new Uint8Array(answer.bytes));
    if (own === undefined) return false;
    this.lru.set(key, { answer: own, storedAt: this.clock.now() }, { ttl: ttlMs });
    this.stats.stored++;
    return true;
  }

  clear(): void {
    this.lru.clear();
  }
}
