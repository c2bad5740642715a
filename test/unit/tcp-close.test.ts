/**
 * Closing (RFC 9293 §3.6): FIN in both directions, half-close either way, simultaneous close,
 * TIME-WAIT (2·MSL, restarted by a retransmitted FIN) and its expiry. Every trace runs with a
 * plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, FIN, PSH, SYN } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, bytes, established, expectNothing, expectSegments, pattern, send } from './tcp-harness.js';

describe.each(ISS_FAMILIES)('we close first ($name)', (iss) => {
  it('FIN-WAIT-1 → FIN-WAIT-2, still receiving (half-close), → TIME-WAIT → CLOSED', () => {
    const { c, ev, L, R } = established(iss);
    c.shutdownWrite();
    expect(c.state).toBe('FIN-WAIT-1');
    expect(c.write(bytes('late'))).toBe(0);
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1), ack: R(1) }]);
    send(c, 10, { seq: R(1), ack: L(2) });
    expect(c.state).toBe('FIN-WAIT-2');
    send(c, 20, { flags: ACK | PSH, seq: R(1), ack: L(2), payload: 'tail' });
    expect(ev.received()).toBe('tail');
    send(c, 30, { flags: ACK | FIN, seq: R(5), ack: L(2) });
    expect(c.state).toBe('TIME-WAIT');
    expect(ev.events).toEqual(['data:4', 'peer-fin', 'closed:normal']);
    expectSegments(c, 30, [{ flags: ACK, seq: L(2), ack: R(6) }]);
    expect(c.pollAt()).toBe(1030);
    // A retransmitted FIN is acknowledged again and restarts the 2·MSL timer.
    send(c, 500, { flags: ACK | FIN, seq: R(5), ack: L(2) });
    expectSegments(c, 500, [{ flags: ACK, seq: L(2), ack: R(6) }]);
    expect(c.pollAt()).toBe(1500);
    expectNothing(c, 1499);
    expectNothing(c, 1500);
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['data:4', 'peer-fin', 'closed:normal']);
    expect(c.finished).toBe(true);
  });

  it('the FIN follows the data still queued', () => {
    const { c, L, R } = established(iss, { window: 1500 });
    c.write(pattern(2500));
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK, seq: L(1) }]);
    send(c, 10, { seq: R(1), ack: L(1001), window: 3000 });
    const out = expectSegments(c, 10, [
      { flags: ACK, seq: L(1001) },
      { flags: ACK | PSH | FIN, seq: L(2001) },
    ]);
    expect(out[1].payload.length).toBe(500);
    send(c, 20, { seq: R(1), ack: L(2502) });
    expect(c.state).toBe('FIN-WAIT-2');
  });

  it('a FIN that also acknowledges ours goes straight to TIME-WAIT', () => {
    const { c, ev, L, R } = established(iss);
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1) }]);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(2) });
    expect(c.state).toBe('TIME-WAIT');
    expect(ev.events).toEqual(['peer-fin', 'closed:normal']);
    expectSegments(c, 10, [{ flags: ACK, ack: R(2) }]);
  });

  it('a SYN in TIME-WAIT is answered with an ACK', () => {
    const { c, L, R } = established(iss);
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1) }]);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(2) });
    expectSegments(c, 10, [{ flags: ACK, ack: R(2) }]);
    send(c, 20, { flags: SYN, seq: R(1000) });
    expectSegments(c, 20, [{ flags: ACK, seq: L(2), ack: R(2) }]);
    expect(c.state).toBe('TIME-WAIT');
    expect(c.reusableBy({ srcPort: 1, dstPort: 2, seq: R(1000), ack: 0, flags: SYN, window: 0, options: {}, payload: new Uint8Array(0) })).toBe(true);
    expect(c.reusableBy({ srcPort: 1, dstPort: 2, seq: R(0), ack: 0, flags: SYN, window: 0, options: {}, payload: new Uint8Array(0) })).toBe(false);
  });
});

describe.each(ISS_FAMILIES)('the peer closes first ($name)', (iss) => {
  it('CLOSE-WAIT: we keep sending (half-close), then LAST-ACK → CLOSED', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(1), payload: 'bye' });
    expect(c.state).toBe('CLOSE-WAIT');
    expect(ev.events).toEqual(['data:3', 'peer-fin']);
    expect(c.peerFinReceived).toBe(true);
    // The FIN's ACK waits for a FIN of ours to ride on; none comes: it goes alone after 40 ms.
    expectNothing(c, 10);
    expectSegments(c, 50, [{ flags: ACK, seq: L(1), ack: R(5) }]);
    expect(c.write(bytes('still here'))).toBe(10);
    expectSegments(c, 20, [{ flags: ACK | PSH, seq: L(1), ack: R(5), payload: 'still here' }]);
    send(c, 30, { seq: R(5), ack: L(11) });
    c.shutdownWrite();
    expect(c.state).toBe('LAST-ACK');
    expectSegments(c, 40, [{ flags: ACK | FIN, seq: L(11), ack: R(5) }]);
    // Lost: retransmitted on timeout.
    expectSegments(c, 240, [{ flags: ACK | FIN, seq: L(11), ack: R(5) }]);
    send(c, 250, { seq: R(5), ack: L(12) });
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['data:3', 'peer-fin', 'closed:normal']);
    expectNothing(c, 250);
  });

  it('the ACK of the peer\'s FIN rides on our FIN when we close within the delayed-ACK time', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { flags: ACK | PSH, seq: R(1), ack: L(1), payload: 'ping' });
    expect(c.write(bytes('pong'))).toBe(4);
    expectSegments(c, 10, [{ flags: ACK | PSH, seq: L(1), ack: R(5), payload: 'pong' }]);
    send(c, 11, { flags: ACK | FIN, seq: R(5), ack: L(5) });
    expect(c.state).toBe('CLOSE-WAIT');
    expectNothing(c, 11);
    c.shutdownWrite();
    expectSegments(c, 12, [{ flags: ACK | FIN, seq: L(5), ack: R(6) }]);
    expectNothing(c, 100); // no ACK left over from the delayed one
    send(c, 13, { seq: R(6), ack: L(6) });
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['data:4', 'peer-fin', 'closed:normal']);
  });

  it('a FIN that arrives after ours (FIN-WAIT) is acknowledged at once', () => {
    const { c, L, R } = established(iss);
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1) }]);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(1) });
    expect(c.state).toBe('CLOSING');
    expectSegments(c, 10, [{ flags: ACK, ack: R(2) }]);
  });

  it('a retransmitted FIN in CLOSE-WAIT is acknowledged again', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(1) });
    expectSegments(c, 50, [{ flags: ACK, ack: R(2) }]);
    send(c, 300, { flags: ACK | FIN, seq: R(1), ack: L(1) });
    expectSegments(c, 300, [{ flags: ACK, ack: R(2) }]);
    expect(c.state).toBe('CLOSE-WAIT');
  });

  it('data after the FIN is ignored', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { flags: ACK | FIN, seq: R(1), ack: L(1) });
    send(c, 11, { seq: R(2), ack: L(1), payload: 'zombie' });
    expect(ev.events).toEqual(['peer-fin']);
  });
});

describe.each(ISS_FAMILIES)('simultaneous close ($name)', (iss) => {
  it('FINs cross: CLOSING, then the ACK of our FIN → TIME-WAIT → CLOSED', () => {
    const { c, ev, L, R } = established(iss);
    c.shutdownWrite();
    expectSegments(c, 0, [{ flags: ACK | FIN, seq: L(1), ack: R(1) }]);
    send(c, 5, { flags: ACK | FIN, seq: R(1), ack: L(1) });
    expect(c.state).toBe('CLOSING');
    expectSegments(c, 5, [{ flags: ACK, seq: L(2), ack: R(2) }]);
    send(c, 10, { seq: R(2), ack: L(2) });
    expect(c.state).toBe('TIME-WAIT');
    expect(ev.events).toEqual(['peer-fin', 'closed:normal']);
    expectNothing(c, 1010);
    expect(c.state).toBe('CLOSED');
  });
});
