/**
 * `tunroute verify`'s pieces without the OS: the instance's probe book (armed, claimed, expired,
 * read once), the resolv.conf reading, and the probe query as the DNS parser reads it.
 */
import { describe, expect, it } from 'vitest';
import { ProbeBook } from '../../src/relay/probes.js';
import { DnsMessage } from '../../src/dns/message.js';
import { nameserversOf, queryBytes } from '../../src/verify.js';

class FakeClock {
  t = 1000;
  now(): number {
    return this.t;
  }
}

describe('ProbeBook', () => {
  it('claims only armed source ports and the probe name, until read or expired', () => {
    const clock = new FakeClock();
    const book = new ProbeBook(clock);
    expect(book.claimSyn(40000)).toBe(false); // unarmed: nothing is a probe
    expect(book.dnsArmed).toBe(false);
    book.arm({ tcpSrcPorts: [40000, 40001], dnsName: 'tr-verify-ab.tunroute.example', ttlMs: 5000 });
    expect(book.claimSyn(40000)).toBe(true);
    expect(book.claimSyn(40002)).toBe(false);
    expect(book.dnsArmed).toBe(true);
    expect(book.claimDns(DnsMessage.parse(queryBytes('TR-Verify-AB.tunroute.example', 7)))).toBe(true);
    expect(book.claimDns(DnsMessage.parse(queryBytes('other.tunroute.example', 8)))).toBe(false);
    expect(book.read()).toEqual({ armed: true, tcp: [40000], dns: 1 });
    expect(book.read()).toEqual({ armed: false, tcp: [], dns: 0 });
    expect(book.claimSyn(40000)).toBe(false);
    book.arm({ tcpSrcPorts: [40001], ttlMs: 5000 });
    clock.t += 5001;
    expect(book.claimSyn(40001)).toBe(false); // expired: a verify that died claims nothing
  });
});

describe('verify helpers', () => {
  it('reads up to three IPv4 nameservers from resolv.conf', () => {
    expect(nameserversOf('# x\nnameserver 10.0.0.53\nnameserver ::1\nsearch lan\nnameserver 10.0.0.54 # two\nnameserver 10.0.0.53\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n')).toEqual([
      '10.0.0.53',
      '10.0.0.54',
      '1.1.1.1',
    ]);
  });
  it('builds a query the parser reads back', () => {
    const q = DnsMessage.parse(queryBytes('a.b.example', 0x1234));
    expect(q?.id).toBe(0x1234);
    expect(q?.question).toMatchObject({ key: 'a.b.example.', qtype: 1, qclass: 1 });
  });
});
