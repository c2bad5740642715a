/**
 * The received-copy slabs (src/stack/tcp/recv-slabs.ts): copies are carved in order, a slab
 * comes back only when every copy in it was released, and the receiver releases a copy only
 * once the application consumed all of its bytes, so no byte an application may still read
 * is ever overwritten.
 */
import { describe, expect, it } from 'vitest';
import { RecvSlabs, recvSlabs, type RecvSlab } from '../../src/stack/tcp/recv-slabs.js';
import { SendBuffer } from '../../src/stack/tcp/send-buffer.js';
import { established, pattern, recv, send, ISS_FAMILIES } from './tcp-harness.js';

function filled(n: number, v: number): Uint8Array {
  return new Uint8Array(n).fill(v);
}

/** The slab the pool's last copy went into; fails the test when that copy had a buffer of its own. */
function slabOfLastCopy(p: RecvSlabs): RecvSlab {
  const s = p.lastSlab;
  if (s === undefined) throw new Error('the last copy was not made in a slab');
  return s;
}

describe('RecvSlabs', () => {
  it('copies into one slab, aligned, and counts the live copies', () => {
    const p = new RecvSlabs(4096);
    const a = p.copy(filled(10, 1));
    const sa = p.lastSlab;
    const b = p.copy(filled(20, 2));
    expect(p.lastSlab).toBe(sa);
    expect([...a]).toEqual(Array(10).fill(1));
    expect([...b]).toEqual(Array(20).fill(2));
    expect(b.byteOffset - a.byteOffset).toBe(16);
    expect(sa?.live).toBe(2);
    expect(p.allocated).toBe(1);
  });

  it('starts a full slab again when all its copies are released, and takes a new one when not', () => {
    const p = new RecvSlabs(4096);
    const first = [p.copy(filled(2048, 1)), p.copy(filled(2048, 2))];
    const s1 = slabOfLastCopy(p);
    // Full and still read: the next copy needs a second slab, and the first keeps its bytes.
    const c = p.copy(filled(100, 3));
    const s2 = p.lastSlab;
    expect(s2).not.toBe(s1);
    expect(p.allocated).toBe(2);
    expect(first[0][0]).toBe(1);
    expect(first[1][2047]).toBe(2);
    // Its copies released, the first slab is free; once the second fills, it is taken again.
    p.release(s1);
    p.release(s1);
    p.copy(filled(4000, 4));
    expect(p.lastSlab).toBe(s1);
    expect(p.allocated).toBe(2);
    expect(p.reused).toBe(1);
    expect(c[99]).toBe(3); // the second slab still holds its live copy
  });

  it('reuses the current slab in place once it is empty', () => {
    const p = new RecvSlabs(4096);
    p.copy(filled(4000, 1));
    const s = slabOfLastCopy(p);
    p.release(s);
    const x = p.copy(filled(4000, 2));
    expect(p.lastSlab).toBe(s);
    expect(x.byteOffset).toBe(s.bytes.byteOffset);
    expect(p.allocated).toBe(1);
  });

  it('keeps at most keepFree empty slabs; trim() lets them go', () => {
    const p = new RecvSlabs(1024, 2);
    const slabs = [];
    for (let i = 0; i < 5; i++) {
      p.copy(filled(1024, i));
      slabs.push(p.lastSlab);
    }
    expect(p.allocated).toBe(5);
    for (const s of slabs.slice(0, 4)) if (s !== undefined) p.release(s);
    expect(p.held).toBe(3); // the current one and two free
    p.trim();
    expect(p.held).toBe(1);
  });

  it('gives a copy larger than a slab a buffer of its own, which is not released', () => {
    const p = new RecvSlabs(1024);
    const big = p.copy(filled(2000, 7));
    expect(p.lastSlab).toBeUndefined();
    expect(big.length).toBe(2000);
    expect(big[1999]).toBe(7);
  });

  it('refuses a second release of the same copy', () => {
    const p = new RecvSlabs(1024);
    p.copy(filled(8, 1));
    const s = slabOfLastCopy(p);
    p.release(s);
    expect(() => p.release(s)).toThrow(RangeError);
  });
});

describe.each(ISS_FAMILIES)('the receiver and the slabs ($name)', (iss) => {
  it('no byte the application has not consumed is overwritten; consumed slabs are used again', () => {
    const MiB = 1024 * 1024;
    const { c, ev, L, R } = established(iss, { opts: { rcvBufSize: 4 * MiB, windowScaling: true }, synOptions: { mss: 1000, wscale: 7 }, window: 65535 });
    let seq = 1;
    const feed = (bytes: number, consume: boolean): void => {
      for (let sent = 0; sent < bytes; sent += 1024) {
        send(c, 11, { seq: R(seq), ack: L(1), payload: pattern(1024, seq) });
        seq += 1024;
        if (consume) c.consumed(1024);
        recv(c, 11); // our ACKs move the window's right edge on
      }
    };
    // 3 MiB held unconsumed: they span several slabs, none of which may be reused.
    feed(3 * MiB, false);
    expect(ev.receivedBytes()).toBe(3 * MiB);
    ev.data.forEach((chunk, i) => expect(chunk[0]).toBe(pattern(1, 1 + i * 1024)[0]));
    const allocated = recvSlabs.allocated;
    expect(allocated).toBeGreaterThanOrEqual(3);
    // Consumed in stream order, 3 MiB more pass through as they are consumed: the slabs
    // come back, and the last chunks are intact.
    c.consumed(3 * MiB);
    feed(3 * MiB, true);
    expect(ev.receivedBytes()).toBe(6 * MiB);
    expect(recvSlabs.allocated - allocated).toBeLessThanOrEqual(1);
    const last = ev.data[ev.data.length - 1];
    expect([...last]).toEqual([...pattern(1024, seq - 1024)]);
    expect(recvSlabs.held).toBeLessThanOrEqual(7);
  });

  it('releases a chunk only when all of its bytes are consumed, in pieces', () => {
    const { c, ev, L, R } = established(iss);
    send(c, 10, { seq: R(1), ack: L(1), payload: pattern(3000) });
    const slab = slabOfLastCopy(recvSlabs);
    const live = slab.live;
    c.consumed(1000);
    c.consumed(1999);
    expect(slab.live).toBe(live); // one byte is still the application's
    expect([...ev.data[0]]).toEqual([...pattern(3000)]);
    c.consumed(1);
    expect(slab.live).toBe(live - 1);
  });
});

describe('the send buffer and pooled reads', () => {
  it('holds a reference to the slab of a chunk it keeps, until the chunk is acknowledged', () => {
    const p = new RecvSlabs(64 * 1024);
    const b = new SendBuffer(1 << 20, 'split');
    const chunk = p.copy(pattern(4000));
    const s = slabOfLastCopy(p);
    expect(b.write(chunk, s)).toBe(4000);
    expect(s.live).toBe(2); // the reader's reference and the buffer's
    p.release(s); // the reader handed it on
    b.ack(3999);
    expect(s.live).toBe(1); // one byte still unacknowledged
    b.ack(4000);
    expect(s.live).toBe(0);
  });

  it('keeps no reference for a small write (it is copied) nor for what it did not accept', () => {
    const p = new RecvSlabs(64 * 1024);
    const b = new SendBuffer(6000, 'split');
    const small = p.copy(pattern(100));
    const s = slabOfLastCopy(p);
    b.write(small, s);
    expect(s.live).toBe(1);
    const big = p.copy(pattern(8000));
    expect(b.write(big, s)).toBe(5900); // the rest stays the writer's
    expect(s.live).toBe(3);
    b.ack(6000);
    expect(s.live).toBe(2);
  });
});
