/**
 * The shared buffer budget (relay/buffer-budget.ts) and the TCP buffers that draw from it
 * (stack/tcp/buffer-account.ts): segments in, segments out, time passed by hand. A flow holds
 * its floor on its own, grows into the pool as data arrives, gets a smaller (even a shrunk)
 * window when the pool is spent, and the bytes all flows hold never exceed the budget.
 */
import { describe, expect, it } from 'vitest';
import { BufferBudget, floorFor } from '../../src/relay/buffer-budget.js';
import { ACK, type TcpConnection, type TcpSegment } from '../../src/stack/tcp/index.js';
import { ISS_FAMILIES, established, pattern, recv, send, type Fx } from './tcp-harness.js';

const FLOOR = 1000;

/** The last segment the connection emits at `t` (an ACK carries our window). */
function lastOut(c: TcpConnection, t: number): TcpSegment {
  const out = recv(c, t);
  expect(out.length).toBeGreaterThan(0);
  return out[out.length - 1];
}

function flowUnder(budget: BufferBudget, iss = ISS_FAMILIES[0], open = true): Fx {
  if (open) expect(budget.openFlow()).toBe(true);
  return established(iss, { opts: { memory: budget, memoryFloor: FLOOR } });
}

describe('BufferBudget', () => {
  it('sizes the floor so that the floors of all flows take at most half the budget (2-64 KiB)', () => {
    expect(floorFor(256 << 20, 16_000)).toBe(4096);
    expect(floorFor(256 << 20, 1000)).toBe(64 << 10);
    expect(floorFor(1 << 20, 16_000)).toBe(2048);
  });

  it('promises each flow its floors and refuses a flow whose floors do not fit', () => {
    const b = new BufferBudget(5 * FLOOR, 10, FLOOR);
    expect(b.openFlow()).toBe(true);
    expect(b.openFlow()).toBe(true);
    expect(b.available).toBe(FLOOR);
    expect(b.openFlow()).toBe(false);
    expect(b.stats().refusedFlows).toBe(1);
    b.closeFlow();
    expect(b.openFlow()).toBe(true);
  });

  it('grants what it has left, and counts the requests it could not fill', () => {
    const b = new BufferBudget(10_000, 1, FLOOR);
    expect(b.take(6000)).toBe(6000);
    expect(b.take(6000)).toBe(4000);
    expect(b.stats().shortGrants).toBe(1);
    b.give(3000);
    expect(b.available).toBe(3000);
  });

  it('charges bytes already in memory beyond the pool and reports how far it is over', () => {
    const b = new BufferBudget(4 * FLOOR, 1, FLOOR);
    b.openFlow();
    b.force(3000);
    expect(b.stats()).toMatchObject({ heldBytes: 3000, committedBytes: 5000, overBudgetBytes: 1000 });
    expect(b.available).toBe(0);
    b.unforce(3000);
    expect(b.stats()).toMatchObject({ heldBytes: 0, overBudgetBytes: 0, peakHeldBytes: 3000 });
  });
});

describe.each(ISS_FAMILIES)('TCP buffers under one budget ($name)', (iss) => {
  it('a flow grows into the pool; another then holds only its floor and advertises a shrunk window', () => {
    // Two flows' floors and a pool of 3000 bytes.
    const budget = new BufferBudget(2 * 2 * FLOOR + 3000, 2, FLOOR);
    budget.openFlow();
    budget.openFlow();
    const a = flowUnder(budget, iss, false);
    const b = flowUnder(budget, iss, false);
    // Each SYN-ACK offered floor + pool: 4000 (bufSize is 8000).
    expect(a.c.stats.rcvWnd).toBe(4000);
    for (let i = 0; i < 4; i++) send(a.c, 1, { seq: a.R(1 + i * 1000), ack: a.L(1), payload: pattern(1000) });
    expect(a.ev.receivedBytes()).toBe(4000);
    expect(lastOut(a.c, 1)).toMatchObject({ flags: ACK, ack: a.R(4001), window: 0 });
    expect(budget.stats().heldBytes).toBe(4000);
    expect(budget.available).toBe(0);

    // b was offered 4000 too, but the pool is spent: it holds its floor, the rest is dropped.
    send(b.c, 2, { seq: b.R(1), ack: b.L(1), payload: pattern(1000) });
    send(b.c, 2, { seq: b.R(1001), ack: b.L(1), payload: pattern(1000) });
    expect(b.ev.receivedBytes()).toBe(1000);
    expect(lastOut(b.c, 2)).toMatchObject({ flags: ACK, ack: b.R(1001), window: 0 });
    expect(b.c.stats.rcvWnd).toBe(0);
    expect(budget.stats().heldBytes).toBe(5000);

    // a's app reads: the pool comes back; b's app reads: b hears a window the pool covers again.
    a.c.consumed(4000);
    expect(lastOut(a.c, 3).window).toBe(4000);
    b.c.consumed(1000);
    expect(lastOut(b.c, 3).window).toBe(4000);
    send(b.c, 4, { seq: b.R(1001), ack: b.L(1), payload: pattern(3000) });
    expect(b.ev.receivedBytes()).toBe(4000);
    expect(budget.stats()).toMatchObject({ heldBytes: 3000, peakHeldBytes: 5000 });
  });

  it('a write beyond the floor takes only what the pool covers; acknowledged bytes go back', () => {
    const budget = new BufferBudget(2 * FLOOR + 2500, 1, FLOOR);
    const { c, L, R } = flowUnder(budget, iss);
    expect(c.writable).toBe(3500);
    expect(c.write(pattern(5000))).toBe(3500);
    expect(c.writable).toBe(0);
    expect(budget.stats().heldBytes).toBe(3500);
    const sent = recv(c, 1).reduce((n, s) => n + s.payload.length, 0);
    expect(sent).toBe(3500);
    send(c, 2, { seq: R(1), ack: L(1 + 3500) });
    expect(budget.stats().heldBytes).toBe(0);
    expect(budget.available).toBe(2500);
    expect(c.writable).toBe(3500);
  });

  it('closing a flow gives its share back', () => {
    const budget = new BufferBudget(2 * FLOOR + 5000, 1, FLOOR);
    const { c, L, R } = flowUnder(budget, iss);
    send(c, 1, { seq: R(1), ack: L(1), payload: pattern(3000) });
    c.write(pattern(2000));
    expect(budget.stats().heldBytes).toBe(5000);
    c.abort(2);
    budget.closeFlow();
    expect(budget.stats()).toMatchObject({ heldBytes: 0, committedBytes: 0 });
  });
});

describe('many flows under one budget', () => {
  it('never hold more than the budget, whatever arrives, is written, read and acknowledged', () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const flows = 20;
    const budget = new BufferBudget(flows * 2 * FLOOR + 10_000, flows, FLOOR);
    const fx: Array<{ f: Fx; sent: number; unread: number; acked: number; emitted: number }> = [];
    for (let i = 0; i < flows; i++) fx.push({ f: flowUnder(budget), sent: 0, unread: 0, acked: 0, emitted: 0 });
    let peak = 0;
    for (let step = 0, t = 1; step < 5000; step++, t++) {
      const x = fx[rnd(flows)];
      const { c, L, R, ev } = x.f;
      switch (rnd(4)) {
        case 0: {
          // The app sends at RCV.NXT, ignoring our window (the receiver must cope).
          const before = ev.receivedBytes();
          send(c, t, { seq: R(1 + x.sent), ack: L(1 + x.acked), payload: pattern(1 + rnd(3000)) });
          const got = ev.receivedBytes() - before;
          x.sent += got;
          x.unread += got;
          break;
        }
        case 1: {
          const n = rnd(x.unread + 1);
          c.consumed(n);
          x.unread -= n;
          break;
        }
        case 2:
          c.write(pattern(1 + rnd(4000)));
          break;
        default:
          // The app acknowledges everything we sent so far.
          x.acked = x.emitted;
          send(c, t, { seq: R(1 + x.sent), ack: L(1 + x.acked) });
      }
      for (const s of recv(c, t)) x.emitted += s.payload.length;
      const held = fx.reduce((n, y) => n + y.f.c.bufferedBytes, 0);
      expect(budget.stats().heldBytes).toBe(held);
      expect(held).toBeLessThanOrEqual(budget.totalBytes);
      if (held > peak) peak = held;
    }
    // The pool was used, not just the floors.
    expect(peak).toBeGreaterThan(flows * FLOOR);
    expect(budget.stats().peakHeldBytes).toBe(peak);
  });
});
