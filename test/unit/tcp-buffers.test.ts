/**
 * The byte queues: the send buffer (chunks with offsets, bounded), the out-of-order receive
 * queue (bounded, merging, SACK blocks most recent first), the SACK scoreboard, and NewReno.
 */
import { describe, expect, it } from 'vitest';
import { Congestion, Reassembly, SackScoreboard, SendBuffer } from '../../src/stack/tcp/index.js';

function seq(n: number, from = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (from + i) & 0xff;
  return b;
}

describe('SendBuffer', () => {
  it('accepts only what fits and reports it (backpressure)', () => {
    const b = new SendBuffer(1000);
    expect(b.write(seq(600))).toBe(600);
    expect(b.write(seq(600))).toBe(400);
    expect(b.free).toBe(0);
    expect(b.write(seq(1))).toBe(0);
    b.ack(300);
    expect(b.free).toBe(300);
    expect(b.start).toBe(300);
    expect(b.end).toBe(1000);
  });

  it('returns a view when a slice lies in one chunk, a copy when it spans chunks', () => {
    const b = new SendBuffer(10_000);
    const a = seq(1000, 0);
    const c = seq(1000, 1000);
    b.write(a);
    b.write(c);
    const inOne = b.slice(100, 500);
    expect(inOne.buffer).toBe(a.buffer);
    expect(inOne.byteOffset).toBe(100);
    const spanning = b.slice(900, 200);
    expect(spanning.buffer).not.toBe(a.buffer);
    expect(Array.from(spanning)).toEqual(Array.from(seq(200, 900)));
    const inSecond = b.slice(1500, 10);
    expect(inSecond.buffer).toBe(c.buffer);
  });

  it('coalesces tiny writes into a staging block', () => {
    const b = new SendBuffer(10_000);
    for (let i = 0; i < 300; i++) b.write(seq(3, i * 3));
    const s = b.slice(0, 900);
    expect(Array.from(s)).toEqual(Array.from(seq(900)));
    // A staging block is one chunk: the slice is a view, not a copy.
    expect(b.slice(10, 500).byteOffset).toBe(10);
  });

  it('keeps a big write by reference and a small one by copy', () => {
    const b = new SendBuffer(10_000);
    const big = seq(2000);
    const small = seq(10, 77);
    b.write(big);
    b.write(small);
    small.fill(0); // the caller reuses its small buffer: we copied it
    big.fill(0xee, 0, 1); // big writes are owned by the buffer now (as with a socket)
    expect(b.slice(2000, 10)[0]).toBe(77);
    expect(b.slice(0, 1)[0]).toBe(0xee);
  });

  it('releases acknowledged chunks and still finds later offsets after many writes', () => {
    const b = new SendBuffer(1 << 20);
    let off = 0;
    for (let i = 0; i < 3000; i++) {
      off += b.write(seq(600, off));
      if (i % 3 === 0) b.ack(off - 1000);
    }
    expect(b.start).toBe(off - 1000 - 600 * 2);
    const s = b.slice(b.start + 50, 700);
    expect(Array.from(s)).toEqual(Array.from(seq(700, b.start + 50)));
    b.ack(off);
    expect(b.length).toBe(0);
    expect(() => b.slice(off - 1, 1)).toThrow(RangeError);
  });

  it('a tiny write after an acknowledged staging chunk starts a fresh chunk', () => {
    const b = new SendBuffer(10_000);
    b.write(seq(10));
    b.ack(10);
    b.write(seq(5, 10));
    expect(Array.from(b.slice(10, 5))).toEqual(Array.from(seq(5, 10)));
  });
});

describe('SendBuffer with transient slices', () => {
  it('copies a slice that spans chunks into one shared scratch, reused by the next such slice', () => {
    const b = new SendBuffer(1 << 20, 'scratch');
    const c1 = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
    const c2 = Uint8Array.from({ length: 1000 }, (_, i) => (i * 3) & 0xff);
    b.write(c1);
    b.write(c2);
    const s1 = b.slice(900, 200);
    expect([...s1]).toEqual([...c1.subarray(900), ...c2.subarray(0, 100)]);
    const s2 = b.slice(500, 1000);
    expect([...s2]).toEqual([...c1.subarray(500), ...c2.subarray(0, 500)]);
    expect(s2.buffer).toBe(s1.buffer); // the same scratch: s1 is no longer valid
    // within one chunk it is still a view of the written bytes
    expect(b.slice(10, 20).buffer).toBe(c1.buffer);
  });

  it('a buffer without the option hands out slices that stay valid', () => {
    const b = new SendBuffer(1 << 20);
    b.write(new Uint8Array(1000).fill(1));
    b.write(new Uint8Array(1000).fill(2));
    const s1 = b.slice(990, 20);
    b.slice(980, 40);
    expect([...s1]).toEqual([...new Array<number>(10).fill(1), ...new Array<number>(10).fill(2)]);
  });
});

describe('SendBuffer with split slices', () => {
  it('hands a slice spanning two chunks out as two views (no copy), three or more as one copy', () => {
    const b = new SendBuffer(1 << 20, 'split');
    const c1 = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
    const c2 = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    const c3 = Uint8Array.from({ length: 1000 }, (_, i) => (i * 5) & 0xff);
    b.write(c1);
    b.write(c2);
    b.write(c3);
    const head = b.slice(900, 300);
    const tail = b.takeTail()!;
    expect(head.buffer).toBe(c1.buffer);
    expect(tail.buffer).toBe(c2.buffer);
    expect([...head, ...tail]).toEqual([...c1.subarray(900), ...c2.subarray(0, 200)]);
    expect(b.takeTail()).toBeUndefined(); // taken once
    // within one chunk: a view, no tail
    expect(b.slice(1100, 100).buffer).toBe(c2.buffer);
    expect(b.takeTail()).toBeUndefined();
    // across three chunks: one copy, no tail
    const all = b.slice(900, 1200);
    expect(b.takeTail()).toBeUndefined();
    expect([...all]).toEqual([...c1.subarray(900), ...c2, ...c3.subarray(0, 100)]);
  });
});

describe('Reassembly', () => {
  it('holds disjoint ranges and delivers them once the gap is filled', () => {
    const r = new Reassembly(10_000);
    expect(r.insert(200, seq(100, 200), true)).toBe(100);
    expect(r.insert(400, seq(100, 400), true)).toBe(100);
    expect(r.rangeCount).toBe(2);
    expect(r.take(100)).toBeUndefined();
    expect(r.insert(300, seq(100, 300), true)).toBe(100);
    expect(r.rangeCount).toBe(1);
    const got = r.take(200);
    expect(got?.start).toBe(200);
    expect(got?.end).toBe(500);
    expect(Array.from(Buffer.concat(got?.chunks ?? []))).toEqual(Array.from(seq(300, 200)));
    expect(r.isEmpty).toBe(true);
    expect(r.byteCount).toBe(0);
  });

  it('stores only the new bytes of overlapping and duplicate segments', () => {
    const r = new Reassembly(10_000);
    r.insert(100, seq(100, 100), true);
    expect(r.insert(100, seq(100, 100), true)).toBe(0);
    expect(r.insert(150, seq(30, 150), true)).toBe(0);
    expect(r.insert(50, seq(200, 50), true)).toBe(100);
    expect(r.byteCount).toBe(200);
    const got = r.take(60);
    expect(got?.start).toBe(60);
    expect(Array.from(Buffer.concat(got?.chunks ?? []))).toEqual(Array.from(seq(190, 60)));
  });

  it('bridges several ranges with one segment', () => {
    const r = new Reassembly(10_000);
    r.insert(10, seq(10, 10), true);
    r.insert(30, seq(10, 30), true);
    r.insert(50, seq(10, 50), true);
    expect(r.insert(0, seq(70, 0), true)).toBe(40);
    expect(r.rangeCount).toBe(1);
    const got = r.take(0);
    expect(Array.from(Buffer.concat(got?.chunks ?? []))).toEqual(Array.from(seq(70)));
  });

  it('copies the input when asked, keeps it by reference when not', () => {
    const data = seq(10, 5);
    const r1 = new Reassembly(100);
    r1.insert(5, data, true);
    const r2 = new Reassembly(100);
    r2.insert(5, data, false);
    data.fill(0);
    expect(r1.take(5)?.chunks[0][0]).toBe(5);
    expect(r2.take(5)?.chunks[0][0]).toBe(0);
  });

  it('is bounded: what does not fit is not stored', () => {
    const r = new Reassembly(150);
    expect(r.insert(100, seq(100), true)).toBe(100);
    expect(r.insert(300, seq(100), true)).toBe(50);
    expect(r.insert(500, seq(100), true)).toBe(-1);
    expect(r.byteCount).toBe(150);
  });

  it('reports SACK blocks with the most recent first (RFC 2018 §4)', () => {
    const r = new Reassembly(10_000);
    r.insert(100, seq(10), true);
    r.insert(300, seq(10), true);
    r.insert(500, seq(10), true);
    expect(r.sackBlocks(4)).toEqual([
      [500, 510],
      [300, 310],
      [100, 110],
    ]);
    r.insert(310, seq(10), true); // extends the middle block: now the most recent
    expect(r.sackBlocks(4)).toEqual([
      [300, 320],
      [500, 510],
      [100, 110],
    ]);
    expect(r.sackBlocks(2)).toEqual([
      [300, 320],
      [500, 510],
    ]);
    r.insert(700, seq(10), true);
    r.insert(900, seq(10), true);
    r.insert(1100, seq(10), true);
    // Only four recent positions are remembered; the rest are filled in from the top.
    expect(r.sackBlocks(4)).toEqual([
      [1100, 1110],
      [900, 910],
      [700, 710],
      [300, 320],
    ]);
  });
});

describe('SackScoreboard', () => {
  it('merges blocks, counts SACKed bytes and finds holes', () => {
    const sb = new SackScoreboard();
    expect(sb.add(200, 300)).toBe(100);
    expect(sb.add(400, 500)).toBe(100);
    expect(sb.add(250, 420)).toBe(100);
    expect(sb.sackedBytes).toBe(300);
    expect(sb.rangeCount).toBe(1);
    expect(sb.highest).toBe(500);
    sb.add(600, 700);
    expect(sb.nextHole(100, 700)).toBe(100);
    expect(sb.holeEnd).toBe(200);
    expect(sb.nextHole(200, 700)).toBe(500);
    expect(sb.holeEnd).toBe(600);
    expect(sb.nextHole(600, 700)).toBe(-1);
    expect(sb.holeBytes(100, 700)).toBe(200);
  });

  it('forgets what the cumulative ACK covers', () => {
    const sb = new SackScoreboard();
    sb.add(200, 300);
    sb.add(400, 500);
    sb.ackTo(250);
    expect(sb.sackedBytes).toBe(150);
    sb.ackTo(500);
    expect(sb.isEmpty).toBe(true);
    expect(sb.highest).toBe(-1);
  });
});

describe('Congestion (NewReno)', () => {
  it('starts at 10 segments and grows by the bytes acked in slow start', () => {
    const cc = new Congestion(1000);
    expect(cc.cwnd).toBe(10_000);
    cc.onAck(2000, 10_000);
    expect(cc.cwnd).toBe(12_000);
  });

  it('does not grow while the window is not used', () => {
    const cc = new Congestion(1000);
    cc.onAck(2000, 2000);
    expect(cc.cwnd).toBe(10_000);
  });

  it('grows one segment per window in congestion avoidance', () => {
    const cc = new Congestion(1000);
    cc.enterRecovery(20_000, 100, false);
    cc.exitRecovery();
    expect(cc.cwnd).toBe(10_000);
    expect(cc.ssthresh).toBe(10_000);
    for (let i = 0; i < 9; i++) cc.onAck(1000, 10_000);
    expect(cc.cwnd).toBe(10_000);
    cc.onAck(1000, 10_000);
    expect(cc.cwnd).toBe(11_000);
  });

  it('fast recovery: halve, inflate by 3 and per dup ACK, deflate on partial ACK', () => {
    const cc = new Congestion(1000);
    cc.enterRecovery(16_000, 500, false);
    expect(cc.ssthresh).toBe(8000);
    expect(cc.cwnd).toBe(11_000);
    cc.onDupAckInRecovery(false);
    expect(cc.cwnd).toBe(12_000);
    cc.onPartialAck(3000, false);
    expect(cc.cwnd).toBe(10_000);
    cc.exitRecovery();
    expect(cc.cwnd).toBe(8000);
  });

  it('SACK recovery: cwnd = ssthresh, no inflation', () => {
    const cc = new Congestion(1000);
    cc.enterRecovery(16_000, 500, true);
    expect(cc.cwnd).toBe(8000);
    cc.onDupAckInRecovery(true);
    expect(cc.cwnd).toBe(8000);
  });

  it('RTO: one segment, ssthresh halved once per series', () => {
    const cc = new Congestion(1000);
    cc.onRto(20_000, 100, true);
    expect(cc.cwnd).toBe(1000);
    expect(cc.ssthresh).toBe(10_000);
    cc.onRto(1000, 100, false);
    expect(cc.ssthresh).toBe(10_000);
    expect(cc.ssthresh).toBeGreaterThanOrEqual(2000);
  });

  it('restart after idle caps cwnd at the initial window', () => {
    const cc = new Congestion(1000);
    cc.onAck(30_000, 10_000);
    expect(cc.cwnd).toBe(40_000);
    cc.restartAfterIdle();
    expect(cc.cwnd).toBe(10_000);
  });
});
