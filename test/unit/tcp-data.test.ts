/**
 * Data transfer in ESTABLISHED (RFC 9293 §3.8, §3.10.7.4 seventh): delivery in order,
 * delayed ACKs (RFC 1122 §4.2.3.2), segmentation by MSS, piggybacked ACKs, the peer's window,
 * GSO-sized output and GRO-sized input. Every trace runs with a plain ISS and one near 2^32.
 */
import { describe, expect, it } from 'vitest';
import { ACK, PSH } from '../../src/stack/tcp/index.js';
import {
  ISS_FAMILIES,
  bytes,
  established,
  expectNothing,
  expectSegments,
  pattern,
  recv,
  send,
} from './tcp-harness.js';

describe.each(ISS_FAMILIES)('receiving ($name)', (iss) => {
  it('delivers in-order data and ACKs it after the delayed-ACK timeout', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: 'abc' });
    expect(ev.events).toEqual(['data:3']);
    expect(ev.received()).toBe('abc');
    expectNothing(c, 10);
    expect(c.pollAt()).toBe(50);
    expectNothing(c, 49);
    expectSegments(c, 50, [{ flags: ACK, seq: L(1), ack: R(4), window: 7997 }]);
    expect(c.pollAt()).toBeUndefined();
  });

  it('ACKs every second full-sized segment at once', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(1000) });
    expectNothing(c, 10);
    send(c, 11, { seq: R(1001), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 11, [{ flags: ACK, seq: L(1), ack: R(2001), window: 6000 }]);
  });

  it('acknowledges a batch of segments processed together once', () => {
    const { c, L, R } = established(iss);
    for (let i = 0; i < 6; i++) send(c, 10, { seq: R(1 + i * 1000), ack: L(1), payload: pattern(1000) });
    expectSegments(c, 10, [{ flags: ACK, ack: R(6001), window: 2000 }]);
  });

  it('the consumed bytes reopen the window in the next ACK', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(1000) });
    c.consumed(1000);
    expectNothing(c, 10); // 7000 of 8000 still open: no window update needed
    expectSegments(c, 50, [{ flags: ACK, ack: R(1001), window: 8000 }]);
    expect(ev.receivedBytes()).toBe(1000);
  });

  it('accepts a segment larger than the MSS (a GRO super-packet) and ACKs it at once', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(5000) });
    expect(ev.receivedBytes()).toBe(5000);
    expectSegments(c, 10, [{ flags: ACK, ack: R(5001), window: 3000 }]);
  });

  it('trims data beyond the window', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(9000) });
    expect(ev.receivedBytes()).toBe(8000);
    expectSegments(c, 10, [{ flags: ACK, ack: R(8001), window: 0 }]);
  });

  it('acknowledges an old duplicate at once and does not deliver it again', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: 'hello' });
    expectSegments(c, 50, [{ flags: ACK, ack: R(6) }]);
    send(c, 60, { seq: R(1), ack: L(1), payload: 'hello' });
    expectSegments(c, 60, [{ flags: ACK, ack: R(6) }]);
    send(c, 70, { seq: R(3), ack: L(1), payload: 'llo, world' });
    expect(ev.received()).toBe('hello, world');
    expect(c.stats.duplicateIn).toBe(1);
  });

  it('delivers chunks the caller may keep (input buffers are copied by default)', () => {
    const { c, ev, L, R } = established(iss);
    const buf = bytes('reused');
    send(c, 10, { seq: R(1), ack: L(1), payload: buf });
    buf.fill(0);
    expect(ev.received()).toBe('reused');
  });

  it('an abort() from inside onData stops the delivery of held data', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(101), ack: L(1), payload: pattern(100) });
    recv(c, 10);
    ev.listener.onData = (chunk: Uint8Array): void => {
      ev.events.push(`data:${chunk.length}`);
      c.abort(11);
    };
    send(c, 11, { seq: R(1), ack: L(1), payload: pattern(100) });
    expect(ev.events).toEqual(['data:100', 'closed:aborted']);
    expectSegments(c, 11, [{ flags: 0x04 | ACK, seq: L(1), ack: R(101) }]);
  });

  it('with copyInput off, delivers views of the input', () => {
    const { c, ev, L, R } = established(iss, { opts: { copyInput: false } });
    const buf = bytes('shared');
    send(c, 10, { seq: R(1), ack: L(1), payload: buf });
    expect(ev.data[0].buffer).toBe(buf.buffer);
  });
});

describe.each(ISS_FAMILIES)('sending ($name)', (iss) => {
  it('segments written data by MSS, PSH on the segment that empties the buffer', () => {
    const { c, L, R } = established(iss);
    expect(c.write(pattern(2500))).toBe(2500);
    const out = expectSegments(c, 5, [
      { flags: ACK, seq: L(1), ack: R(1), window: 8000 },
      { flags: ACK, seq: L(1001) },
      { flags: ACK | PSH, seq: L(2001) },
    ]);
    expect(out.map((s) => s.payload.length)).toEqual([1000, 1000, 500]);
    expect(Array.from(out[1].payload)).toEqual(Array.from(pattern(1000, 1000)));
    expect(c.stats.bytesOut).toBe(2500);
  });

  it('an ACK of everything releases the buffer and stops the retransmission timer', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(2500));
    recv(c, 5);
    expect(c.pollAt()).toBe(205);
    send(c, 20, { seq: R(1), ack: L(1001) });
    expect(c.stats.sndBuffered).toBe(1500);
    expectNothing(c, 20);
    expect(c.pollAt()).toBe(220); // restarted on the ACK of new data
    send(c, 30, { seq: R(1), ack: L(2501) });
    expect(c.stats.sndBuffered).toBe(0);
    expectNothing(c, 30);
    expect(c.pollAt()).toBeUndefined();
    expect(c.stats.srtt).toBeGreaterThan(0);
  });

  it('piggybacks a pending ACK on data', () => {
    const { c, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: 'abc' });
    c.write(bytes('xyz'));
    expectSegments(c, 20, [{ flags: ACK | PSH, seq: L(1), ack: R(4), window: 7997, payload: 'xyz' }]);
    expectNothing(c, 50);
  });

  it("respects the peer's window", () => {
    const { c, L, R } = established(iss, { window: 2000 });
    c.write(pattern(5000));
    expectSegments(c, 5, [
      { flags: ACK, seq: L(1) },
      { flags: ACK, seq: L(1001) },
    ]);
    send(c, 10, { seq: R(1), ack: L(1001), window: 2000 });
    expectSegments(c, 10, [{ flags: ACK, seq: L(2001) }]);
    send(c, 20, { seq: R(1), ack: L(3001), window: 2000 });
    expectSegments(c, 20, [
      { flags: ACK, seq: L(3001) },
      { flags: ACK | PSH, seq: L(4001) },
    ]);
  });

  it('sender SWS avoidance: holds back a runt segment while more data waits', () => {
    const { c, L, R } = established(iss, { window: 2400 });
    c.write(pattern(5000));
    expectSegments(c, 5, [
      { flags: ACK, seq: L(1) },
      { flags: ACK, seq: L(1001) },
    ]); // 400 bytes of window left: below MSS and below half the largest window
    send(c, 10, { seq: R(1), ack: L(1001), window: 2400 });
    const out = expectSegments(c, 10, [{ flags: ACK, seq: L(2001) }]);
    expect(out[0].payload.length).toBe(1000);
    // The last bytes of the stream go out even if short.
    send(c, 20, { seq: R(1), ack: L(3001), window: 2400 });
    const tail = expectSegments(c, 20, [{ flags: ACK, seq: L(3001) }, { flags: ACK | PSH, seq: L(4001) }]);
    expect(tail[1].payload.length).toBe(1000);
    send(c, 30, { seq: R(1), ack: L(4401), window: 700 });
    expectNothing(c, 30);
  });

  it('the congestion window limits the first flight to 10 segments', () => {
    const { c, L, R } = established(iss);
    c.write(pattern(15000));
    const out = recv(c, 5);
    expect(out).toHaveLength(10);
    expect(out[9].seq).toBe(L(9001));
    send(c, 20, { seq: R(1), ack: L(2001) });
    // Slow start: 2000 acked → cwnd 12000, 8000 in flight → 4 more segments.
    expect(recv(c, 20)).toHaveLength(4);
    expect(c.stats.cwnd).toBe(12000);
    void R;
  });

  it('with segmentation offload, emits segments of whole MSS multiples', () => {
    const { c, L, R } = established(iss, { opts: { maxSegmentPayload: 65535, sndBufSize: 100_000 } });
    c.write(pattern(12345));
    const out = expectSegments(c, 5, [{ flags: ACK, seq: L(1) }]);
    expect(out[0].payload.length).toBe(10000); // cwnd 10 × 1000
    send(c, 20, { seq: R(1), ack: L(10001) });
    const next = expectSegments(c, 20, [{ flags: ACK | PSH, seq: L(10001) }]);
    expect(next[0].payload.length).toBe(2345);
  });

  it('write() returns what fits in the send buffer, onWritable follows when space frees', () => {
    const { c, ev, L, R } = established(iss);
    expect(c.write(pattern(20000))).toBe(16000);
    expect(c.writable).toBe(0);
    recv(c, 5);
    send(c, 20, { seq: R(1), ack: L(2001) });
    expect(ev.events).toEqual([]); // 2000 free: below a quarter of the buffer
    send(c, 21, { seq: R(1), ack: L(5001) });
    expect(ev.events).toEqual(['writable:5000']);
    expect(c.write(pattern(6000))).toBe(5000);
  });

  it('data flows both ways at once', () => {
    const { c, ev, L, R } = established(iss);
    c.write(bytes('ping'));
    expectSegments(c, 5, [{ flags: ACK | PSH, seq: L(1), ack: R(1), payload: 'ping' }]);
    send(c, 10, { flags: ACK | PSH, seq: R(1), ack: L(5), payload: 'pong' });
    expect(ev.received()).toBe('pong');
    c.write(bytes('again'));
    expectSegments(c, 12, [{ flags: ACK | PSH, seq: L(5), ack: R(5), payload: 'again' }]);
    expect(c.pollAt()).toBe(212);
  });
});
