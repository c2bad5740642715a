import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { UdpFlowTable, type UdpCloseReason, type UdpFlow } from '../../src/stack/udp/flow-table.js';

const APP = 0xc6120001; // 198.18.0.1
const DST = 0x0a420107; // 10.66.1.7

function setup(opts: { maxFlows?: number; idleTimeoutMs?: number; dnsIdleTimeoutMs?: number } = {}) {
  const clock = new ManualClock(0); // 0 on purpose: lru-cache reads a start time of 0 as "no TTL"
  const table = new UdpFlowTable({ clock, ...opts });
  const closed: Array<[number, UdpCloseReason]> = [];
  const open = (port: number, dstPort = 9000): UdpFlow => {
    const f = table.create(APP, port, DST, dstPort);
    f.listener = { onDatagram: () => {}, onClosed: (r, flow) => closed.push([flow.srcPort, r]) };
    return f;
  };
  return { clock, table, closed, open };
}

describe('UdpFlowTable: idle expiry on the manual clock', () => {
  it('keeps a flow for its idle timeout (60 s) and closes it after, on access', () => {
    const { clock, table, closed, open } = setup();
    const f = open(5000);
    clock.advance(60_000);
    expect(table.get(APP, 5000, DST, 9000)).toBe(f); // exactly the timeout: alive, and refreshed
    clock.advance(60_000);
    expect(table.get(APP, 5000, DST, 9000)).toBe(f);
    clock.advance(60_001);
    expect(table.get(APP, 5000, DST, 9000)).toBeUndefined();
    expect(closed).toEqual([[5000, 'idle']]);
    expect(f.closed).toBe(true);
    expect(table.size).toBe(0);
  });

  it('uses 10 s for DNS flows (destination port 53)', () => {
    const { clock, table, closed, open } = setup();
    open(5001, 53);
    open(5002, 443);
    clock.advance(10_001);
    expect(table.sweep()).toBe(1);
    expect(closed).toEqual([[5001, 'idle']]);
    expect(table.peek(APP, 5002, DST, 443)).toBeDefined();
  });

  it('honours configured timeouts', () => {
    const { clock, table, open } = setup({ idleTimeoutMs: 1000, dnsIdleTimeoutMs: 200 });
    open(1, 53);
    open(2, 80);
    clock.advance(201);
    expect(table.sweep()).toBe(1);
    clock.advance(800);
    expect(table.sweep()).toBe(1);
  });

  it('sweep() closes every idle flow nobody touched, and only those', () => {
    const { clock, table, closed, open } = setup();
    for (let p = 1; p <= 100; p++) open(p);
    clock.advance(30_000);
    for (let p = 1; p <= 10; p++) table.get(APP, p, DST, 9000); // activity
    clock.advance(30_001);
    expect(table.sweep()).toBe(90);
    expect(table.size).toBe(10);
    expect(closed.every(([, r]) => r === 'idle')).toBe(true);
    clock.advance(30_000);
    expect(table.sweep()).toBe(10);
    expect(table.size).toBe(0);
    expect(table.stats).toMatchObject({ open: 0, created: 100, expired: 100, evicted: 0 });
  });

  it('touch() (a reply to the app) keeps a flow alive; a touched expired flow is gone', () => {
    const { clock, table, open } = setup();
    const f = open(7);
    clock.advance(50_000);
    expect(table.touch(f)).toBe(true);
    clock.advance(50_000);
    expect(table.sweep()).toBe(0);
    clock.advance(10_001);
    expect(table.touch(f)).toBe(false);
    expect(f.closeReason).toBe('idle');
  });
});

describe('UdpFlowTable: the cap', () => {
  it('evicts the least recently active flow beyond maxFlows', () => {
    const { clock, table, closed, open } = setup({ maxFlows: 3 });
    open(1);
    clock.advance(1);
    open(2);
    clock.advance(1);
    open(3);
    table.get(APP, 1, DST, 9000); // 1 is now the most recent; 2 the oldest
    open(4);
    expect(closed).toEqual([[2, 'evicted']]);
    expect(table.size).toBe(3);
    expect([...table.flows()].map((f) => f.srcPort)).toEqual([4, 1, 3]);
  });

  it('stays bounded under 20,000 distinct short flows and empties after expiry', () => {
    const { clock, table, open } = setup({ maxFlows: 4096 });
    let most = 0;
    for (let i = 0; i < 20_000; i++) {
      open(1024 + i, 53);
      if (i % 100 === 0) clock.advance(1);
      most = Math.max(most, table.size);
    }
    expect(most).toBe(4096);
    expect(table.stats.evicted).toBe(20_000 - 4096);
    clock.advance(10_001);
    expect(table.sweep()).toBe(4096);
    expect(table.size).toBe(0);
  });
});

describe('UdpFlowTable: delete and clear', () => {
  it('runs onClosed once with the reason given', () => {
    const { table, closed, open } = setup();
    const f = open(1);
    open(2);
    table.delete(f, 'closed');
    table.delete(f, 'closed');
    table.clear('shutdown');
    expect(closed).toEqual([[1, 'closed'], [2, 'shutdown']]);
    expect(table.size).toBe(0);
  });
});
