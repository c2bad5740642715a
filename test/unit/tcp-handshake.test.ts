/**
 * RFC 9293 §3.5 (establishing a connection) both ways, option negotiation (MSS, window scale,
 * SACK-permitted, timestamps), deferred accept and reject, SYN retransmission.
 */
import { describe, expect, it } from 'vitest';
import { ACK, FIN, PSH, RST, SYN, TcpConnection } from '../../src/stack/tcp/index.js';
import {
  ISS_FAMILIES,
  acceptPending,
  baseOpts,
  established,
  expectNothing,
  expectSegments,
  recv,
  send,
  seg,
  synReceived,
  synSent,
} from './tcp-harness.js';

describe.each(ISS_FAMILIES)('passive open ($name)', (iss) => {
  it('waits for completeAccept() before answering the SYN', () => {
    const { c, ev, L, R } = acceptPending(iss);
    expect(c.state).toBe('SYN-RECEIVED');
    expect(c.acceptPending).toBe(true);
    expectNothing(c, 0);
    // The peer retransmits its SYN while the upstream is being connected: still nothing.
    send(c, 1000, { flags: SYN, seq: R(0), options: { mss: 1000 } });
    expectNothing(c, 1000);
    expect(c.pollAt()).toBeUndefined();
    c.completeAccept(1500);
    expectSegments(c, 1500, [{ flags: SYN | ACK, seq: L(0), ack: R(1), window: 8000, options: { mss: 1000 } }]);
    send(c, 1510, { flags: ACK, seq: R(1), ack: L(1) });
    expect(c.state).toBe('ESTABLISHED');
    expect(ev.events).toEqual(['established']);
    expectNothing(c, 1510);
  });

  it('reject() answers RST|ACK and reports refused', () => {
    const { c, ev, R } = acceptPending(iss);
    c.reject(5);
    expectSegments(c, 5, [{ flags: RST | ACK, seq: 0, ack: R(1), window: 0 }]);
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['closed:refused']);
    expect(c.finished).toBe(true);
  });

  it('a RST from the peer while the accept is pending closes it', () => {
    const { c, ev, R } = acceptPending(iss);
    send(c, 10, { flags: RST, seq: R(1) });
    expect(c.state).toBe('CLOSED');
    expect(ev.closed).toBe('reset');
    expectNothing(c, 10);
  });

  it('retransmits the SYN-ACK with exponential back-off, then gives up', () => {
    const { c, ev, L, R } = synReceived(iss, { opts: { synRetries: 3 } });
    expect(c.pollAt()).toBe(1000);
    expectNothing(c, 999);
    expectSegments(c, 1000, [{ flags: SYN | ACK, seq: L(0), ack: R(1) }]);
    expect(c.pollAt()).toBe(3000);
    expectSegments(c, 3000, [{ flags: SYN | ACK, seq: L(0), ack: R(1) }]);
    expect(c.pollAt()).toBe(7000);
    expectSegments(c, 7000, [{ flags: SYN | ACK, seq: L(0), ack: R(1) }]);
    expect(c.pollAt()).toBe(15000);
    expectNothing(c, 15000);
    expect(c.state).toBe('CLOSED');
    expect(ev.closed).toBe('timeout');
  });

  it('a retransmitted SYN after the SYN-ACK makes us resend the SYN-ACK', () => {
    const { c, L, R } = synReceived(iss);
    send(c, 200, { flags: SYN, seq: R(0), options: { mss: 1000 } });
    expectSegments(c, 200, [{ flags: SYN | ACK, seq: L(0), ack: R(1) }]);
  });

  it('an ACK of something we never sent in SYN-RECEIVED gets a RST <SEQ=SEG.ACK>', () => {
    const { c, L, R } = synReceived(iss);
    send(c, 10, { flags: ACK, seq: R(1), ack: L(1000) });
    expectSegments(c, 10, [{ flags: RST, seq: L(1000) }]);
    expect(c.state).toBe('SYN-RECEIVED');
    send(c, 20, { flags: ACK, seq: R(1), ack: L(1) });
    expect(c.state).toBe('ESTABLISHED');
  });

  it('a RST in SYN-RECEIVED closes the connection as reset', () => {
    const { c, ev, R } = synReceived(iss);
    send(c, 10, { flags: RST, seq: R(1) });
    expect(c.state).toBe('CLOSED');
    expect(ev.closed).toBe('reset');
  });

  it('data on the handshake-completing ACK is delivered', () => {
    const { c, ev, L, R } = synReceived(iss);
    send(c, 10, { flags: ACK | PSH, seq: R(1), ack: L(1), payload: 'hello' });
    expect(c.state).toBe('ESTABLISHED');
    expect(ev.events).toEqual(['established', 'data:5']);
    expect(ev.received()).toBe('hello');
  });

  it('data written before completeAccept() goes out after the handshake', () => {
    const { c, L, R } = acceptPending(iss);
    expect(c.write(new TextEncoder().encode('early'))).toBe(5);
    c.completeAccept(0);
    expectSegments(c, 0, [{ flags: SYN | ACK, seq: L(0) }]);
    send(c, 5, { flags: ACK, seq: R(1), ack: L(1) });
    expectSegments(c, 5, [{ flags: ACK | PSH, seq: L(1), ack: R(1), payload: 'early' }]);
  });
});

describe.each(ISS_FAMILIES)('active open ($name)', (iss) => {
  it('SYN, SYN-ACK, ACK', () => {
    const { c, ev, L, R } = synSent(iss);
    expect(c.state).toBe('SYN-SENT');
    send(c, 30, { flags: SYN | ACK, seq: R(0), ack: L(1), options: { mss: 1200 } });
    expect(c.state).toBe('ESTABLISHED');
    expect(ev.events).toEqual(['established']);
    expectSegments(c, 30, [{ flags: ACK, seq: L(1), ack: R(1), window: 8000 }]);
    expect(c.sendMss).toBe(1000);
    expect(c.stats.srtt).toBe(30);
  });

  it('the SYN carries our options', () => {
    const c = TcpConnection.connect(0, {
      ...baseOpts(iss.local, { windowScaling: true, sack: true, timestamps: true, rcvBufSize: 1 << 20, tsOffset: 7 }),
      localPort: 80,
      remotePort: 49152,
    });
    const [s] = recv(c, 0);
    expect(s.flags).toBe(SYN);
    expect(s.seq).toBe(iss.local);
    expect(s.window).toBe(65535);
    expect(s.options).toEqual({ mss: 1000, wscale: 5, sackPermitted: true, timestamp: [7, 0] });
  });

  it('retransmits the SYN with back-off and gives up after synRetries', () => {
    const { c, ev, L } = synSent(iss, { opts: { synRetries: 2 } });
    expect(c.pollAt()).toBe(1000);
    expectSegments(c, 1000, [{ flags: SYN, seq: L(0) }]);
    expect(c.pollAt()).toBe(3000);
    expectSegments(c, 3000, [{ flags: SYN, seq: L(0) }]);
    expect(c.pollAt()).toBe(7000);
    expectNothing(c, 7000);
    expect(ev.closed).toBe('timeout');
  });

  it('RTT of a retransmitted SYN is not sampled (Karn)', () => {
    const { c, L, R } = synSent(iss);
    expectSegments(c, 1000, [{ flags: SYN, seq: L(0) }]);
    send(c, 1010, { flags: SYN | ACK, seq: R(0), ack: L(1), options: { mss: 1000 } });
    expect(c.state).toBe('ESTABLISHED');
    expect(c.stats.srtt).toBe(0);
    expect(c.stats.rto).toBe(2000); // the backed-off RTO is kept until a valid sample
  });

  it('RST|ACK answering the SYN means refused', () => {
    const { c, ev, L } = synSent(iss);
    send(c, 5, { flags: RST | ACK, seq: 0, ack: L(1) });
    expect(c.state).toBe('CLOSED');
    expect(ev.events).toEqual(['closed:refused']);
    expectNothing(c, 5);
  });

  it('a RST without an acceptable ACK is ignored in SYN-SENT', () => {
    const { c, L } = synSent(iss);
    send(c, 5, { flags: RST | ACK, seq: 0, ack: L(7) });
    send(c, 5, { flags: RST, seq: 0 });
    expect(c.state).toBe('SYN-SENT');
  });

  it('a SYN-ACK with a bad ACK gets a RST <SEQ=SEG.ACK>', () => {
    const { c, L, R } = synSent(iss);
    send(c, 5, { flags: SYN | ACK, seq: R(0), ack: L(2) });
    expectSegments(c, 5, [{ flags: RST, seq: L(2) }]);
    expect(c.state).toBe('SYN-SENT');
  });

  it('simultaneous open goes through SYN-RECEIVED', () => {
    const { c, ev, L, R } = synSent(iss);
    send(c, 5, { flags: SYN, seq: R(0), options: { mss: 1000 } });
    expect(c.state).toBe('SYN-RECEIVED');
    expectSegments(c, 5, [{ flags: SYN | ACK, seq: L(0), ack: R(1) }]);
    send(c, 6, { flags: SYN | ACK, seq: R(0), ack: L(1), options: { mss: 1000 } });
    expect(c.state).toBe('ESTABLISHED');
    expect(ev.events).toEqual(['established']);
  });

  it('shutdownWrite() before the handshake sends FIN right after it', () => {
    const { c, L, R } = synSent(iss);
    c.write(new TextEncoder().encode('x'));
    c.shutdownWrite();
    send(c, 5, { flags: SYN | ACK, seq: R(0), ack: L(1), options: { mss: 1000 } });
    expect(c.state).toBe('FIN-WAIT-1');
    expectSegments(c, 5, [{ flags: ACK | PSH | FIN, seq: L(1), ack: R(1), payload: 'x' }]);
  });
});

describe('option negotiation', () => {
  const iss = ISS_FAMILIES[1];
  const all = { windowScaling: true, sack: true, timestamps: true, rcvBufSize: 256 * 1024, tsOffset: 1000 };

  it('answers every option the peer offered', () => {
    const { c, L, R } = acceptPending(iss, {
      opts: all,
      synOptions: { mss: 1460, wscale: 7, sackPermitted: true, timestamp: [555, 0] },
    });
    c.completeAccept(3);
    expectSegments(c, 3, [
      {
        flags: SYN | ACK,
        seq: L(0),
        ack: R(1),
        window: 65535,
        options: { mss: 1000, wscale: 3, sackPermitted: true, timestamp: [1003, 555] },
      },
    ]);
    send(c, 10, { flags: ACK, seq: R(1), ack: L(1), window: 100, options: { timestamp: [556, 1003] } });
    expect(c.state).toBe('ESTABLISHED');
    // The peer's window is scaled by its shift (7): 100 << 7.
    expect(c.stats.sndWnd).toBe(12800);
    // MSS: min(1460, ours 1000) less the 12 bytes of timestamp option.
    expect(c.sendMss).toBe(988);
    // RTT sample from the echoed timestamp: 1010 - 1003.
    expect(c.stats.srtt).toBe(7);
    c.write(new Uint8Array(2000));
    const out = expectSegments(c, 10, [
      { flags: ACK, seq: L(1), window: 32768, options: { timestamp: [1010, 556] } },
      { flags: ACK, seq: L(989), options: { timestamp: [1010, 556] } },
      { flags: ACK | PSH, seq: L(1977), options: { timestamp: [1010, 556] } },
    ]);
    expect(out.map((s) => s.payload.length)).toEqual([988, 988, 24]);
  });

  it('answers only MSS when the peer offered nothing, and assumes MSS 536', () => {
    const { c, L, R } = acceptPending(iss, { opts: all, synOptions: {} });
    c.completeAccept(0);
    expectSegments(c, 0, [{ flags: SYN | ACK, window: 65535, options: { mss: 1000 } }]);
    send(c, 1, { flags: ACK, seq: R(1), ack: L(1), window: 3000 });
    expect(c.sendMss).toBe(536);
    expect(c.stats.sndWnd).toBe(3000); // no scaling
    c.write(new Uint8Array(600));
    const out = expectSegments(c, 1, [
      { flags: ACK, seq: L(1), window: 65535, options: {} },
      { flags: ACK | PSH, seq: L(537), options: {} },
    ]);
    expect(out[0].payload.length).toBe(536);
    expect(out[1].payload.length).toBe(64);
  });

  it('does not scale when scaling is off on our side, even if the peer offers it', () => {
    const { c, L, R } = acceptPending(iss, {
      opts: { ...all, windowScaling: false },
      synOptions: { mss: 1000, wscale: 7 },
    });
    c.completeAccept(0);
    expectSegments(c, 0, [{ flags: SYN | ACK, window: 65535, options: { mss: 1000 } }]);
    send(c, 1, { flags: ACK, seq: R(1), ack: L(1), window: 100 });
    expect(c.stats.sndWnd).toBe(100);
  });

  it('active side: scaling, SACK and timestamps only when the SYN-ACK carries them', () => {
    const { c, L, R } = synSent(iss, { opts: all });
    send(c, 20, { flags: SYN | ACK, seq: R(0), ack: L(1), window: 1000, options: { mss: 1400, wscale: 2 } });
    expect(c.state).toBe('ESTABLISHED');
    expect(c.sendMss).toBe(1000); // no timestamps negotiated
    expect(c.stats.sndWnd).toBe(1000); // the SYN-ACK window is never scaled
    const [ack] = expectSegments(c, 20, [{ flags: ACK, seq: L(1), ack: R(1), options: {} }]);
    expect(ack.window).toBe(262144 / 8);
    send(c, 30, { flags: ACK, seq: R(1), ack: L(1), window: 1000 });
    expect(c.stats.sndWnd).toBe(4000);
  });

  it('clamps a tiny peer MSS to 48 bytes', () => {
    const { c, L, R } = acceptPending(iss, { synOptions: { mss: 8 } });
    c.completeAccept(0);
    recv(c, 0);
    send(c, 1, { flags: ACK, seq: R(1), ack: L(1) });
    expect(c.sendMss).toBe(48);
  });
});

describe('accept() input validation', () => {
  it('refuses a segment that is not a bare SYN', () => {
    expect(() => TcpConnection.accept(0, seg({ flags: SYN | ACK }), baseOpts(1))).toThrow(RangeError);
    expect(() => TcpConnection.accept(0, seg({ flags: ACK | FIN }), baseOpts(1))).toThrow(RangeError);
  });

  it('established fixture is quiet', () => {
    const { c } = established(ISS_FAMILIES[0]);
    expectNothing(c, 0);
    expect(c.pollAt()).toBeUndefined();
  });
});
