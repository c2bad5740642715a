/**
 * Timestamps (RFC 7323 §3-5): TSval from `now` plus an offset, TS.Recent echoed and updated only
 * by in-order segments, RTT samples from TSecr, PAWS drops old duplicates — across the TSval wrap.
 */
import { describe, expect, it } from 'vitest';
import { ACK, PSH, RST } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, expectNothing, expectSegments, pattern, recv, send } from './tcp-harness.js';

const OFFSETS = [
  { name: 'small TSval', offset: 100, peer: 5000 },
  { name: 'TSval wrapping', offset: 0xffff_ff00, peer: 0xffff_fff0 },
];

describe.each(ISS_FAMILIES)('timestamps ($name)', (iss) => {
  describe.each(OFFSETS)('$name', ({ offset, peer }) => {
    const ts = (t: number): number => (offset + t) >>> 0 || 1;
    const p = (n: number): number => (peer + n) >>> 0;
    const fx = () =>
      established(iss, {
        opts: { timestamps: true, tsOffset: offset },
        synOptions: { mss: 1000, timestamp: [p(0), 0] },
      });

    it('echoes the peer and samples the RTT from the echo', () => {
      const { c, L, R } = fx();
      c.write(pattern(500));
      expectSegments(c, 100, [{ flags: ACK | PSH, seq: L(1), options: { timestamp: [ts(100), p(0)] } }]);
      send(c, 130, { seq: R(1), ack: L(501), options: { timestamp: [p(10), ts(100)] } });
      // Second sample (the handshake gave 0 ms): SRTT = 7/8 · 0 + 1/8 · 30.
      expect(c.stats.srtt).toBe(3.75);
      send(c, 140, { seq: R(1), ack: L(501), payload: 'hi', options: { timestamp: [p(20), ts(100)] } });
      expectSegments(c, 180, [{ flags: ACK, ack: R(3), options: { timestamp: [ts(180), p(20)] } }]);
    });

    it('PAWS: a segment with an older TSval is dropped and answered by an ACK', () => {
      const { c, ev, L, R } = fx();
      send(c, 10, { seq: R(1), ack: L(1), payload: 'new', options: { timestamp: [p(50), 0] } });
      expectSegments(c, 50, [{ flags: ACK, ack: R(4), options: { timestamp: [ts(50), p(50)] } }]);
      send(c, 60, { seq: R(4), ack: L(1), payload: 'old', options: { timestamp: [p(40), 0] } });
      expect(ev.received()).toBe('new');
      expect(c.stats.pawsDropped).toBe(1);
      expectSegments(c, 60, [{ flags: ACK, ack: R(4) }]);
      // The same bytes with a current TSval are taken.
      send(c, 70, { seq: R(4), ack: L(1), payload: 'old', options: { timestamp: [p(60), 0] } });
      expect(ev.received()).toBe('newold');
    });

    it('a RST is not subject to PAWS', () => {
      const { c, ev, L, R } = fx();
      send(c, 10, { seq: R(1), ack: L(1), payload: 'x', options: { timestamp: [p(50), 0] } });
      recv(c, 50);
      send(c, 60, { flags: RST, seq: R(2), options: { timestamp: [p(1), 0] } });
      expect(ev.closed).toBe('reset');
    });

    it('a segment without the option is accepted (lenient, like Linux)', () => {
      const { c, ev, L, R } = fx();
      send(c, 10, { seq: R(1), ack: L(1), payload: 'plain' });
      expect(ev.received()).toBe('plain');
      expectNothing(c, 10);
    });
  });
});
