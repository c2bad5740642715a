import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { DnsCache } from '../../src/dns/cache.js';
import {
  DNS_RCODE_NXDOMAIN,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_SOA,
  DnsMessage,
  answerFlags,
  buildDnsQuery,
  emitDnsMessage,
} from '../../src/dns/message.js';

function query(name: string, id = 1, qtype = DNS_TYPE_A): DnsMessage {
  return DnsMessage.parse(buildDnsQuery(name, qtype, id))!;
}

function answer(name: string, ttls: number[], opts: { id?: number; rcode?: number; truncated?: boolean; qtype?: number } = {}): DnsMessage {
  return DnsMessage.parse(
    emitDnsMessage({
      id: opts.id ?? 1,
      flags: answerFlags(opts.rcode ?? 0, opts.truncated ?? false),
      question: { name, qtype: opts.qtype ?? DNS_TYPE_A },
      answers: ttls.map((ttl, i) => ({ name, type: opts.qtype ?? DNS_TYPE_A, ttl, data: Uint8Array.of(192, 0, 2, i + 1) })),
    }),
  )!;
}

function setup(opts: { maxEntries?: number; maxTtlSec?: number } = {}) {
  const clock = new ManualClock(0);
  const cache = new DnsCache({ clock, ...opts });
  return { clock, cache };
}

describe('DnsCache: TTLs', () => {
  it('serves an answer for the smallest TTL of its records, then forgets it', () => {
    const { clock, cache } = setup();
    expect(cache.put(query('a.test'), answer('a.test', [300, 60]))).toBe(true);
    clock.advance(60_000);
    expect(cache.get(query('a.test'))).toBeDefined();
    clock.advance(1);
    expect(cache.get(query('a.test'))).toBeUndefined();
    expect(cache.stats).toMatchObject({ hits: 1, misses: 1, stored: 1 });
  });

  it('lowers the TTLs by the time held, and caps what it keeps at maxTtlSec', () => {
    const { clock, cache } = setup({ maxTtlSec: 100 });
    cache.put(query('a.test'), answer('a.test', [3600, 500]));
    clock.advance(30_500);
    const hit = DnsMessage.parse(cache.get(query('a.test'))!)!;
    expect(hit.records!.map((r) => r.ttl)).toEqual([3570, 470]);
    clock.advance(70_000); // 100.5 s: beyond the cap, although the records said 500
    expect(cache.get(query('a.test'))).toBeUndefined();
  });

  it('caches NXDOMAIN for the SOA TTL (RFC 2308)', () => {
    const { clock, cache } = setup();
    const nx = DnsMessage.parse(
      emitDnsMessage({
        id: 1,
        flags: answerFlags(DNS_RCODE_NXDOMAIN),
        question: { name: 'nope.test', qtype: DNS_TYPE_A },
        authority: [{ name: 'test', type: DNS_TYPE_SOA, ttl: 30, data: new Uint8Array(22) }],
      }),
    )!;
    expect(cache.put(query('nope.test'), nx)).toBe(true);
    clock.advance(29_000);
    expect(DnsMessage.parse(cache.get(query('nope.test'))!)!.rcode).toBe(DNS_RCODE_NXDOMAIN);
    clock.advance(1_001);
    expect(cache.get(query('nope.test'))).toBeUndefined();
  });

  it('does not cache TTL 0, truncated answers, SERVFAIL, answers without records, or another question', () => {
    const { cache } = setup();
    expect(cache.put(query('a.test'), answer('a.test', [0]))).toBe(false);
    expect(cache.put(query('a.test'), answer('a.test', [300], { truncated: true }))).toBe(false);
    expect(cache.put(query('a.test'), answer('a.test', [300], { rcode: DNS_RCODE_SERVFAIL }))).toBe(false);
    expect(cache.put(query('a.test'), answer('a.test', []))).toBe(false);
    expect(cache.put(query('a.test'), answer('b.test', [300]))).toBe(false);
    expect(cache.size).toBe(0);
    expect(cache.stats.uncacheable).toBe(5);
  });
});

describe('DnsCache: keys and rewriting', () => {
  it('is keyed by name (case-insensitively), type and class', () => {
    const { cache } = setup();
    cache.put(query('Mixed.Test'), answer('Mixed.Test', [300]));
    expect(cache.get(query('mixed.test'))).toBeDefined();
    expect(cache.get(query('MIXED.TEST'))).toBeDefined();
    expect(cache.get(query('mixed.test', 1, DNS_TYPE_AAAA))).toBeUndefined();
    expect(cache.get(query('other.test'))).toBeUndefined();
  });

  it("answers with the query's ID and the query's own spelling of the name", () => {
    const { cache } = setup();
    cache.put(query('example.test', 0x1111), answer('example.test', [300], { id: 0x1111 }));
    const hit = DnsMessage.parse(cache.get(query('ExAmPlE.TeSt', 0xbeef))!)!;
    expect(hit.id).toBe(0xbeef);
    expect(hit.question?.name).toBe('ExAmPlE.TeSt.');
    expect(hit.ancount).toBe(1);
  });

  it('keeps its own copy of the answer', () => {
    const { cache } = setup();
    const a = answer('copy.test', [300]);
    cache.put(query('copy.test'), a);
    a.bytes.fill(0);
    expect(DnsMessage.parse(cache.get(query('copy.test'))!)!.ancount).toBe(1);
  });

  it('holds at most maxEntries answers', () => {
    const { cache } = setup({ maxEntries: 10 });
    for (let i = 0; i < 100; i++) cache.put(query(`n${i}.test`), answer(`n${i}.test`, [300]));
    expect(cache.size).toBe(10);
    expect(cache.get(query('n99.test'))).toBeDefined();
    expect(cache.get(query('n0.test'))).toBeUndefined();
  });
});
