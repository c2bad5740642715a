/**
 * Loss recovery: retransmission timeout with exponential back-off and give-up (RFC 6298 §5),
 * go-back-N after a timeout with cwnd reset (RFC 5681 §3.1), fast retransmit and NewReno fast
 * recovery on three duplicate ACKs (RFC 5681 §3.2, RFC 6582), limited transmit (RFC 3042) and
 * early retransmit (RFC 5827). Every trace runs with a plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, FIN, PSH, RST } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, expectNothing, expectSegments, pattern, recv, send } from './tcp-harness.js';

describe.each(ISS_FAMILIES)('retransmission timeout ($name)', (iss) => {
  it('retransmits with the RTO doubling each time, then gives up with RST and timeout', () => {
    const { c, ev, L, R } = established(iss, { opts: { maxRetries: 4 } });
    c.write(pattern(1000));
    expectSegments(c, 0, [{ flags: ACK | PSH, seq: L(1) }]);
    expect(c.stats.rto).toBe(200);
    const times: number[] = [];
    for (let i = 0; i < 4; i++) {
      const t = c.pollAt() as number;
      times.push(t);
      expectNothing(c, t - 1);
      const [s] = expectSegments(c, t, [{ flags: ACK | PSH, seq: L(1), ack: R(1) }]);
      expect(Array.from(s.payload)).toEqual(Array.from(pattern(1000)));
    }
    expect(times).toEqual([200, 600, 1400, 3000]);
    expect(c.stats.retransmits).toBe(4);
    expect(c.stats.timeouts).toBe(4);
    expect(c.stats.cwnd).toBe(1000);
    expect(c.pollAt()).toBe(6200);
    expectSegments(c, 6200, [{ flags: RST | ACK, seq: L(1001), ack: R(1) }]);
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['closed:timeout']);
  });

  it('after a timeout, resends from SND.UNA with a one-segment window and slow-starts again', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(5000));
    expect(recv(c, 0)).toHaveLength(5);
    send(c, 10, { seq: R(1), ack: L(1001) });
    expectNothing(c, 10);
    const t = c.pollAt() as number;
    expectSegments(c, t, [{ flags: ACK, seq: L(1001) }]);
    expect(c.stats.cwnd).toBe(1000);
    expect(c.stats.ssthresh).toBe(2000);
    send(c, t + 10, { seq: R(1), ack: L(2001) });
    expectSegments(c, t + 10, [
      { flags: ACK, seq: L(2001) },
      { flags: ACK, seq: L(3001) },
    ]);
    // The receiver had the rest: one cumulative ACK jumps over the go-back-N data.
    send(c, t + 20, { seq: R(1), ack: L(5001) });
    expectNothing(c, t + 20);
    expect(c.pollAt()).toBeUndefined();
  });

  it('a timeout during a closed peer window still retransmits the head segment', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(1000));
    recv(c, 0);
    send(c, 5, { seq: R(1), ack: L(1), window: 0 }); // the peer shrank its window (it should not)
    expectNothing(c, 5);
    expectSegments(c, 200, [{ flags: ACK | PSH, seq: L(1) }]);
  });

  it('a lost FIN is retransmitted', () => {
    const { c, L, R } = established(iss);
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1), ack: R(1) }]);
    expectSegments(c, 200, [{ flags: ACK | FIN, seq: L(1), ack: R(1) }]);
    send(c, 210, { seq: R(1), ack: L(2) });
    expect(c.state).toBe('FIN-WAIT-2');
    expect(c.pollAt()).toBe(210);
    expectNothing(c, 210);
    expect(c.pollAt()).toBeUndefined();
  });
});

describe.each(ISS_FAMILIES)('fast retransmit, NewReno ($name)', (iss) => {
  it('three duplicate ACKs retransmit the missing segment; partial ACKs the next; a full ACK ends recovery', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(6000));
    expect(recv(c, 0)).toHaveLength(6);
    send(c, 10, { seq: R(1), ack: L(1001) });
    expectNothing(c, 10);
    send(c, 11, { seq: R(1), ack: L(1001) });
    send(c, 12, { seq: R(1), ack: L(1001) });
    expectNothing(c, 12);
    send(c, 13, { seq: R(1), ack: L(1001) });
    expectSegments(c, 13, [{ flags: ACK, seq: L(1001) }]);
    const s = c.stats;
    expect(s.fastRetransmits).toBe(1);
    expect(s.dupAcksIn).toBe(3);
    expect(s.ssthresh).toBe(2500);
    expect(s.cwnd).toBe(5500);
    // Partial ACK: the next hole goes out at once (RFC 6582 §3.2 step 5).
    send(c, 20, { seq: R(1), ack: L(3001) });
    expectSegments(c, 20, [{ flags: ACK, seq: L(3001) }]);
    expect(c.stats.cwnd).toBe(4500);
    // Full ACK: recovery ends at ssthresh.
    send(c, 30, { seq: R(1), ack: L(6001) });
    expectNothing(c, 30);
    expect(c.stats.cwnd).toBe(2500);
    expect(c.stats.retransmits).toBe(2);
  });

  it('limited transmit sends a new segment on each of the first two duplicate ACKs', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(12000));
    expect(recv(c, 0)).toHaveLength(10);
    send(c, 10, { seq: R(1), ack: L(1) });
    expectSegments(c, 10, [{ flags: ACK, seq: L(10001) }]);
    send(c, 11, { seq: R(1), ack: L(1) });
    expectSegments(c, 11, [{ flags: ACK | PSH, seq: L(11001) }]);
    send(c, 12, { seq: R(1), ack: L(1) });
    expectSegments(c, 12, [{ flags: ACK, seq: L(1) }]);
    expect(c.stats.fastRetransmits).toBe(1);
  });

  it('early retransmit: with two segments out and nothing more to send, one duplicate ACK is enough', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(2000));
    expect(recv(c, 0)).toHaveLength(2);
    send(c, 10, { seq: R(1), ack: L(1) });
    expectSegments(c, 10, [{ flags: ACK, seq: L(1) }]);
  });

  it('a window update is not a duplicate ACK', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(6000));
    recv(c, 0);
    for (let i = 0; i < 3; i++) send(c, 10 + i, { seq: R(1), ack: L(1), window: 60000 + i });
    expectNothing(c, 20);
    expect(c.stats.dupAcksIn).toBe(0);
  });

  it('an ACK with data is not a duplicate ACK (without SACK)', () => {
    const { c, ev, L, R } = established(iss);
    c.write(pattern(6000));
    recv(c, 0);
    for (let i = 0; i < 3; i++) send(c, 10 + i, { seq: R(1 + i), ack: L(1), payload: 'x' });
    expect(ev.receivedBytes()).toBe(3);
    expect(c.stats.fastRetransmits).toBe(0);
  });
});
