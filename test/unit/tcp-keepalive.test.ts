/**
 * Keep-alive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6): off unless configured; after `idleMs` without
 * a segment from the peer a probe <SEQ=SND.UNA-1> with no data, every `intervalMs`, and after
 * `count` unanswered probes RST and onClosed('timeout').
 */
import { describe, expect, it } from 'vitest';
import { ACK, RST } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, expectNothing, expectSegments, pattern, recv, send } from './tcp-harness.js';

const ka = { opts: { keepAlive: { idleMs: 10_000, intervalMs: 1000, count: 3 } } };

describe.each(ISS_FAMILIES)('keep-alive ($name)', (iss) => {
  it('is off by default', () => {
    const { c } = established(iss);
    expect(c.pollAt()).toBeUndefined();
    expectNothing(c, 7_200_000);
  });

  it('probes after the idle time; an answer resets the idle timer', () => {
    const { c, L, R } = established(iss, ka);
    expect(c.pollAt()).toBe(10_000);
    expectNothing(c, 9_999);
    expectSegments(c, 10_000, [{ flags: ACK, seq: L(0), ack: R(1), payload: '' }]);
    expect(c.pollAt()).toBe(11_000);
    send(c, 10_005, { seq: R(1), ack: L(1) });
    expectNothing(c, 10_005);
    expect(c.pollAt()).toBe(20_005);
    expect(c.state).toBe('ESTABLISHED');
  });

  it('gives up after `count` unanswered probes', () => {
    const { c, ev, L, R } = established(iss, ka);
    expectSegments(c, 10_000, [{ flags: ACK, seq: L(0) }]);
    expectSegments(c, 11_000, [{ flags: ACK, seq: L(0) }]);
    expectSegments(c, 12_000, [{ flags: ACK, seq: L(0) }]);
    expectSegments(c, 13_000, [{ flags: RST | ACK, seq: L(1), ack: R(1) }]);
    expect(ev.closed).toBe('timeout');
  });

  it('traffic from the peer postpones the probes', () => {
    const { c, L, R } = established(iss, ka);
    send(c, 9_000, { seq: R(1), ack: L(1), payload: 'x' });
    recv(c, 9_000);
    expectSegments(c, 9_040, [{ flags: ACK, ack: R(2) }]);
    expect(c.pollAt()).toBe(19_000);
  });

  it('does not probe while data is outstanding (the retransmission timer watches the peer)', () => {
    const { c, L, R } = established(iss, { opts: { ...ka.opts, maxRetries: 100, maxRtoMs: 60_000 } });
    c.write(pattern(100));
    recv(c, 0);
    let t = 0;
    const seqs = new Set<number>();
    while (t < 30_000) {
      t = c.pollAt() as number;
      for (const s of recv(c, t)) seqs.add(s.seq);
    }
    expect([...seqs]).toEqual([L(1)]);
    void R;
  });

  it('keeps a half-closed connection alive in FIN-WAIT-2 and CLOSE-WAIT', () => {
    const { c, L, R } = established(iss, ka);
    c.shutdownWrite();
    recv(c, 0);
    send(c, 5, { seq: R(1), ack: L(2) });
    recv(c, 5);
    expect(c.state).toBe('FIN-WAIT-2');
    expect(c.pollAt()).toBe(10_005);
    expectSegments(c, 10_005, [{ flags: ACK, seq: L(1) }]);
  });
});
