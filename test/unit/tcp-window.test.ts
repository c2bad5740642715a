/**
 * Window management (RFC 9293 §3.8.6, RFC 7323 §2): window scaling both ways, zero windows and
 * persist probes with back-off (§3.8.6.1), receive-side backpressure and window updates with
 * receiver SWS avoidance (§3.8.6.2.2). Every trace runs with a plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, PSH, RST } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, expectNothing, expectSegments, pattern, recv, send } from './tcp-harness.js';

describe.each(ISS_FAMILIES)('window scaling ($name)', (iss) => {
  const scaled = {
    opts: { windowScaling: true, rcvBufSize: 256 * 1024, sndBufSize: 64 * 1024 },
    synOptions: { mss: 1000, wscale: 2 },
  };

  it('advertises our window scaled by our shift, never moving the right edge left', () => {
    const { c, L, R } = established(iss, scaled);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(2000) });
    // 262144 - 2000 = 260144 = 32518 · 8: exact.
    expectSegments(c, 10, [{ flags: ACK, ack: R(2001), window: 32518 }]);
    send(c, 20, { seq: R(2001), ack: L(1), payload: pattern(1001) });
    expectSegments(c, 60, [{ flags: ACK, ack: R(3002), window: 32393 }]);
    // 261143 would round down to 32392 · 8 = 259136 + 3002 < the edge already promised: round up.
    expect(c.stats.rcvWnd).toBe(32393 * 8 - 0);
  });

  it("scales the peer's window by its shift", () => {
    const { c, L, R } = established(iss, { ...scaled, window: 500 });
    expect(c.stats.sndWnd).toBe(2000);
    c.write(pattern(5000));
    const out = expectSegments(c, 5, [
      { flags: ACK, seq: L(1) },
      { flags: ACK, seq: L(1001) },
    ]);
    expect(out.map((s) => s.payload.length)).toEqual([1000, 1000]);
    send(c, 10, { seq: R(1), ack: L(2001), window: 1000 });
    expect(c.stats.sndWnd).toBe(4000);
    expect(recv(c, 10).map((s) => s.payload.length)).toEqual([1000, 1000, 1000]);
  });

  it('does not move the window with an old segment (SND.WL1/WL2)', () => {
    const { c, L, R } = established(iss, scaled);
    send(c, 10, { seq: R(1), ack: L(1), window: 100, payload: 'a' });
    expect(c.stats.sndWnd).toBe(400);
    // A reordered earlier segment carrying a larger window must not undo the update.
    send(c, 11, { seq: R(1), ack: L(1), window: 9000 });
    expect(c.stats.sndWnd).toBe(400);
  });
});

describe.each(ISS_FAMILIES)('zero window and persist probes ($name)', (iss) => {
  it('probes a zero window with back-off until it opens, then sends', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), window: 0 });
    c.write(pattern(3000));
    expectNothing(c, 10);
    expect(c.pollAt()).toBe(210);
    // Probes <SEQ=SND.UNA-1> with no data, at RTO (200 ms), then 400, 800, 1600 ms apart.
    expectSegments(c, 210, [{ flags: ACK, seq: L(0), ack: R(1), payload: '' }]);
    send(c, 215, { seq: R(1), ack: L(1), window: 0 });
    expectNothing(c, 215);
    expect(c.pollAt()).toBe(610);
    expectSegments(c, 610, [{ flags: ACK, seq: L(0) }]);
    send(c, 615, { seq: R(1), ack: L(1), window: 0 });
    expectNothing(c, 615);
    expect(c.pollAt()).toBe(1410);
    expectSegments(c, 1410, [{ flags: ACK, seq: L(0) }]);
    expect(c.pollAt()).toBe(3010);
    // The window opens: data flows, no more probes.
    send(c, 1500, { seq: R(1), ack: L(1), window: 2000 });
    expectSegments(c, 1500, [
      { flags: ACK, seq: L(1) },
      { flags: ACK, seq: L(1001) },
    ]);
    expect(c.pollAt()).toBe(1700); // the retransmission timer now
    expect(c.state).toBe('ESTABLISHED');
  });

  it('keeps probing as long as the peer answers; gives up when it does not', () => {
    const { c, ev, L, R } = established(iss, { opts: { maxRetries: 3, maxRtoMs: 2000 } });
    send(c, 10, { seq: R(1), ack: L(1), window: 0 });
    c.write(pattern(100));
    expectNothing(c, 10);
    let t = 10;
    for (let i = 0; i < 10; i++) {
      t = c.pollAt() as number;
      expectSegments(c, t, [{ flags: ACK, seq: L(0) }]);
      send(c, t + 1, { seq: R(1), ack: L(1), window: 0 });
      expectNothing(c, t + 1);
    }
    expect(c.state).toBe('ESTABLISHED');
    expect(c.pollAt()).toBe(t + 2000); // the interval is capped at the maximum RTO
    for (let i = 0; i < 3; i++) {
      t = c.pollAt() as number;
      expectSegments(c, t, [{ flags: ACK, seq: L(0) }]);
    }
    t = c.pollAt() as number;
    expectSegments(c, t, [{ flags: RST | ACK, seq: L(1) }]);
    expect(ev.closed).toBe('timeout');
  });

  it('a small window is filled by the SWS override when the persist timer fires', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), window: 300 });
    c.write(pattern(3000));
    expectNothing(c, 10); // 300 bytes: a runt while 3000 wait
    const [s] = expectSegments(c, 210, [{ flags: ACK, seq: L(1) }]);
    expect(s.payload.length).toBe(300);
  });

  it('a bare FIN goes out into a zero window', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), window: 0 });
    c.shutdownWrite();
    expectSegments(c, 10, [{ flags: ACK | 0x01, seq: L(1) }]);
  });
});

describe.each(ISS_FAMILIES)('receive backpressure ($name)', (iss) => {
  it('the window shrinks to zero when the application does not consume, and reopens with an update', () => {
    const { c, ev, L, R } = established(iss);
    for (let i = 0; i < 8; i++) send(c, 10, { seq: R(1 + 1000 * i), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 10, [{ flags: ACK, ack: R(8001), window: 0 }]);
    expect(c.stats.rcvUnconsumed).toBe(8000);
    // A zero-window probe with one byte: its data is dropped, the ACK repeats the zero window.
    send(c, 300, { seq: R(8001), ack: L(1), payload: 'x' });
    expectSegments(c, 300, [{ flags: ACK, ack: R(8001), window: 0 }]);
    // A probe <SEQ=RCV.NXT-1> without data is answered too.
    send(c, 900, { seq: R(8000), ack: L(1) });
    expectSegments(c, 900, [{ flags: ACK, ack: R(8001), window: 0 }]);
    expect(ev.receivedBytes()).toBe(8000);
    // Consuming less than an MSS does not announce a silly window.
    c.consumed(500);
    expect(c.pollAt()).toBeUndefined();
    // Once the window can open by an MSS, a window update goes out at once.
    c.consumed(700);
    expect(c.pollAt()).toBe(900);
    expectSegments(c, 905, [{ flags: ACK, seq: L(1), ack: R(8001), window: 1200 }]);
    send(c, 910, { seq: R(8001), ack: L(1), payload: pattern(1200) });
    expect(ev.receivedBytes()).toBe(9200);
  });

  it('the memory held stays within the buffer whatever the peer sends', () => {
    const { c, L, R } = established(iss);
    for (let i = 0; i < 50; i++) send(c, 10 + i, { seq: R(1 + 1000 * (i % 12)), ack: L(1), payload: pattern(1000) });
    const s = c.stats;
    expect(s.rcvUnconsumed + s.rcvOutOfOrder).toBeLessThanOrEqual(8000);
  });

  it('the first bytes of a buffer larger than the SYN\'s 64 KiB cost no window update of their own', () => {
    // The SYN-ACK offers 65535 (unscaled); the buffer is 256 KiB. Consuming 32 bytes opens the
    // window fourfold, but the peer still has 65503 of what it was offered: the update rides on
    // the next segment we send (here the reply), not on a pure ACK before it.
    const { c, L, R } = established(iss, { opts: { rcvBufSize: 262144, windowScaling: true }, synOptions: { mss: 1000, wscale: 7 } });
    send(c, 10, { flags: ACK | PSH, seq: R(1), ack: L(1), payload: pattern(32) });
    c.consumed(32);
    expectNothing(c, 10);
    expect(c.write(pattern(32))).toBe(32);
    const [reply] = expectSegments(c, 11, [{ flags: ACK | PSH, seq: L(1), ack: R(33) }]);
    expect(reply.window).toBe(262144 >> 3);
  });

  it('a window update goes out once the peer has used half of the window offered', () => {
    const { c, L, R } = established(iss);
    for (let i = 0; i < 5; i++) send(c, 10, { seq: R(1 + 1000 * i), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 10, [{ flags: ACK, ack: R(5001), window: 3000 }]);
    // 1500 of the 3000 offered arrive (one segment: its ACK may wait), then the app reads all.
    send(c, 11, { seq: R(5001), ack: L(1), payload: pattern(1500) });
    expectNothing(c, 11);
    c.consumed(6500);
    expect(c.pollAt()).toBe(11);
    expectSegments(c, 11, [{ flags: ACK, ack: R(6501), window: 8000 }]);
  });

  it('a window update is not sent while most of the window is still open', () => {
    const { c, L, R } = established(iss, { opts: { rcvBufSize: 64000 } });
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(1000) });
    c.consumed(1000);
    expectNothing(c, 10);
    expectSegments(c, 50, [{ flags: ACK | 0, ack: R(1001) }]);
    void PSH;
  });
});
