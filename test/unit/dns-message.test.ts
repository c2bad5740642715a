import { describe, expect, it } from 'vitest';
import {
  DNS_CLASS_IN,
  DNS_RCODE_NXDOMAIN,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_OPT,
  DNS_TYPE_SOA,
  DnsMessage,
  agedCopy,
  answerFlags,
  buildDnsQuery,
  emitDnsMessage,
  errorResponse,
  readDnsName,
  truncatedResponse,
  withDnsId,
} from '../../src/dns/message.js';
import { mulberry32 } from '../helpers/random.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/**
 * A real answer (dig example.com A, trimmed): ID 0x1a2b, QR RD RA, one question, two A records
 * whose names are compression pointers to the question (c0 0c), TTLs 300 and 120, plus an OPT
 * record (payload 1232).
 */
const ANSWER = hex(`
  1a2b 8180 0001 0002 0000 0001
  07 6578616d706c65 03 636f6d 00 0001 0001
  c00c 0001 0001 0000012c 0004 5db8d822
  c00c 0001 0001 00000078 0004 5db8d823
  00 0029 04d0 00000000 0000
`);

describe('DnsMessage.parse: a real answer', () => {
  it('reads the header, the question and every record with its TTL offset', () => {
    const m = DnsMessage.parse(ANSWER)!;
    expect(m).toBeDefined();
    expect(m.id).toBe(0x1a2b);
    expect(m.isResponse).toBe(true);
    expect(m.truncated).toBe(false);
    expect(m.recursionDesired).toBe(true);
    expect(m.rcode).toBe(0);
    expect([m.qdcount, m.ancount, m.nscount, m.arcount]).toEqual([1, 2, 0, 1]);
    expect(m.question).toEqual({ name: 'example.com.', key: 'example.com.', qtype: DNS_TYPE_A, qclass: DNS_CLASS_IN });
    expect(m.questionEnd).toBe(12 + 13 + 4);
    expect(m.records!.map((r) => [r.section, r.type, r.ttl])).toEqual([
      ['answer', DNS_TYPE_A, 300],
      ['answer', DNS_TYPE_A, 120],
      ['additional', DNS_TYPE_OPT, 0],
    ]);
    expect([...ANSWER.subarray(m.records![0].rdataOffset, m.records![0].rdataOffset + 4)]).toEqual([93, 184, 216, 34]);
    expect(m.minTtl()).toBe(120); // OPT's "TTL" is flags, not a TTL
    expect(m.udpPayloadSize).toBe(1232);
  });

  it('sees the TC bit', () => {
    const t = Uint8Array.from(ANSWER);
    t[2] |= 0x02;
    expect(DnsMessage.parse(t)!.truncated).toBe(true);
  });

  it('lower-cases the key but keeps the name as written', () => {
    const q = DnsMessage.parse(buildDnsQuery('WwW.ExAmPle.COM', DNS_TYPE_AAAA, 7))!;
    expect(q.question).toEqual({ name: 'WwW.ExAmPle.COM.', key: 'www.example.com.', qtype: DNS_TYPE_AAAA, qclass: 1 });
    expect(q.udpPayloadSize).toBe(512);
    expect(q.isResponse).toBe(false);
  });
});

describe('DnsMessage.parse: malformed input never throws', () => {
  it('refuses short headers, more than one question, and broken questions', () => {
    expect(DnsMessage.parse(new Uint8Array(0))).toBeUndefined();
    expect(DnsMessage.parse(new Uint8Array(11))).toBeUndefined();
    const two = Uint8Array.from(ANSWER);
    two[5] = 2;
    expect(DnsMessage.parse(two)).toBeUndefined();
    expect(DnsMessage.parse(ANSWER.subarray(0, 20))).toBeUndefined(); // name cut
    expect(DnsMessage.parse(ANSWER.subarray(0, 27))).toBeUndefined(); // qtype/qclass cut
  });

  it('keeps the question but gives no records when the record sections are cut (a truncated UDP answer)', () => {
    const m = DnsMessage.parse(ANSWER.subarray(0, 40))!;
    expect(m.question?.name).toBe('example.com.');
    expect(m.records).toBeUndefined();
    expect(m.minTtl()).toBeUndefined();
  });

  it('refuses pointer loops, forward pointers, reserved label types, long labels and long names', () => {
    const header = '0001 0100 0001 0000 0000 0000';
    expect(DnsMessage.parse(hex(`${header} c00c 0001 0001`))).toBeUndefined(); // points at itself
    expect(DnsMessage.parse(hex(`${header} c010 0001 0001 00`))).toBeUndefined(); // forward
    expect(DnsMessage.parse(hex(`${header} 41 61 00 0001 0001`))).toBeUndefined(); // 01 label type
    expect(DnsMessage.parse(hex(`${header} 80 61 00 0001 0001`))).toBeUndefined(); // 10 label type
    expect(DnsMessage.parse(hex(`${header} 40 ${'61'.repeat(64)} 00 0001 0001`))).toBeUndefined(); // 64-byte label
    const longName = `${'3f' + '61'.repeat(63)}`.repeat(4); // 256 bytes of labels
    expect(DnsMessage.parse(hex(`${header} ${longName} 00 0001 0001`))).toBeUndefined();
    // Two pointers that point at each other, through a backwards chain: refused, no hang.
    expect(readDnsName(hex('c002 c000'), 2)).toBeUndefined();
  });

  it('survives random bytes and every truncation and bit flip of a valid answer', () => {
    const rnd = mulberry32(42);
    for (let n = 0; n < 20_000; n++) {
      const len = Math.floor(rnd() * 80);
      const b = new Uint8Array(len);
      for (let i = 0; i < len; i++) b[i] = Math.floor(rnd() * 256);
      if (rnd() < 0.5 && len >= 12) b[5] = 1; // make a question likely
      const m = DnsMessage.parse(b);
      if (m !== undefined) {
        m.minTtl();
        void m.udpPayloadSize;
      }
    }
    for (let cut = 0; cut <= ANSWER.length; cut++) DnsMessage.parse(ANSWER.subarray(0, cut))?.minTtl();
    for (let bit = 0; bit < ANSWER.length * 8; bit++) {
      const b = Uint8Array.from(ANSWER);
      b[bit >> 3] ^= 1 << (bit & 7);
      DnsMessage.parse(b)?.minTtl();
    }
  });
});

describe('emit and the made-up responses', () => {
  it('round-trips a message through emit and parse', () => {
    const bytes = emitDnsMessage({
      id: 99,
      flags: answerFlags(DNS_RCODE_NXDOMAIN),
      question: { name: 'nope.test', qtype: DNS_TYPE_A },
      authority: [{ name: 'test', type: DNS_TYPE_SOA, ttl: 900, data: new Uint8Array(22) }],
    });
    const m = DnsMessage.parse(bytes)!;
    expect(m.id).toBe(99);
    expect(m.rcode).toBe(DNS_RCODE_NXDOMAIN);
    expect(m.question?.name).toBe('nope.test.');
    expect(m.minTtl()).toBe(900); // negative answer: from the SOA
  });

  it('treats a TTL with the top bit set as 0 (RFC 2181 §8)', () => {
    const bytes = emitDnsMessage({ id: 1, flags: answerFlags(), question: { name: 'a', qtype: 1 }, answers: [{ name: 'a', type: 1, ttl: 0x80000001, data: new Uint8Array(4) }] });
    expect(DnsMessage.parse(bytes)!.minTtl()).toBe(0);
  });

  it('builds a TC=1 response and an error response that echo the question', () => {
    const q = DnsMessage.parse(buildDnsQuery('Big.Example', DNS_TYPE_A, 0x4242, 1232))!;
    const tc = DnsMessage.parse(truncatedResponse(q))!;
    expect([tc.id, tc.isResponse, tc.truncated, tc.ancount, tc.arcount]).toEqual([0x4242, true, true, 0, 0]);
    expect(tc.question?.name).toBe('Big.Example.');
    const sf = DnsMessage.parse(errorResponse(q, DNS_RCODE_SERVFAIL))!;
    expect([sf.id, sf.rcode, sf.isResponse, sf.recursionDesired]).toEqual([0x4242, DNS_RCODE_SERVFAIL, true, true]);
  });

  it('ages TTLs in a copy and rewrites the ID in a copy', () => {
    const m = DnsMessage.parse(ANSWER)!;
    const aged = DnsMessage.parse(agedCopy(m, 100))!;
    expect(aged.records!.map((r) => r.ttl)).toEqual([200, 20, 0]);
    expect(DnsMessage.parse(agedCopy(m, 1000))!.records!.map((r) => r.ttl)).toEqual([0, 0, 0]);
    expect(m.records![0].ttl).toBe(300); // the original is untouched
    const other = withDnsId(ANSWER, 7);
    expect(DnsMessage.parse(other)!.id).toBe(7);
    expect(DnsMessage.parse(ANSWER)!.id).toBe(0x1a2b);
  });
});
