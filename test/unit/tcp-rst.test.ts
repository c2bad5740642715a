/**
 * Resets (RFC 9293 §3.5.2, §3.10.7) with RFC 5961's blind-attack checks: a RST resets only when
 * SEG.SEQ is exactly RCV.NXT; one elsewhere in the window (and any SYN on a synchronized
 * connection) draws a rate-limited challenge ACK; one outside the window is dropped. Every
 * state is covered; abort() sends RST. Every trace runs with a plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, FIN, RST, SYN, type TcpState } from '../../src/stack/tcp/index.js';
import {
  ISS_FAMILIES,
  acceptPending,
  established,
  expectNothing,
  expectSegments,
  recv,
  send,
  synReceived,
  synSent,
  type Fx,
} from './tcp-harness.js';

interface StateCase {
  state: TcpState;
  /** Brings an established fixture to the state at t=1; returns RCV.NXT as a peer offset. */
  setup: (x: Fx) => number;
}

const SYNCHRONIZED: StateCase[] = [
  { state: 'ESTABLISHED', setup: () => 1 },
  {
    state: 'FIN-WAIT-1',
    setup: (x) => {
      x.c.shutdownWrite();
      recv(x.c, 1);
      return 1;
    },
  },
  {
    state: 'FIN-WAIT-2',
    setup: (x) => {
      x.c.shutdownWrite();
      recv(x.c, 1);
      send(x.c, 1, { seq: x.R(1), ack: x.L(2) });
      recv(x.c, 1);
      return 1;
    },
  },
  {
    state: 'CLOSING',
    setup: (x) => {
      x.c.shutdownWrite();
      recv(x.c, 1);
      send(x.c, 1, { flags: ACK | FIN, seq: x.R(1), ack: x.L(1) });
      recv(x.c, 1);
      return 2;
    },
  },
  {
    state: 'CLOSE-WAIT',
    setup: (x) => {
      send(x.c, 1, { flags: ACK | FIN, seq: x.R(1), ack: x.L(1) });
      recv(x.c, 1);
      return 2;
    },
  },
  {
    state: 'LAST-ACK',
    setup: (x) => {
      send(x.c, 1, { flags: ACK | FIN, seq: x.R(1), ack: x.L(1) });
      x.c.shutdownWrite();
      recv(x.c, 1);
      return 2;
    },
  },
  {
    state: 'TIME-WAIT',
    setup: (x) => {
      x.c.shutdownWrite();
      recv(x.c, 1);
      send(x.c, 1, { flags: ACK | FIN, seq: x.R(1), ack: x.L(2) });
      recv(x.c, 1);
      return 2;
    },
  },
];

describe.each(ISS_FAMILIES)('RST in every synchronized state ($name)', (iss) => {
  describe.each(SYNCHRONIZED)('$state', ({ state, setup }) => {
    it('a RST at exactly RCV.NXT closes the connection', () => {
      const x = established(iss);
      const nxt = setup(x);
      expect(x.c.state).toBe(state);
      const reported = x.ev.closed;
      send(x.c, 10, { flags: RST, seq: x.R(nxt) });
      expect(x.c.state).toBe('CLOSED');
      // TIME-WAIT had already reported its (normal) close.
      expect(x.ev.closed).toBe(state === 'TIME-WAIT' ? reported : 'reset');
      expect(x.ev.events.filter((e) => e.startsWith('closed')).length).toBe(1);
      expectNothing(x.c, 10);
      expect(x.c.finished).toBe(true);
    });

    it('a RST elsewhere in the window draws a challenge ACK and changes nothing', () => {
      const x = established(iss);
      const nxt = setup(x);
      send(x.c, 10, { flags: RST | ACK, seq: x.R(nxt + 100), ack: x.L(1) });
      expect(x.c.state).toBe(state);
      expectSegments(x.c, 10, [{ flags: ACK, ack: x.R(nxt) }]);
      expect(x.c.stats.challengeAcks).toBe(1);
    });

    it('a RST outside the window is dropped silently', () => {
      const x = established(iss);
      const nxt = setup(x);
      send(x.c, 10, { flags: RST, seq: x.R(nxt + 100_000) });
      send(x.c, 10, { flags: RST, seq: x.R(nxt - 1) });
      expect(x.c.state).toBe(state);
      expectNothing(x.c, 10);
    });
  });
});

describe.each(ISS_FAMILIES)('RST before synchronization ($name)', (iss) => {
  it('SYN-SENT: a RST acknowledging our SYN means refused', () => {
    const { c, ev, L } = synSent(iss);
    send(c, 5, { flags: RST | ACK, seq: 0, ack: L(1) });
    expect(ev.closed).toBe('refused');
  });

  it('SYN-RECEIVED (accept pending): a RST for the SYN closes it', () => {
    const { c, ev, R } = acceptPending(iss);
    send(c, 5, { flags: RST, seq: R(7) });
    expect(c.state).toBe('SYN-RECEIVED');
    send(c, 5, { flags: RST, seq: R(1) });
    expect(ev.closed).toBe('reset');
  });

  it('SYN-RECEIVED: exact RST resets, an in-window one draws a challenge ACK', () => {
    const { c, ev, R } = synReceived(iss);
    send(c, 5, { flags: RST, seq: R(50) });
    expectSegments(c, 5, [{ flags: ACK, ack: R(1) }]);
    expect(c.state).toBe('SYN-RECEIVED');
    send(c, 6, { flags: RST, seq: R(1) });
    expect(ev.closed).toBe('reset');
  });
});

describe.each(ISS_FAMILIES)('SYN on a synchronized connection and challenge ACK limits ($name)', (iss) => {
  it('a SYN in ESTABLISHED draws a challenge ACK (RFC 5961 §4)', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { flags: SYN, seq: R(77) });
    expectSegments(c, 10, [{ flags: ACK, seq: L(1), ack: R(1) }]);
    expect(c.state).toBe('ESTABLISHED');
  });

  it('challenge ACKs are rate limited per second', () => {
    const { c, R } = established(iss, { opts: { challengeAckLimit: 2 } });
    for (let i = 0; i < 3; i++) {
      send(c, 10 + i, { flags: RST, seq: R(100) });
      recv(c, 10 + i);
    }
    expect(c.stats.challengeAcks).toBe(2);
    send(c, 1010, { flags: RST, seq: R(100) });
    expect(recv(c, 1010)).toHaveLength(1);
    expect(c.stats.challengeAcks).toBe(3);
  });
});

describe.each(ISS_FAMILIES)('abort() ($name)', (iss) => {
  it('sends RST|ACK <SEQ=SND.NXT> and reports aborted', () => {
    const { c, ev, L, R } = established(iss);
    c.write(new Uint8Array(1500));
    recv(c, 1);
    c.abort(2);
    expect(c.state).toBe('CLOSED');
    expect(c.pollAt()).toBe(2);
    expectSegments(c, 2, [{ flags: RST | ACK, seq: L(1501), ack: R(1) }]);
    expect(ev.events).toEqual(['closed:aborted']);
    c.abort(3);
    expectNothing(c, 3);
    expect(ev.events).toEqual(['closed:aborted']);
  });

  it('sends nothing in SYN-SENT or TIME-WAIT', () => {
    const a = synSent(iss);
    a.c.abort(1);
    expectNothing(a.c, 1);
    expect(a.ev.closed).toBe('aborted');
    const b = established(iss);
    SYNCHRONIZED[6].setup(b);
    b.c.abort(2);
    expectNothing(b.c, 2);
  });

  it('answers RST|ACK for a pending accept', () => {
    const { c, ev, R } = acceptPending(iss);
    c.abort(1);
    expectSegments(c, 1, [{ flags: RST | ACK, seq: 0, ack: R(1) }]);
    expect(ev.closed).toBe('aborted');
  });

  it('a closed connection ignores further segments', () => {
    const { c, L, R } = established(iss);
    c.abort(1);
    recv(c, 1);
    send(c, 2, { seq: R(1), ack: L(1), payload: 'x' });
    expectNothing(c, 2);
  });
});
