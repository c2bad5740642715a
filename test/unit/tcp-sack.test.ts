/**
 * Out-of-order data (RFC 9293 §3.10.7.4), SACK generation (RFC 2018 §4) and SACK-driven
 * recovery (RFC 6675). Every trace runs with a plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, FIN, PSH } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, expectNothing, expectSegments, pattern, recv, send } from './tcp-harness.js';

const sackFx = { opts: { sack: true }, synOptions: { mss: 1000, sackPermitted: true } };

describe.each(ISS_FAMILIES)('reassembly of reordered and duplicated segments ($name)', (iss) => {
  it('holds out-of-order segments, ACKs the gap at once, delivers in order when it fills', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1001), ack: L(1), payload: pattern(1000, 1000) });
    expect(ev.receivedBytes()).toBe(0);
    expectSegments(c, 10, [{ flags: ACK, ack: R(1), window: 8000, options: {} }]);
    send(c, 11, { seq: R(2001), ack: L(1), payload: pattern(500, 2000) });
    send(c, 11, { seq: R(1001), ack: L(1), payload: pattern(1000, 1000) }); // duplicate
    expectSegments(c, 11, [{ flags: ACK, ack: R(1) }]);
    send(c, 12, { seq: R(1), ack: L(1), payload: pattern(1000, 0) });
    expect(ev.receivedBytes()).toBe(2500);
    expect(Array.from(Buffer.concat(ev.data))).toEqual(Array.from(pattern(2500)));
    expectSegments(c, 12, [{ flags: ACK, ack: R(2501), window: 5500 }]);
    expect(c.stats.outOfOrderIn).toBe(3);
    expect(c.stats.rcvOutOfOrder).toBe(0);
  });

  it('merges overlapping segments and a FIN that arrived early', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { flags: ACK | FIN, seq: R(301), ack: L(1), payload: pattern(100, 300) });
    send(c, 10, { seq: R(101), ack: L(1), payload: pattern(150, 100) });
    send(c, 10, { seq: R(201), ack: L(1), payload: pattern(150, 200) });
    expect(ev.events).toEqual([]);
    send(c, 11, { seq: R(1), ack: L(1), payload: pattern(120, 0) });
    expect(Array.from(Buffer.concat(ev.data))).toEqual(Array.from(pattern(400)));
    expect(ev.events.at(-1)).toBe('peer-fin');
    expect(c.state).toBe('CLOSE-WAIT');
    expectSegments(c, 11, [{ flags: ACK, ack: R(402) }]);
  });

  it('a segment that starts before RCV.NXT is trimmed, not dropped', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(100) });
    send(c, 11, { seq: R(51), ack: L(1), payload: pattern(100, 50) });
    expect(Array.from(Buffer.concat(ev.data))).toEqual(Array.from(pattern(150)));
  });
});

describe.each(ISS_FAMILIES)('SACK generation ($name)', (iss) => {
  it('reports held blocks, the most recent first, and stops when the gaps are filled', () => {
    const { c, L, R } = established(iss, sackFx);
    send(c, 10, { seq: R(1001), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 10, [{ flags: ACK, ack: R(1), options: { sack: [[R(1001), R(2001)]] } }]);
    send(c, 20, { seq: R(3001), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 20, [
      { flags: ACK, ack: R(1), options: { sack: [[R(3001), R(4001)], [R(1001), R(2001)]] } },
    ]);
    send(c, 30, { seq: R(5001), ack: L(1), payload: pattern(500) });
    send(c, 30, { seq: R(2001), ack: L(1), payload: pattern(500) });
    expectSegments(c, 30, [
      {
        flags: ACK,
        ack: R(1),
        options: { sack: [[R(1001), R(2501)], [R(5001), R(5501)], [R(3001), R(4001)]] },
      },
    ]);
    send(c, 40, { seq: R(1), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 40, [{ flags: ACK, ack: R(2501), options: { sack: [[R(5001), R(5501)], [R(3001), R(4001)]] } }]);
    send(c, 50, { seq: R(2501), ack: L(1), payload: pattern(3000) });
    expectSegments(c, 50, [{ flags: ACK, ack: R(5501), options: {} }]);
  });

  it('shares the option space with timestamps: at most three blocks, data segments shrink', () => {
    const { c, L, R } = established(iss, {
      opts: { sack: true, timestamps: true },
      synOptions: { mss: 1000, sackPermitted: true, timestamp: [1, 0] },
    });
    for (let i = 0; i < 4; i++) send(c, 10, { seq: R(1001 + 2000 * i), ack: L(1), payload: pattern(500), options: { timestamp: [2, 1] } });
    const [ack] = recv(c, 10);
    expect(ack.options.sack).toHaveLength(3);
    // Out-of-order segments do not update TS.Recent (RFC 7323 §4.3: SEG.SEQ > Last.ACK.sent).
    expect(ack.options.timestamp).toEqual([10, 1]);
    c.write(pattern(3000));
    const out = recv(c, 11);
    // 1000 - 12 (timestamps) - 28 (SACK option with three blocks and two NOPs).
    expect(out[0].payload.length).toBe(960);
    expect(out[0].options.sack).toHaveLength(3);
  });
});

describe.each(ISS_FAMILIES)('SACK-driven retransmission ($name)', (iss) => {
  it('retransmits only the holes the scoreboard shows', () => {
    const { c, L, R } = established(iss, sackFx);
    c.write(pattern(8000));
    expect(recv(c, 0)).toHaveLength(8);
    // Segments 1 (L(1)) and 4 (L(3001)) are lost; the peer SACKs what arrives.
    send(c, 10, { seq: R(1), ack: L(1), options: { sack: [[L(1001), L(3001)]] } });
    expectNothing(c, 10);
    send(c, 11, { seq: R(1), ack: L(1), options: { sack: [[L(4001), L(5001)], [L(1001), L(3001)]] } });
    expectSegments(c, 11, [{ flags: ACK, seq: L(1) }]);
    expect(c.stats.fastRetransmits).toBe(1);
    expect(c.stats.cwnd).toBe(4000);
    send(c, 12, { seq: R(1), ack: L(1), options: { sack: [[L(4001), L(6001)], [L(1001), L(3001)]] } });
    expectSegments(c, 12, [{ flags: ACK, seq: L(3001) }]);
    send(c, 13, { seq: R(1), ack: L(1), options: { sack: [[L(4001), L(8001)], [L(1001), L(3001)]] } });
    expectNothing(c, 13); // no hole left that was not retransmitted
    send(c, 20, { seq: R(1), ack: L(3001), options: { sack: [[L(4001), L(8001)]] } });
    expectNothing(c, 20);
    send(c, 21, { seq: R(1), ack: L(8001) });
    expectNothing(c, 21);
    expect(c.stats.retransmits).toBe(2);
    expect(c.stats.sndBuffered).toBe(0);
    expect(c.pollAt()).toBeUndefined();
  });

  it('SACK blocks ride on data: a two-way transfer recovers without pure duplicate ACKs', () => {
    const { c, ev, L, R } = established(iss, sackFx);
    c.write(pattern(6000));
    recv(c, 0);
    for (let i = 0; i < 3; i++) {
      send(c, 10 + i, {
        flags: ACK | PSH,
        seq: R(1 + 10 * i),
        ack: L(1),
        payload: pattern(10),
        options: { sack: [[L(1001), L(2001 + 1000 * i)]] },
      });
    }
    expect(ev.receivedBytes()).toBe(30);
    const out = recv(c, 12);
    expect(out[0].seq).toBe(L(1));
    expect(out[0].payload.length).toBe(1000);
  });

  it('ignores SACK blocks outside what was sent', () => {
    const { c, L, R } = established(iss, sackFx);
    c.write(pattern(3000));
    recv(c, 0);
    send(c, 10, { seq: R(1), ack: L(1), options: { sack: [[L(5001), L(9001)], [L(0), L(1)]] } });
    expectNothing(c, 10);
    expect(c.stats.fastRetransmits).toBe(0);
  });
});
