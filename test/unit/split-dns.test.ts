/**
 * Split DNS (dns.servers) and the fake-IP resolver's direct path: which answerer each query
 * reaches. The answerers are recorders: no sockets.
 */
import { describe, expect, it } from 'vitest';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpResolver } from '../../src/dns/fake-ip-resolver.js';
import { buildDnsQuery, DNS_TYPE_A, DNS_TYPE_MX, DNS_TYPE_AAAA } from '../../src/dns/message.js';
import type { DnsAnswerer, DnsResolveResult } from '../../src/dns/resolver.js';
import { SplitDnsAnswerer } from '../../src/dns/split-dns.js';
import { parseDomainPattern, type DomainPattern } from '../../src/net/domain-set.js';
import { parseCidr } from '../../src/net/ipv4.js';

class Recorder implements DnsAnswerer {
  asked = 0;
  constructor(readonly name: string) {}
  resolve(): Promise<DnsResolveResult> {
    this.asked++;
    return Promise.resolve({ kind: 'error', reason: 'timeout', message: this.name });
  }
}

const pat = (t: string): DomainPattern => {
  const p = parseDomainPattern(t);
  if (!p.ok) throw new Error(t);
  return p.pattern;
};
const via = async (a: DnsAnswerer, name: string, type = DNS_TYPE_A): Promise<string> => {
  const r = await a.resolve(buildDnsQuery(name, type, 7));
  return r.kind === 'error' ? r.message : r.kind;
};

describe('SplitDnsAnswerer', () => {
  const office = new Recorder('office');
  const lab = new Recorder('lab');
  const main = new Recorder('main');
  const split = new SplitDnsAnswerer(
    [
      { patterns: [pat('corp.test')], answerer: office },
      { patterns: [pat('lab.corp.test'), pat('=lab.example')], answerer: lab },
    ],
    main,
  );

  it('sends each name to the most specific domain server, the rest to the fallback', async () => {
    expect(await via(split, 'www.corp.test')).toBe('office');
    expect(await via(split, 'CORP.TEST.')).toBe('office');
    expect(await via(split, 'x.lab.corp.test', DNS_TYPE_MX)).toBe('lab');
    expect(await via(split, 'lab.example')).toBe('lab');
    expect(await via(split, 'www.lab.example')).toBe('main');
    expect(await via(split, 'other.test')).toBe('main');
  });

  it('a query it cannot read goes to the fallback (which counts it as malformed)', async () => {
    expect(await via(split, 'other.test')).toBe('main');
    const before = main.asked;
    await split.resolve(new Uint8Array([1, 2, 3]));
    expect(main.asked).toBe(before + 1);
  });
});

describe('FakeIpResolver with a direct answerer (split tunnel by domain)', () => {
  const upstream = new Recorder('upstream');
  const direct = new Recorder('direct');
  const pool = new FakeIpPool(parseCidr('198.18.0.0/24'), []);
  const r = new FakeIpResolver({ pool, tunneled: (n) => n.endsWith('corp.test'), upstream, direct });

  it('tunneled names: A is fake, AAAA empty, MX through the upstream; other names go to the direct answerer', async () => {
    expect(await via(r, 'www.corp.test')).toBe('answer');
    expect(await via(r, 'www.corp.test', DNS_TYPE_AAAA)).toBe('answer');
    expect(await via(r, 'www.corp.test', DNS_TYPE_MX)).toBe('upstream');
    expect(await via(r, 'other.test')).toBe('direct');
    expect(await via(r, 'other.test', DNS_TYPE_AAAA)).toBe('direct');
    expect(pool.nameOf(pool.lookup('www.corp.test')!)).toBe('www.corp.test');
    expect(r.stats).toMatchObject({ fake: 1, empty: 1, forwarded: 1, direct: 2 });
  });
});
