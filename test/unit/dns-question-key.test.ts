import { describe, expect, it } from 'vitest';
import { QueryQuestion, readQueryQuestion } from '../../src/dns/question-key.js';
import { DnsMessage, buildDnsQuery, emitDnsMessage, DNS_TYPE_A, DNS_TYPE_AAAA } from '../../src/dns/message.js';
import { canonicalDomain } from '../../src/net/domain.js';

/** A query whose name is given as raw labels (any bytes). */
function rawQuery(labels: readonly Uint8Array[], qtype = DNS_TYPE_A, flags = 0x0100): Uint8Array {
  const parts: number[] = [0x12, 0x34, flags >>> 8, flags & 0xff, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const l of labels) parts.push(l.length, ...l);
  parts.push(0, qtype >>> 8, qtype & 0xff, 0, 1);
  return Uint8Array.from(parts);
}

const ascii = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'latin1'));

/** What the general path makes of a query: the canonical name, type and end of the question. */
function general(b: Uint8Array): { name: string; qtype: number; qclass: number; end: number } | undefined {
  const m = DnsMessage.parse(b);
  if (m?.question === undefined || m.isResponse || m.opcode !== 0) return undefined;
  const name = canonicalDomain(m.question.key);
  return name === undefined ? undefined : { name, qtype: m.question.qtype, qclass: m.question.qclass, end: m.questionEnd };
}

describe('readQueryQuestion (the fast path of fake-IP answers)', () => {
  it('reads the canonical name, type, class and the end of the question', () => {
    const q = new QueryQuestion();
    const b = buildDnsQuery('WWW.Example.COM', DNS_TYPE_AAAA, 7, 1232);
    expect(readQueryQuestion(b, q)).toBe(true);
    expect(q.name).toBe('www.example.com');
    expect(q.qtype).toBe(DNS_TYPE_AAAA);
    expect(q.qclass).toBe(1);
    expect(q.end).toBe(DnsMessage.parse(b)?.questionEnd);
  });

  it('never accepts what the general path refuses, and agrees with it on what it accepts', () => {
    const l63 = 'a'.repeat(63);
    const cases: Uint8Array[][] = [
      ['q1', 'bench', 'test'],
      ['Q1', 'BENCH', 'Test'],
      ['_sip', '_tcp', 'example', 'com'],
      ['a-b', 'c'],
      ['-ab', 'c'],
      ['ab-', 'c'],
      ['xn--bcher-kva', 'example'],
      ['a b', 'c'],
      ['a.b', 'c'],
      ['a\\b', 'c'],
      ['*', 'example'],
      ['\u00e9t\u00e9', 'example'],
      [l63, 'x'],
      [l63, l63, l63, 'a'.repeat(61)], // 253 characters: the longest name
      [l63, l63, l63, 'a'.repeat(62)], // 254: too long
      ['a'.repeat(64), 'x'],
      [],
    ].map((ls) => ls.map(ascii));
    cases.push([Uint8Array.of(0x41, 0x00, 0x42)], [Uint8Array.of(0x7f)], [Uint8Array.of(0xff, 0x61)]);
    const q = new QueryQuestion();
    for (const labels of cases) {
      const b = rawQuery(labels);
      const want = general(b);
      if (readQueryQuestion(b, q)) {
        expect(want, labels.map((l) => Buffer.from(l).toString('latin1')).join('.')).toEqual({ name: q.name, qtype: q.qtype, qclass: q.qclass, end: q.end });
      }
    }
    // The plain names are taken by the fast path (else it would save nothing).
    expect(readQueryQuestion(rawQuery(['Q1', 'BENCH', 'Test'].map(ascii)), q)).toBe(true);
    expect(q.name).toBe('q1.bench.test');
    expect(readQueryQuestion(rawQuery([l63, l63, l63, 'a'.repeat(61)].map(ascii)), q)).toBe(true);
  });

  it('leaves responses, other opcodes, pointers, two questions and cut messages to the general path', () => {
    const q = new QueryQuestion();
    const ok = rawQuery(['a', 'b'].map(ascii));
    expect(readQueryQuestion(ok, q)).toBe(true);
    expect(readQueryQuestion(rawQuery(['a', 'b'].map(ascii), DNS_TYPE_A, 0x8100), q)).toBe(false); // QR
    expect(readQueryQuestion(rawQuery(['a', 'b'].map(ascii), DNS_TYPE_A, 0x2100), q)).toBe(false); // opcode 4
    const two = Uint8Array.from(ok);
    two[5] = 2;
    expect(readQueryQuestion(two, q)).toBe(false);
    for (let n = 0; n < ok.length; n++) expect(readQueryQuestion(ok.subarray(0, n), q)).toBe(false);
    const pointer = Uint8Array.from([...ok.subarray(0, 12), 0xc0, 0x0c, 0, 1, 0, 1]);
    expect(readQueryQuestion(pointer, q)).toBe(false);
    const withOpt = emitDnsMessage({ id: 1, flags: 0x0100, question: { name: 'a.b', qtype: DNS_TYPE_A }, additional: [{ name: '.', type: 41, rclass: 1232, ttl: 0, data: new Uint8Array(0) }] });
    expect(readQueryQuestion(withOpt, q)).toBe(true);
    expect(q.end).toBe(DnsMessage.parse(withOpt)?.questionEnd);
  });
});
