import { describe, expect, it } from 'vitest';
import {
  anyCidrToString,
  cidrRange,
  cidrsOverlap,
  cidrToString,
  ipToU32,
  isAnyCidr,
  normalizeIpv4Cidr,
  parseCidr,
  parseAnyCidr,
  parseCidrOrAddress,
  parseNetwork,
  u32ToIp,
} from '../../src/net/ipv4.js';
import { formatEndpoint, isHostName, parseEndpoint, parseIpv4Endpoint, parsePort } from '../../src/net/endpoint.js';

/** A small deterministic generator (xorshift32), so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

describe('net/ipv4: parse → format → parse', () => {
  it('addresses round-trip through their text', () => {
    const next = rng(7);
    for (let i = 0; i < 2000; i++) {
      const a = next();
      const text = u32ToIp(a);
      expect(ipToU32(text)).toBe(a);
      expect(u32ToIp(ipToU32(text)!)).toBe(text);
    }
  });

  it('CIDRs round-trip, host bits included', () => {
    const next = rng(11);
    for (let i = 0; i < 2000; i++) {
      const c = { addr: next(), prefix: next() % 33 };
      const text = cidrToString(c);
      expect(parseCidr(text)).toEqual(c);
      expect(cidrToString(parseCidr(text)!)).toBe(text);
    }
  });

  it('a bare address is a /32; parseNetwork clears host bits', () => {
    expect(parseCidrOrAddress('10.1.2.3')).toEqual({ addr: 0x0a010203, prefix: 32 });
    expect(parseCidrOrAddress('10.1.2.3/8')).toEqual({ addr: 0x0a010203, prefix: 8 });
    expect(parseNetwork('10.1.2.3/8')).toEqual({ addr: 0x0a000000, prefix: 8 });
    expect(parseCidrOrAddress('10.1.2')).toBeUndefined();
    expect(normalizeIpv4Cidr('10.8.0.1/16')).toBe('10.8.0.0/16');
    expect(normalizeIpv4Cidr('fd00::/8')).toBeUndefined();
    expect(isAnyCidr('fd00::/8')).toBe(true);
    expect(isAnyCidr('fd00::/129')).toBe(false);
  });

  it('either family, as wg-quick lists them: IPv4 parsed (host bits kept), IPv6 kept as text', () => {
    for (const s of ['10.8.0.2/16', '0.0.0.0/0', 'fd00:8::2/64', '::/0']) {
      const a = parseAnyCidr(s)!;
      expect(anyCidrToString(a)).toBe(s);
      expect(parseAnyCidr(anyCidrToString(a))).toEqual(a);
    }
    expect(parseAnyCidr('10.8.0.2')).toEqual({ family: 4, cidr: { addr: 0x0a080002, prefix: 32 } });
    expect(parseAnyCidr('10.8.0/16')).toBeUndefined();
  });

  it('ranges: a CIDR covers [network, network + 2^(32-n)); overlap is symmetric', () => {
    expect(cidrRange({ addr: 0x0a010203, prefix: 8 })).toEqual([0x0a000000, 0x0b000000]);
    expect(cidrRange({ addr: 0, prefix: 0 })).toEqual([0, 2 ** 32]);
    const a = parseCidr('10.0.0.0/8')!;
    const b = parseCidr('10.200.0.0/16')!;
    const c = parseCidr('11.0.0.0/8')!;
    expect(cidrsOverlap(a, b)).toBe(true);
    expect(cidrsOverlap(b, a)).toBe(true);
    expect(cidrsOverlap(a, c)).toBe(false);
  });
});

describe('net/endpoint: parse → format → parse', () => {
  const good = ['vpn.example.com:51820', '203.0.113.7:1', '[::1]:5', 'host-1.example.:65535', '10.0.0.1:53'];
  it.each(good)('%s round-trips', (s) => {
    const e = parseEndpoint(s)!;
    expect(e).toBeDefined();
    expect(formatEndpoint(e)).toBe(s);
    expect(parseEndpoint(formatEndpoint(e))).toEqual(e);
  });

  const bad = ['', 'host', 'host:', 'host:0', 'host:65536', '1.2.3:80', '999.1.1.1:80', '[nope]:80', 'a b:80', '-x.example:80', '::1:80'];
  it.each(bad)('%j is refused', (s) => {
    expect(parseEndpoint(s)).toBeUndefined();
  });

  it('IPv4 endpoints: a default port for a bare address, the address as uint32', () => {
    expect(parseIpv4Endpoint('1.1.1.1', 53)).toEqual({ host: '1.1.1.1', port: 53, kind: 'ipv4', addr: 0x01010101 });
    expect(parseIpv4Endpoint('9.9.9.9:5353', 53)).toEqual({ host: '9.9.9.9', port: 5353, kind: 'ipv4', addr: 0x09090909 });
    expect(parseIpv4Endpoint('1.1.1.1')).toBeUndefined();
    expect(parseIpv4Endpoint('0.0.0.0:0')).toBeUndefined();
    expect(parseIpv4Endpoint('dns.example:53')).toBeUndefined();
    const e = parseIpv4Endpoint('0.0.0.0:51820')!;
    expect(parseIpv4Endpoint(formatEndpoint(e))).toEqual(e);
  });

  it('ports and host names', () => {
    expect(parsePort('1')).toBe(1);
    expect(parsePort('65535')).toBe(65535);
    expect(parsePort('0')).toBeUndefined();
    expect(parsePort('080')).toBe(80);
    expect(parsePort('123456')).toBeUndefined();
    expect(isHostName('a.example')).toBe(true);
    expect(isHostName('1.2.3.4')).toBe(false);
    expect(isHostName('a'.repeat(64))).toBe(false);
    expect(isHostName('')).toBe(false);
  });
});
