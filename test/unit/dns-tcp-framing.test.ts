/** DNS over TCP framing (dns/tcp-framing.ts): the 2-byte length prefix, split reads, bad lengths. */
import { describe, expect, it } from 'vitest';
import { DnsTcpReader, frameDnsMessage, DNS_TCP_MAX_MESSAGE, type DnsTcpRead } from '../../src/dns/tcp-framing.js';
import { buildDnsQuery } from '../../src/dns/message.js';

const A = buildDnsQuery('a.test', 1, 0x1111);
const B = buildDnsQuery('bb.example.test', 28, 0x2222);

function messages(r: DnsTcpReader): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (;;) {
    const m: DnsTcpRead = r.next();
    if (m.kind !== 'message') return out;
    out.push(m.message);
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

describe('DNS over TCP framing', () => {
  it('frames a message with its big-endian length and reads it back', () => {
    const f = frameDnsMessage(A);
    expect(f.length).toBe(A.length + 2);
    expect((f[0] << 8) | f[1]).toBe(A.length);
    const r = new DnsTcpReader();
    r.push(f);
    expect(messages(r)).toEqual([A]);
    expect(r.buffered).toBe(0);
    expect(r.next().kind).toBe('more');
  });

  it('reads several messages from one chunk, in order', () => {
    const r = new DnsTcpReader();
    r.push(concat(frameDnsMessage(A), frameDnsMessage(B), frameDnsMessage(A)));
    expect(messages(r)).toEqual([A, B, A]);
  });

  it('waits for a length prefix cut across two chunks', () => {
    const f = frameDnsMessage(B);
    const r = new DnsTcpReader();
    r.push(f.subarray(0, 1));
    expect(r.next().kind).toBe('more');
    r.push(f.subarray(1, 5));
    expect(r.next().kind).toBe('more');
    r.push(f.subarray(5));
    expect(messages(r)).toEqual([B]);
  });

  it('reassembles a stream fed one byte at a time, and at every cut point', () => {
    const stream = concat(frameDnsMessage(A), frameDnsMessage(B));
    const r = new DnsTcpReader();
    const got: Uint8Array[] = [];
    for (const byte of stream) {
      r.push(Uint8Array.of(byte));
      got.push(...messages(r));
    }
    expect(got).toEqual([A, B]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const q = new DnsTcpReader();
      q.push(stream.subarray(0, cut));
      const early = messages(q);
      q.push(stream.subarray(cut));
      expect([...early, ...messages(q)]).toEqual([A, B]);
      expect(q.buffered).toBe(0);
    }
  });

  it('hands out a message inside one chunk as a view, not a copy', () => {
    const chunk = frameDnsMessage(A);
    const r = new DnsTcpReader();
    r.push(chunk);
    const m = r.next();
    expect(m.kind === 'message' && m.message.buffer).toBe(chunk.buffer);
  });

  it('reports a length no DNS message can have, and stays broken', () => {
    for (const bad of [0, 1, 11]) {
      const r = new DnsTcpReader();
      r.push(Uint8Array.of(bad >> 8, bad & 0xff, 1, 2, 3));
      expect(r.next()).toEqual({ kind: 'malformed', length: bad });
      r.push(frameDnsMessage(A));
      expect(r.next().kind).toBe('malformed');
      expect(r.buffered).toBe(0);
    }
    const capped = new DnsTcpReader(512);
    capped.push(Uint8Array.of(0x02, 0x01));
    expect(capped.next()).toEqual({ kind: 'malformed', length: 513 });
  });

  it('takes a message of exactly the bound, and the largest a prefix can announce', () => {
    const r = new DnsTcpReader(512);
    const m = new Uint8Array(512).fill(7);
    r.push(frameDnsMessage(m));
    expect(messages(r)).toEqual([m]);
    const big = new Uint8Array(DNS_TCP_MAX_MESSAGE).fill(9);
    const f = frameDnsMessage(big);
    const q = new DnsTcpReader();
    q.push(f.subarray(0, 40_000));
    expect(q.next().kind).toBe('more');
    q.push(f.subarray(40_000));
    const got = messages(q);
    expect(got.length).toBe(1);
    expect(Buffer.from(got[0]).equals(big)).toBe(true);
  });

  it('refuses to frame more than 65,535 bytes, and a bound it cannot honour', () => {
    expect(() => frameDnsMessage(new Uint8Array(DNS_TCP_MAX_MESSAGE + 1))).toThrow(RangeError);
    expect(() => new DnsTcpReader(70_000)).toThrow(RangeError);
    expect(() => new DnsTcpReader(5)).toThrow(RangeError);
  });
});
