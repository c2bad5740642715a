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
