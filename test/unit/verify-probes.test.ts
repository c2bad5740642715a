/**
 * `tunroute verify`'s pieces without the OS: the instance's probe book (armed, claimed, expired,
 * read once), against queries as the DNS parser reads them.
 */
import { describe, expect, it } from 'vitest';
import { ProbeBook } from '../../src/relay/probes.js';
import { DnsMessage, buildDnsQuery } from '../../src/dns/message.js';

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
    expect(book.claimDns(DnsMessage.parse(buildDnsQuery('TR-Verify-AB.tunroute.example', 1, 7)))).toBe(true);
    expect(book.claimDns(DnsMessage.parse(buildDnsQuery('other.tunroute.example', 1, 8)))).toBe(false);
    expect(book.read()).toEqual({ armed: true, tcp: [40000], dns: 1 });
    expect(book.read()).toEqual({ armed: false, tcp: [], dns: 0 });
    expect(book.claimSyn(40000)).toBe(false);
    book.arm({ tcpSrcPorts: [40001], ttlMs: 5000 });
    clock.t += 5001;
    expect(book.claimSyn(40001)).toBe(false); // expired: a verify that died claims nothing
  });
});
