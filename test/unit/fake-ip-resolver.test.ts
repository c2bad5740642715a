import { describe, expect, it } from 'vitest';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpResolver } from '../../src/dns/fake-ip-resolver.js';
import {
  DnsMessage,
  addressAnswer,
  buildDnsQuery,
  emitDnsMessage,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_HTTPS,
  DNS_TYPE_MX,
} from '../../src/dns/message.js';
import type { DnsAnswerer, DnsResolveResult } from '../../src/dns/resolver.js';
import { DomainSet, parseDomainPattern } from '../../src/net/domain-set.js';
import { u32ToIp } from '../../src/net/ipv4.js';

/** The A addresses of an answer, as text. */
function addresses(answer: Uint8Array): string[] {
  const m = DnsMessage.parse(answer);
  if (m?.records === undefined) throw new Error('unparsable answer');
  return m.records.filter((r) => r.type === DNS_TYPE_A).map((r) => u32ToIp(Buffer.from(answer.subarray(r.rdataOffset, r.rdataOffset + 4)).readUInt32BE(0)));
}

function answerOf(r: DnsResolveResult): Uint8Array {
  if (r.kind !== 'answer') throw new Error(`expected an answer, got ${r.kind}`);
  return r.answer;
}

class RecordingUpstream implements DnsAnswerer {
  readonly asked: Uint8Array[] = [];
  resolve(query: Uint8Array): Promise<DnsResolveResult> {
    this.asked.push(query);
    return Promise.resolve({ kind: 'error', reason: 'timeout', message: 'test upstream' });
  }
}

function corpOnly(): (name: string) => boolean {
  const set = new DomainSet<true>();
  const p = parseDomainPattern('corp.test');
  if (!p.ok) throw new Error('pattern');
  set.add(p.pattern, true);
  return (n) => set.has(n);
}

describe('addressAnswer (wire form)', () => {
  it('answers the question as asked, with pointer-named A records that parse back', () => {
    const q = DnsMessage.parse(buildDnsQuery('WWW.Corp.Test', DNS_TYPE_A, 0x1234, 1232));
    if (q === undefined) throw new Error('query');
    const bytes = addressAnswer(q, [0xc6120001, 0xc6120002], 7);
    const a = DnsMessage.parse(bytes);
    expect(a?.id).toBe(0x1234);
    expect(a?.isResponse).toBe(true);
    expect(a?.rcode).toBe(0);
    expect(a?.recursionDesired).toBe(true);
    expect(a?.question?.name).toBe('WWW.Corp.Test.');
    expect(a?.records?.map((r) => [r.type, r.ttl, r.rdataLength])).toEqual([
      [DNS_TYPE_A, 7, 4],
      [DNS_TYPE_A, 7, 4],
    ]);
    expect(addresses(bytes)).toEqual(['198.18.0.1', '198.18.0.2']);
    // Same bytes as the general emitter writes, but for the name pointer.
    const long = emitDnsMessage({ id: 0x1234, flags: a?.flags ?? 0, question: { name: 'WWW.Corp.Test', qtype: DNS_TYPE_A }, answers: [] });
    expect(Buffer.from(bytes.subarray(0, long.length)).subarray(12)).toEqual(Buffer.from(long).subarray(12));
  });

  it('with no addresses it is NODATA', () => {
    const q = DnsMessage.parse(buildDnsQuery('x.test', DNS_TYPE_AAAA, 9));
    if (q === undefined) throw new Error('query');
    const a = DnsMessage.parse(addressAnswer(q, [], 1));
    expect(a?.rcode).toBe(0);
    expect(a?.ancount).toBe(0);
  });
});

describe('FakeIpResolver', () => {
  it('answers A for a tunneled name at once with a pool address, the same one each time', async () => {
    const pool = new FakeIpPool();
    const up = new RecordingUpstream();
    const r = new FakeIpResolver({ pool, tunneled: () => true, upstream: up });
    const first = answerOf(await r.resolve(buildDnsQuery('www.site.test', DNS_TYPE_A, 1)));
    const again = answerOf(await r.resolve(buildDnsQuery('WWW.SITE.TEST.', DNS_TYPE_A, 2)));
    expect(addresses(first)).toEqual(['198.18.0.1']);
    expect(addresses(again)).toEqual(['198.18.0.1']);
    expect(DnsMessage.parse(again)?.id).toBe(2);
    expect(DnsMessage.parse(first)?.records?.[0]?.ttl).toBe(1);
    expect(pool.nameOf(0xc6120001)).toBe('www.site.test');
    expect(up.asked).toHaveLength(0);
    expect(r.stats).toMatchObject({ fake: 2, forwarded: 0 });
  });

  it('gives no IPv6 and no address hints for a tunneled name', async () => {
    const r = new FakeIpResolver({ pool: new FakeIpPool(), tunneled: () => true, upstream: new RecordingUpstream() });
    for (const t of [DNS_TYPE_AAAA, DNS_TYPE_HTTPS]) {
      const a = DnsMessage.parse(answerOf(await r.resolve(buildDnsQuery('www.site.test', t, 3))));
      expect(a?.rcode).toBe(0);
      expect(a?.ancount).toBe(0);
    }
    expect(r.stats.empty).toBe(2);
  });

  it('passes other types, and names outside the tunnel, to the upstream', async () => {
    const up = new RecordingUpstream();
    const pool = new FakeIpPool();
    const r = new FakeIpResolver({ pool, tunneled: corpOnly(), upstream: up });
    await r.resolve(buildDnsQuery('corp.test', DNS_TYPE_MX, 4));
    await r.resolve(buildDnsQuery('other.test', DNS_TYPE_A, 5));
    await r.resolve(buildDnsQuery('other.test', DNS_TYPE_AAAA, 6));
    expect(up.asked.map((q) => DnsMessage.parse(q)?.id)).toEqual([4, 5, 6]);
    expect(addresses(answerOf(await r.resolve(buildDnsQuery('a.corp.test', DNS_TYPE_A, 7))))).toEqual(['198.18.0.1']);
    expect(pool.stats.entries).toBe(1);
  });

  it('answers SERVFAIL when every pool address is busy, and for the rest without an upstream', async () => {
    const pool = new FakeIpPool('10.200.0.0/30');
    const r = new FakeIpResolver({ pool, tunneled: () => true, upstream: undefined });
    for (const n of ['a.test', 'b.test']) {
      const ip = pool.lookup(n);
      if (ip !== undefined) pool.pin(ip);
    }
    const full = DnsMessage.parse(answerOf(await r.resolve(buildDnsQuery('c.test', DNS_TYPE_A, 8))));
    expect(full?.rcode).toBe(DNS_RCODE_SERVFAIL);
    expect(r.stats.exhausted).toBe(1);
    const mx = DnsMessage.parse(answerOf(await r.resolve(buildDnsQuery('c.test', DNS_TYPE_MX, 9))));
    expect(mx?.rcode).toBe(DNS_RCODE_SERVFAIL);
  });

  it('drops what is not a query', async () => {
    const r = new FakeIpResolver({ pool: new FakeIpPool(), tunneled: () => true, upstream: undefined });
    expect((await r.resolve(Uint8Array.of(1, 2, 3))).kind).toBe('drop');
    const q = DnsMessage.parse(buildDnsQuery('x.test', DNS_TYPE_A, 1));
    if (q === undefined) throw new Error('query');
    expect((await r.resolve(addressAnswer(q, [1], 1))).kind).toBe('drop');
    expect(r.stats.malformed).toBe(2);
  });
});

describe('FakeIpResolver.answerNow (the fast path)', () => {
  it('gives the bytes resolve() gives, for A and AAAA of a tunneled name, and counts them once', async () => {
    const mk = (): FakeIpResolver => new FakeIpResolver({ pool: new FakeIpPool(), tunneled: corpOnly(), upstream: new RecordingUpstream() });
    const fast = mk();
    const slow = mk();
    const out = new Uint8Array(512);
    for (const [name, type, id] of [
      ['www.corp.test', DNS_TYPE_A, 1],
      ['WWW.Corp.Test', DNS_TYPE_A, 2],
      ['mail.corp.test', DNS_TYPE_A, 3],
      ['www.corp.test', DNS_TYPE_AAAA, 4],
      ['www.corp.test', DNS_TYPE_HTTPS, 5],
    ] as const) {
      const q = buildDnsQuery(name, type, id, id % 2 === 0 ? 1232 : undefined);
      const n = fast.answerNow(q, out);
      expect(n).toBeGreaterThan(0);
      expect(out.subarray(0, n)).toEqual(answerOf(await slow.resolve(q)));
    }
    expect(fast.stats).toEqual(slow.stats);
    expect(fast.stats.fake).toBe(3);
    expect(fast.stats.empty).toBe(2);
  });

  it('leaves other types, names that are not tunneled and odd queries to resolve()', () => {
    const upstream = new RecordingUpstream();
    const r = new FakeIpResolver({ pool: new FakeIpPool(), tunneled: corpOnly(), upstream });
    const out = new Uint8Array(512);
    expect(r.answerNow(buildDnsQuery('www.corp.test', DNS_TYPE_MX, 1), out)).toBe(0);
    expect(r.answerNow(buildDnsQuery('www.other.test', DNS_TYPE_A, 2), out)).toBe(0);
    expect(r.answerNow(new Uint8Array(5), out)).toBe(0);
    expect(r.stats).toEqual({ fake: 0, empty: 0, forwarded: 0, direct: 0, exhausted: 0, malformed: 0 });
    expect(upstream.asked).toHaveLength(0);
  });

  it('answers SERVFAIL when every address is busy, as resolve() does', () => {
    const pool = new FakeIpPool('10.0.0.0/30');
    const r = new FakeIpResolver({ pool, tunneled: corpOnly(), upstream: undefined });
    const out = new Uint8Array(512);
    for (const [i, name] of ['a.corp.test', 'b.corp.test'].entries()) {
      expect(r.answerNow(buildDnsQuery(name, DNS_TYPE_A, i), out)).toBeGreaterThan(0);
      const ip = pool.peek(name);
      if (ip === undefined) throw new Error('no address');
      pool.pin(ip);
    }
    const n = r.answerNow(buildDnsQuery('c.corp.test', DNS_TYPE_A, 9), out);
    expect(DnsMessage.parse(out.subarray(0, n))?.rcode).toBe(DNS_RCODE_SERVFAIL);
    expect(r.stats.exhausted).toBe(1);
  });
});

describe('FakeIpResolver.addressNow (the link\'s answers, native/fake_dns.c)', () => {
  it('gives the address answerNow would give, counted once; undefined for a name that goes direct', () => {
    const pool = new FakeIpPool();
    const r = new FakeIpResolver({ pool, tunneled: corpOnly(), upstream: new RecordingUpstream() });
    const ip = r.addressNow('www.corp.test');
    expect(ip).toBe(pool.peek('www.corp.test'));
    const out = new Uint8Array(512);
    const n = r.answerNow(buildDnsQuery('www.corp.test', DNS_TYPE_A, 1), out);
    expect(addresses(out.subarray(0, n))).toEqual([u32ToIp(ip ?? 0)]);
    expect(r.addressNow('www.other.test')).toBeUndefined();
    expect(r.stats.fake).toBe(2);
  });

  it('is undefined when every address is busy: the stack then answers SERVFAIL and logs it', () => {
    const pool = new FakeIpPool('10.0.0.0/30');
    const r = new FakeIpResolver({ pool, tunneled: corpOnly(), upstream: undefined });
    for (const name of ['a.corp.test', 'b.corp.test']) pool.pin(r.addressNow(name) ?? 0);
    expect(r.addressNow('c.corp.test')).toBeUndefined();
    expect(r.stats).toMatchObject({ fake: 2, exhausted: 0 });
  });
});
