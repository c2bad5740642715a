import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { FRAGMENT_OVERHEAD, Ipv4Reassembler, type ReassemblyResult } from '../../src/stack/ip-reassembly.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { UdpPacket } from '../../src/wire/udp.js';
import { emitIcmpErrorIpv4, ICMP_TIME_EXCEEDED, ICMP_TIME_EXCEEDED_REASSEMBLY } from '../../src/wire/icmp.js';
import { DST, fragments, pattern, piece, shuffle, udpDatagram, view } from './ipfrag-helpers.js';

function setup(opts: Partial<ConstructorParameters<typeof Ipv4Reassembler>[0]> = {}) {
  const clock = new ManualClock(1000);
  const timeouts: Uint8Array[] = [];
  const r = new Ipv4Reassembler({ clock, onTimeout: (q) => timeouts.push(q), ...opts });
  const feed = (p: Uint8Array): ReassemblyResult => r.input(view(p));
  return { clock, r, feed, timeouts };
}

/** Feed all pieces; expect exactly the last one to complete the datagram, and return it. */
function feedAll(feed: (p: Uint8Array) => ReassemblyResult, pieces: Uint8Array[]): Uint8Array {
  let whole: Uint8Array | undefined;
  pieces.forEach((p, i) => {
    const res = feed(p);
    if (i < pieces.length - 1) expect(res, `piece ${i}`).toBeUndefined();
    else {
      expect(res).toBeInstanceOf(Uint8Array);
      whole = res as Uint8Array;
    }
  });
  return whole!;
}

function expectIntact(whole: Uint8Array, original: Uint8Array): void {
  const ip = new Ipv4Packet();
  expect(ip.wrap(whole, 0, whole.length)).toBeUndefined(); // checksum and length right
  expect(ip.isFragment).toBe(false);
  const udp = new UdpPacket();
  expect(udp.wrap(whole, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
  expect(udp.verifyChecksum(ip.src, ip.dst)).toBe(true);
  // Equal to the original except the header checksum/flags, which we recompute: compare the data.
  expect(Buffer.from(whole.subarray(20)).equals(Buffer.from(original.subarray(20)))).toBe(true);
  expect(whole.length).toBe(original.length);
}

describe('Ipv4Reassembler: whole datagrams', () => {
  it('reassembles a 20 KB datagram from pieces in order', () => {
    const { r, feed } = setup();
    const d = udpDatagram(pattern(20_000));
    const whole = feedAll(feed, fragments(d, 1500));
    expectIntact(whole, d);
    expect(r.heldDatagrams).toBe(0);
    expect(r.heldBytes).toBe(0);
    expect(r.stats.reassembled).toBe(1);
  });

  it('reassembles from pieces in reverse and in shuffled order', () => {
    const d = udpDatagram(pattern(9000, 3));
    const pieces = fragments(d, 576);
    {
      const { feed } = setup();
      expectIntact(feedAll(feed, [...pieces].reverse()), d);
    }
    for (const seed of [1, 2, 3, 4, 5]) {
      const { feed, r } = setup();
      expectIntact(feedAll(feed, shuffle(pieces, seed)), d);
      expect(r.heldBytes).toBe(0);
    }
  });

  it('keeps interleaved datagrams apart by (src, dst, protocol, id)', () => {
    const { feed } = setup();
    const a = udpDatagram(pattern(3000, 1), 100);
    const b = udpDatagram(pattern(3000, 2), 101);
    const pa = fragments(a, 1500);
    const pb = fragments(b, 1500);
    expect(feed(pa[0])).toBeUndefined();
    expect(feed(pb[1])).toBeUndefined();
    expect(feed(pb[0])).toBeUndefined();
    expect(feed(pa[2])).toBeUndefined();
    expect(feed(pa[1])).toBeInstanceOf(Uint8Array);
    const wb = feed(pb[2]);
    expect(wb).toBeInstanceOf(Uint8Array);
    expectIntact(wb as Uint8Array, b);
  });

  it('ignores an exact duplicate piece and still completes', () => {
    const { feed, r } = setup();
    const d = udpDatagram(pattern(4000));
    const pieces = fragments(d, 1500);
    expect(feed(pieces[0])).toBeUndefined();
    expect(feed(pieces[0])).toBe('frag_duplicate');
    expect(feed(pieces[1])).toBeUndefined();
    expectIntact(feed(pieces[2]) as Uint8Array, d);
    expect(r.stats.drops.frag_duplicate).toBe(1);
  });

  it('copies the pieces: the caller may reuse its buffer', () => {
    const { feed } = setup();
    const d = udpDatagram(pattern(3000));
    const pieces = fragments(d, 1500);
    const shared = new Uint8Array(1500);
    for (const p of pieces.slice(0, -1)) {
      shared.set(p);
      expect(feed(shared.subarray(0, p.length))).toBeUndefined();
      shared.fill(0xee);
    }
    expectIntact(feed(pieces[pieces.length - 1]) as Uint8Array, d);
  });
});

describe('Ipv4Reassembler: overlaps (RFC 5722 rule) and contradictions', () => {
  it('discards the whole datagram when a piece overlaps another, and counts it', () => {
    const { feed, r } = setup();
    expect(feed(piece(0, pattern(16), true))).toBeUndefined();
    // Bytes 8..24 overlap 0..16 (a classic "overwrite the ports" attack).
    expect(feed(piece(8, pattern(16, 9), true))).toBe('frag_overlap');
    expect(r.heldDatagrams).toBe(0);
    // The rest of the original then starts a new datagram that never completes.
    expect(feed(piece(16, pattern(8), false))).toBeUndefined();
    expect(r.stats.drops.frag_overlap).toBe(1);
    expect(r.stats.reassembled).toBe(0);
  });

  it('detects an overlap with the piece before and with the piece after', () => {
    {
      const { feed } = setup();
      feed(piece(16, pattern(16), true));
      expect(feed(piece(8, pattern(16), true))).toBe('frag_overlap'); // runs into the next one
    }
    {
      const { feed } = setup();
      feed(piece(0, pattern(24), true));
      expect(feed(piece(16, pattern(8), false))).toBe('frag_overlap'); // starts inside the previous one
    }
    {
      const { feed } = setup();
      feed(piece(8, pattern(8), true));
      expect(feed(piece(0, pattern(32), false))).toBe('frag_overlap'); // covers it
    }
  });

  it('drops an unaligned non-final piece and an empty piece', () => {
    const { feed } = setup();
    expect(feed(piece(0, pattern(10), true))).toBe('frag_bad');
    expect(feed(piece(8, new Uint8Array(0), true))).toBe('frag_bad');
  });

  it('discards a datagram with two different ends or data beyond its end', () => {
    {
      const { feed, r } = setup();
      feed(piece(16, pattern(8), false)); // ends at 24
      expect(feed(piece(32, pattern(8), false))).toBe('frag_bad'); // another end at 40
      expect(r.heldDatagrams).toBe(0);
    }
    {
      const { feed } = setup();
      feed(piece(16, pattern(8), false)); // ends at 24
      expect(feed(piece(32, pattern(8), true))).toBe('frag_bad'); // data at 32..40 beyond it
    }
    {
      const { feed } = setup();
      feed(piece(32, pattern(8), true));
      expect(feed(piece(16, pattern(8), false))).toBe('frag_bad'); // an end before known data
    }
  });

  it('discards a datagram that would exceed 65,535 bytes (ping of death)', () => {
    const { feed, r } = setup();
    expect(feed(piece(0, pattern(1480), true))).toBeUndefined();
    expect(feed(piece(65528, pattern(16), false))).toBe('frag_too_big');
    expect(r.heldDatagrams).toBe(0);
    expect(r.heldBytes).toBe(0);
  });

  it('reassembles the largest legal datagram (65,535 bytes)', () => {
    const { feed } = setup();
    const d = udpDatagram(pattern(65535 - 28));
    expectIntact(feedAll(feed, shuffle(fragments(d, 1500), 11)), d);
  });
});

describe('Ipv4Reassembler: timeouts', () => {
  it('expires an incomplete datagram after 30 s in sweep(), with an ICMP-ready quote of its first piece', () => {
    const { clock, r, feed, timeouts } = setup();
    const d = udpDatagram(pattern(3000));
    const pieces = fragments(d, 1500);
    feed(pieces[0]);
    feed(pieces[1]);
    clock.advance(30_000);
    expect(r.sweep()).toBe(0); // exactly 30 s: still in time
    clock.advance(1);
    expect(r.sweep()).toBe(1);
    expect(r.heldDatagrams).toBe(0);
    expect(r.heldBytes).toBe(0);
    expect(r.stats.timedOut).toBe(1);
    expect(timeouts).toHaveLength(1);
    const quote = timeouts[0];
    expect(quote.length).toBe(28); // header + 8 data bytes
    // The quote is what an ICMP time-exceeded (reassembly) message needs.
    const icmp = new Uint8Array(128);
    const n = emitIcmpErrorIpv4(quote, ICMP_TIME_EXCEEDED, ICMP_TIME_EXCEEDED_REASSEMBLY, DST, icmp, 0);
    expect(n).toBe(20 + 8 + 28);
    // The last piece now starts a new datagram: no completion from stale pieces.
    expect(feed(pieces[2])).toBeUndefined();
  });

  it('sends no quote when the first piece never came (RFC 1122 §3.3.2)', () => {
    const { clock, r, feed, timeouts } = setup();
    feed(piece(8, pattern(8), false));
    clock.advance(31_000);
    expect(r.sweep()).toBe(1);
    expect(timeouts).toHaveLength(0);
  });

  it('expires a stale datagram when a new piece of it arrives, without waiting for sweep()', () => {
    const { clock, r, feed } = setup({ timeoutMs: 5000 });
    const d = udpDatagram(pattern(3000));
    const pieces = fragments(d, 1500);
    feed(pieces[0]);
    feed(pieces[1]);
    clock.advance(5001);
    expect(feed(pieces[2])).toBeUndefined(); // the old pieces are gone
    expect(r.stats.timedOut).toBe(1);
    // Resent in full, it completes.
    feed(pieces[0]);
    expectIntact(feed(pieces[1]) as Uint8Array, d);
  });

  it('sweeps only the old ones, oldest first', () => {
    const { clock, r, feed } = setup();
    feed(piece(0, pattern(8), true, 1));
    clock.advance(10_000);
    feed(piece(0, pattern(8), true, 2));
    clock.advance(20_001);
    expect(r.sweep()).toBe(1);
    expect(r.heldDatagrams).toBe(1);
    clock.advance(10_000);
    expect(r.sweep()).toBe(1);
    expect(r.heldDatagrams).toBe(0);
  });
});

describe('Ipv4Reassembler: bounded memory', () => {
  it('never holds more than maxBytes: new datagrams evict the oldest incomplete ones', () => {
    const maxBytes = 64 * 1024;
    const { r, feed } = setup({ maxBytes });
    // 1,000 different datagrams, each missing its last piece: a flood that never completes.
    for (let id = 0; id < 1000; id++) {
      feed(piece(0, pattern(1480, id), true, id));
      expect(r.heldBytes).toBeLessThanOrEqual(maxBytes);
    }
    const per = 1480 + FRAGMENT_OVERHEAD + 20;
    expect(r.heldDatagrams).toBe(Math.floor(maxBytes / per));
    expect(r.stats.evicted).toBe(1000 - r.heldDatagrams);
    // A real datagram still gets through the flood.
    const d = udpDatagram(pattern(4000), 5000);
    expectIntact(feedAll(feed, fragments(d, 1500)), d);
  });

  it('caps concurrent datagrams', () => {
    const { r, feed } = setup({ maxDatagrams: 8 });
    for (let id = 0; id < 100; id++) feed(piece(0, pattern(8), true, id));
    expect(r.heldDatagrams).toBe(8);
    expect(r.stats.evicted).toBe(92);
  });

  it('discards a single datagram larger than the byte cap instead of flushing everything else', () => {
    const { r, feed } = setup({ maxBytes: 8 * 1024 });
    feed(piece(0, pattern(8), true, 1)); // someone else's small datagram
    const d = udpDatagram(pattern(20_000), 2);
    const results = fragments(d, 1500).map((p) => feed(p));
    expect(results).toContain('frag_limit');
    expect(r.heldBytes).toBeLessThanOrEqual(8 * 1024);
    expect(r.stats.reassembled).toBe(0);
  });

  it('caps the pieces of one datagram (tiny-fragment flood)', () => {
    const { r, feed } = setup({ maxFragmentsPerDatagram: 16 });
    let last: ReassemblyResult;
    for (let i = 0; i < 17; i++) last = feed(piece(i * 8, pattern(8), true, 3));
    expect(last).toBe('frag_limit');
    expect(r.heldDatagrams).toBe(0);
  });

  it('returns to zero bytes held after a mixed workload', () => {
    const { clock, r, feed } = setup({ maxBytes: 32 * 1024 });
    for (let i = 0; i < 200; i++) {
      const d = udpDatagram(pattern(2000 + i * 13, i), i);
      const pieces = shuffle(fragments(d, 1000), i);
      // Every third datagram loses a piece.
      for (const p of i % 3 === 0 ? pieces.slice(1) : pieces) feed(p);
    }
    expect(r.stats.reassembled).toBeGreaterThan(120);
    clock.advance(31_000);
    r.sweep();
    expect(r.heldBytes).toBe(0);
    expect(r.heldDatagrams).toBe(0);
  });
});
