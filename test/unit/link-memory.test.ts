import { describe, expect, it } from 'vitest';
import type { PacketBatch } from '../../src/link/link.js';
import { createMemoryLinkPair, MemoryLink, mulberry32, type MemoryFaults } from '../../src/link/memory.js';

/** A packet whose bytes encode its number, so order and content can be checked. */
function packet(n: number, len = 20): Uint8Array {
  const p = new Uint8Array(len);
  p[0] = n >>> 8;
  p[1] = n & 0xff;
  for (let i = 2; i < len; i++) p[i] = (n + i) & 0xff;
  return p;
}

function idOf(p: Uint8Array): number {
  return (p[0] << 8) | p[1];
}

/** Copies the packets out of a batch (the batch's buffer is only valid during the callback). */
function copyOut(batch: PacketBatch): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < batch.count; i++) {
    out.push(new Uint8Array(batch.buf.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i])));
  }
  return out;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await turn();
}

describe('memory link pair: delivery', () => {
  it('carries what a sends to b and what b sends to a, byte for byte', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    const atB: Uint8Array[] = [];
    const atA: Uint8Array[] = [];
    b.onReceive((batch) => atB.push(...copyOut(batch)));
    a.onReceive((batch) => atA.push(...copyOut(batch)));
    expect(a.send(packet(1, 60))).toBe(true);
    expect(b.send(packet(2, 1500))).toBe(true);
    expect(atB).toHaveLength(0); // asynchronous: nothing arrives during send
    await settle();
    expect(atB).toEqual([packet(1, 60)]);
    expect(atA).toEqual([packet(2, 1500)]);
  });

  it('copies on send: the caller may reuse its buffer at once', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    const got: Uint8Array[] = [];
    b.onReceive((batch) => got.push(...copyOut(batch)));
    const scratch = Buffer.from(packet(7));
    a.send(scratch);
    scratch.fill(0);
    await settle();
    expect(got).toEqual([packet(7)]);
  });

  it('delivers everything sent in one turn as one batch over one reused buffer', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    const counts: number[] = [];
    const bufs = new Set<Buffer>();
    const ids: number[] = [];
    b.onReceive((batch) => {
      counts.push(batch.count);
      bufs.add(batch.buf);
      for (const p of copyOut(batch)) ids.push(idOf(p));
    });
    for (let i = 0; i < 10; i++) a.send(packet(i));
    await settle();
    for (let i = 10; i < 15; i++) a.send(packet(i));
    await settle();
    expect(counts).toEqual([10, 5]);
    expect(ids).toEqual([...Array(15).keys()]);
    expect(bufs.size).toBe(1);
  });

  it('splits a burst into batches of at most batchSize', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500, batchSize: 4 });
    const counts: number[] = [];
    b.onReceive((batch) => counts.push(batch.count));
    expect(a.sendMany(Array.from({ length: 10 }, (_, i) => packet(i)))).toBe(10);
    await settle();
    expect(counts).toEqual([4, 4, 2]);
  });

  it('holds packets until a receiver is set', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    a.send(packet(1));
    a.send(packet(2));
    await settle();
    const ids: number[] = [];
    b.onReceive((batch) => ids.push(...copyOut(batch).map(idOf)));
    await settle();
    expect(ids).toEqual([1, 2]);
  });

  it('refuses a packet over the MTU and counts it as a tx error', () => {
    const [a] = createMemoryLinkPair({ mtu: 100 });
    expect(a.send(new Uint8Array(101))).toBe(false);
    expect(a.send(new Uint8Array(100))).toBe(true);
    expect(a.stats).toEqual({ rxPackets: 0, rxBytes: 0, txPackets: 1, txBytes: 100, txErrors: 1 });
  });

  it('counts packets and bytes on both sides', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    b.onReceive(() => {});
    a.sendMany([packet(1, 40), packet(2, 60), packet(3, 100)]);
    await settle();
    expect(a.stats).toEqual({ rxPackets: 0, rxBytes: 0, txPackets: 3, txBytes: 200, txErrors: 0 });
    expect(b.stats).toEqual({ rxPackets: 3, rxBytes: 200, txPackets: 0, txBytes: 0, txErrors: 0 });
  });

  it('stops delivering after close, and refuses to send', async () => {
    const [a, b] = createMemoryLinkPair({ mtu: 1500 });
    let got = 0;
    b.onReceive((batch) => (got += batch.count));
    a.send(packet(1));
    b.close();
    b.close(); // idempotent
    await settle();
    expect(got).toBe(0);
    expect(b.send(packet(2))).toBe(false);
    expect(b.stats.txErrors).toBe(1);
  });

  it('keeps delivering the rest of a burst when a handler throws', () => {
    const link = new MemoryLink({ mtu: 1500, batchSize: 1 });
    const ids: number[] = [];
    link.onReceive((batch) => {
      const id = idOf(copyOut(batch)[0]);
      if (id === 1) throw new Error('handler failed');
      ids.push(id);
    });
    link.inject(packet(1));
    link.inject(packet(2));
    expect(() => link.flush()).toThrow('handler failed');
    link.flush();
    expect(ids).toEqual([2]);
  });
});

describe('single memory link: inject and drain', () => {
  it('delivers injected packets to the receiver, flushed synchronously on demand', () => {
    const link = new MemoryLink({ mtu: 1500 });
    const ids: number[] = [];
    link.onReceive((batch) => ids.push(...copyOut(batch).map(idOf)));
    link.inject(packet(5));
    link.inject(packet(6));
    expect(link.flush()).toBe(2);
    expect(ids).toEqual([5, 6]);
    expect(link.flush()).toBe(0);
    expect(link.stats.rxPackets).toBe(2);
  });

  it('collects sent packets for drain(), each drained once', () => {
    const link = new MemoryLink({ mtu: 1500 });
    link.send(packet(1));
    link.sendMany([packet(2), packet(3)]);
    expect(link.drain().map(idOf)).toEqual([1, 2, 3]);
    expect(link.drain()).toEqual([]);
  });

  it('an echo over a pair: the reply comes back in the same order', async () => {
    const [client, server] = createMemoryLinkPair({ mtu: 1500 });
    server.onReceive((batch) => {
      const replies = copyOut(batch);
      for (const r of replies) r[2] = 0xee;
      server.sendMany(replies);
    });
    const back: number[] = [];
    client.onReceive((batch) => back.push(...copyOut(batch).map(idOf)));
    for (let i = 0; i < 5; i++) client.send(packet(i));
    await settle();
    expect(back).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('memory link pair: seeded faults', () => {
  async function run(faults: MemoryFaults, n = 1000): Promise<{ ids: number[]; corrupt: number; counts: object }> {
    const [a, b] = createMemoryLinkPair({ mtu: 1500, faults });
    const ids: number[] = [];
    let corrupt = 0;
    b.onReceive((batch) => {
      for (const p of copyOut(batch)) {
        const id = idOf(p);
        ids.push(id);
        if (id >= n || p.some((byte, i) => byte !== packet(id, 64)[i])) corrupt++;
      }
    });
    for (let i = 0; i < n; i++) {
      a.send(packet(i, 64));
      if (i % 37 === 0) await turn();
    }
    await settle();
    return { ids, corrupt, counts: { ...a.faultCounts } };
  }

  it('mulberry32 is deterministic and roughly uniform', () => {
    const r1 = mulberry32(42);
    const r2 = mulberry32(42);
    const xs = Array.from({ length: 10_000 }, () => r1());
    expect(xs.slice(0, 100)).toEqual(Array.from({ length: 100 }, () => r2()));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.48);
    expect(mean).toBeLessThan(0.52);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });

  it('the same seed gives the same run; another seed a different one', async () => {
    const faults = { loss: 0.1, reorder: 0.1, duplicate: 0.1, corrupt: 0.1, seed: 1234 };
    const first = await run(faults);
    const again = await run(faults);
    const other = await run({ ...faults, seed: 99 });
    expect(again).toEqual(first);
    expect(other.ids).not.toEqual(first.ids);
  });

  it('loss drops about the given share, and exactly what it counts', async () => {
    const r = await run({ loss: 0.2, seed: 7 });
    const lost = (r.counts as { lost: number }).lost;
    expect(r.ids.length).toBe(1000 - lost);
    expect(lost).toBeGreaterThan(140);
    expect(lost).toBeLessThan(260);
    expect(new Set(r.ids).size).toBe(r.ids.length); // no duplicates
    expect(r.ids).toEqual([...r.ids].sort((x, y) => x - y)); // no reordering
  });

  it('duplicate delivers the counted extra copies', async () => {
    const r = await run({ duplicate: 0.1, seed: 3 });
    const dup = (r.counts as { duplicated: number }).duplicated;
    expect(dup).toBeGreaterThan(50);
    expect(r.ids.length).toBe(1000 + dup);
    expect(new Set(r.ids).size).toBe(1000);
  });

  it('reorder swaps packets without losing any', async () => {
    const r = await run({ reorder: 0.1, seed: 5 });
    const reordered = (r.counts as { reordered: number }).reordered;
    expect(reordered).toBeGreaterThan(50);
    expect([...r.ids].sort((x, y) => x - y)).toEqual([...Array(1000).keys()]);
    let inversions = 0;
    for (let i = 1; i < r.ids.length; i++) if (r.ids[i] < r.ids[i - 1]) inversions++;
    expect(inversions).toBeGreaterThan(0);
    expect(inversions).toBeLessThanOrEqual(reordered);
  });

  it('corrupt flips one bit in the counted packets', async () => {
    const r = await run({ corrupt: 0.1, seed: 11 });
    const corrupted = (r.counts as { corrupted: number }).corrupted;
    expect(corrupted).toBeGreaterThan(50);
    expect(r.ids.length).toBe(1000);
    expect(r.corrupt).toBe(corrupted);
  });
});
