import { describe, expect, it } from 'vitest';
import { Router } from '../../src/router/router.js';
import { IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';

const FAKE = ipToU32('198.18.0.9') ?? 0;

function router(): Router {
  return new Router({
    defaultOutbound: 'proxy',
    rules: [
      { domains: ['corp.example'], outbound: 'office' },
      { domains: ['=www.corp.example'], protocol: 'tcp', ports: [443], outbound: 'direct' },
      { domains: ['*.lab.corp.example'], outbound: 'lab' },
      { cidrs: ['10.0.0.0/8'], outbound: 'office' },
      { protocol: 'udp', ports: [[6881, 6889]], outbound: 'block' },
    ],
  });
}

describe('Router: rules by domain', () => {
  it('the most specific name wins, and its protocol and ports must match', () => {
    const r = router();
    expect(r.hasDomainRules).toBe(true);
    expect(r.routeName('corp.example', IP_PROTO_TCP, 80)).toBe('office');
    expect(r.routeName('mail.corp.example', IP_PROTO_TCP, 25)).toBe('office');
    expect(r.routeName('www.corp.example', IP_PROTO_TCP, 443)).toBe('direct');
    // The exact rule is for TCP 443 only: otherwise the suffix rule applies.
    expect(r.routeName('www.corp.example', IP_PROTO_TCP, 80)).toBe('office');
    expect(r.routeName('x.lab.corp.example', IP_PROTO_UDP, 53)).toBe('lab');
    expect(r.routeName('lab.corp.example', IP_PROTO_UDP, 53)).toBe('office');
  });

  it('a name no domain rule covers is left to its address', () => {
    const r = router();
    expect(r.routeName('elsewhere.test', IP_PROTO_TCP, 80)).toBeUndefined();
    // Routed by its fake address: only rules covering the fake range apply.
    expect(r.route(FAKE, IP_PROTO_UDP, 6881)).toBe('block');
    expect(r.route(FAKE, IP_PROTO_TCP, 80)).toBe('proxy');
  });

  it('domain rules never match an address', () => {
    const r = router();
    expect(r.route(ipToU32('10.1.2.3') ?? 0, IP_PROTO_TCP, 443)).toBe('office');
    expect(r.route(ipToU32('192.0.2.1') ?? 0, IP_PROTO_TCP, 443)).toBe('proxy');
  });

  it('explains the decision for a name, down to the address when no name rule fits', () => {
    const r = router();
    const d = r.whyName('www.corp.example', FAKE, IP_PROTO_TCP, 80);
    expect(d).toMatchObject({ outbound: 'office', ruleIndex: 0, domain: 'corp.example' });
    expect(d.reason).toMatch(/tcp to www\.corp\.example:80 goes to 'office' by rule 0 \(corp\.example → office\): corp\.example is the most specific matching name\. Not rule 1 \(=www\.corp\.example\): the port is not in its list\./);
    const other = r.whyName('elsewhere.test', FAKE, IP_PROTO_ICMP, 0);
    expect(other.outbound).toBe('proxy');
    expect(other.reason).toMatch(/no domain rule matches, so its address decides: icmp to 198\.18\.0\.9 goes to the default outbound 'proxy'/);
  });

  it('refuses a rule with both cidrs and domains, an empty list, or a bad pattern, in one sentence', () => {
    expect(() => new Router({ defaultOutbound: 'p', rules: [{ cidrs: ['10.0.0.0/8'], domains: ['a.example'], outbound: 'x' }] })).toThrow(
      /rules\[0\] names both cidrs and domains; split it into two rules/,
    );
    expect(() => new Router({ defaultOutbound: 'p', rules: [{ domains: [], outbound: 'x' }] })).toThrow(/rules\[0\]\.domains is empty/);
    expect(() => new Router({ defaultOutbound: 'p', rules: [{ domains: ['bad name'], outbound: 'x' }] })).toThrow(
      /rules\[0\]\.domains\[0\] is not a domain pattern \(bad character\)/,
    );
  });

  it('several rules about one pattern: the first whose protocol matches', () => {
    const r = new Router({
      defaultOutbound: 'p',
      rules: [
        { domains: ['a.example'], protocol: 'udp', outbound: 'u' },
        { domains: ['A.example.'], outbound: 't' },
      ],
    });
    expect(r.routeName('x.a.example', IP_PROTO_UDP, 1)).toBe('u');
    expect(r.routeName('x.a.example', IP_PROTO_TCP, 1)).toBe('t');
  });
});
