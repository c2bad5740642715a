/**
 * The acceptance test: two of our connections (active ↔ passive) joined by a seeded lossy,
 * reordering, duplicating in-memory channel, driven by a simulated clock, transfer 50 MB each
 * way at the same time with byte-exact verification, then close cleanly.
 *
 * The channel: per direction a link of `RATE` bytes/ms with `DELAY` ms propagation; each
 * segment is lost with probability LOSS, duplicated with DUP, and with REORDER held back by an
 * extra 1-6 ms (so it arrives after later segments). The clock jumps to the earlier of the two
 * connections' pollAt() and the next delivery: no real time passes.
 */
import { describe, expect, it } from 'vitest';
import { TcpConnection, type TcpConnectionOptions, type TcpSegment } from '../../src/stack/tcp/index.js';
import { mulberry32 as rng } from '../helpers/random.js';

const MB = 1024 * 1024;
const PERIOD = 65521; // prime: a chunk misplaced by any offset < PERIOD does not match
const PAT = new Uint8Array(2 * PERIOD);
for (let i = 0; i < PAT.length; i++) PAT[i] = (Math.imul(i % PERIOD, 2654435761) >>> 23) & 0xff;

interface Flight {
  at: number;
  id: number;
  seg: TcpSegment;
}

/** A min-heap of segments in flight, by delivery time then send order. */
class Channel {
  private heap: Flight[] = [];
  private nextId = 0;
  private linkFree = 0;
  sent = 0;
  lost = 0;
  duplicated = 0;
  reordered = 0;

  constructor(
    private readonly rand: () => number,
    private readonly cfg: { loss: number; dup: number; reorder: number; delay: number; rate: number },
  ) {}

  push(now: number, seg: TcpSegment): void {
    this.sent++;
    const size = seg.payload.length + 52;
    const start = this.linkFree > now ? this.linkFree : now;
    this.linkFree = start + size / this.cfg.rate;
    if (this.rand() < this.cfg.loss) {
      this.lost++;
      return;
    }
    let at = this.linkFree + this.cfg.delay;
    if (this.rand() < this.cfg.reorder) {
      at += 1 + 5 * this.rand();
      this.reordered++;
    }
    this.add(at, seg);
    if (this.rand() < this.cfg.dup) {
      this.duplicated++;
      this.add(at + 0.5 * this.rand(), seg);
    }
  }

  get nextAt(): number {
    return this.heap.length > 0 ? this.heap[0].at : Infinity;
  }

  pop(): TcpSegment {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as Flight;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top.seg;
  }

  private add(at: number, seg: TcpSegment): void {
    const h = this.heap;
    h.push({ at, id: this.nextId++, seg });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private less(a: Flight, b: Flight): boolean {
    return a.at < b.at || (a.at === b.at && a.id < b.id);
  }
}

/** One application: writes TOTAL pattern bytes, verifies what it receives, then shuts down. */
class App {
  written = 0;
  received = 0;
  closed: string | undefined;
  peerFin = false;
  mismatch = -1;
  conn: TcpConnection | undefined;

  /** Delivered bytes the slow consumer has not taken yet. */
  unconsumed = 0;
  private lastTick = 0;

  constructor(
    private readonly total: number,
    /** Bytes per ms the application consumes; undefined: at once. */
    private readonly rate?: number,
  ) {}

  /** A slow consumer takes what its rate allows since the last tick. */
  tick(now: number): void {
    if (this.rate === undefined || this.unconsumed === 0) {
      this.lastTick = now;
      return;
    }
    const n = Math.min(this.unconsumed, Math.floor((now - this.lastTick) * this.rate));
    if (n <= 0) return;
    this.lastTick = now;
    this.unconsumed -= n;
    this.conn?.consumed(n);
  }

  readonly listener = {
    onEstablished: (): void => this.pump(),
    onWritable: (): void => this.pump(),
    onData: (chunk: Uint8Array): void => {
      const o = this.received % PERIOD;
      if (this.mismatch < 0 && Buffer.compare(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length), Buffer.from(PAT.buffer, o, chunk.length)) !== 0) {
        this.mismatch = this.received;
      }
      this.received += chunk.length;
      if (this.rate === undefined) this.conn?.consumed(chunk.length);
      else this.unconsumed += chunk.length;
    },
    onPeerFin: (): void => {
      this.peerFin = true;
    },
    onClosed: (reason: string): void => {
      this.closed = reason;
    },
  };

  pump(): void {
    const c = this.conn;
    if (c === undefined) return;
    while (this.written < this.total) {
      const o = this.written % PERIOD;
      const len = Math.min(PERIOD, this.total - this.written);
      const n = c.write(PAT.subarray(o, o + len));
      this.written += n;
      if (n < len) return;
    }
    c.shutdownWrite();
  }
}

function opts(iss: number, extra: Partial<TcpConnectionOptions> = {}): TcpConnectionOptions {
  return {
    iss,
    mss: 1460,
    rcvBufSize: 256 * 1024,
    sndBufSize: 256 * 1024,
    timeWaitMs: 2000,
    tsOffset: iss >>> 8,
    ...extra,
  };
}

interface SoakResult {
  a: App;
  b: App;
  ca: TcpConnection;
  cb: TcpConnection;
  ab: Channel;
  ba: Channel;
  simMs: number;
  steps: number;
}

function soak(
  total: number,
  seed: number,
  chan: { loss: number; dup: number; reorder: number; delay: number; rate: number },
  extra: Partial<TcpConnectionOptions> = {},
  consumeRate?: number,
  trace?: (what: string, now: number, seg: TcpSegment) => void,
): SoakResult {
  const rand = rng(seed);
  const ab = new Channel(rand, chan);
  const ba = new Channel(rand, chan);
  const a = new App(total, consumeRate);
  const b = new App(total, consumeRate);
  const TICK = 5;
  const ca = TcpConnection.connect(0, {
    ...opts(0xffff_0000, extra),
    localPort: 40000,
    remotePort: 443,
    listener: a.listener,
  });
  a.conn = ca;
  let cb: TcpConnection | undefined;
  let now = 0;
  let steps = 0;
  const toB = (s: TcpSegment): void => {
    trace?.('A>', now, s);
    ab.push(now, s);
  };
  const toA = (s: TcpSegment): void => {
    trace?.('B>', now, s);
    ba.push(now, s);
  };
  ca.poll(now, toB);
  for (;;) {
    if (a.closed !== undefined && b.closed !== undefined && ca.pollAt() === undefined && cb?.pollAt() === undefined) break;
    let next = Math.min(ab.nextAt, ba.nextAt);
    const pa = ca.pollAt();
    if (pa !== undefined && pa < next) next = pa;
    const pb = cb?.pollAt();
    if (pb !== undefined && pb < next) next = pb;
    if ((a.unconsumed > 0 || b.unconsumed > 0) && now + TICK < next) next = now + TICK;
    if (next === Infinity) throw new Error(`stuck at t=${now}: A ${ca.state} B ${cb?.state}`);
    if (next > now) now = next;
    if (++steps > 5_000_000) throw new Error('too many steps');
    while (ab.nextAt <= now) {
      const s = ab.pop();
      trace?.('>B', now, s);
      if (cb === undefined) {
        cb = TcpConnection.accept(now, s, { ...opts(0xfff0_0000, extra), listener: b.listener });
        b.conn = cb;
        cb.completeAccept(now);
      } else cb.input(now, s);
    }
    while (ba.nextAt <= now) {
      const s = ba.pop();
      trace?.('>A', now, s);
      ca.input(now, s);
    }
    a.tick(now);
    b.tick(now);
    ca.poll(now, toB);
    cb?.poll(now, toA);
    if (now > 3_600_000) throw new Error(`not done after an hour of simulated time: A ${ca.state} ${a.received} B ${cb?.state} ${b.received}`);
  }
  return { a, b, ca, cb: cb as TcpConnection, ab, ba, simMs: now, steps };
}

describe('soak: two connections over a lossy, reordering, duplicating channel', () => {
  it('transfers 50 MB each way at once, byte-exact, and closes cleanly', () => {
    const total = 50 * MB;
    const t0 = process.cpuUsage();
    const w0 = performance.now();
    const r = soak(total, 0x5eed, { loss: 0.05, dup: 0.01, reorder: 0.03, delay: 5, rate: 50_000 });
    const cpu = process.cpuUsage(t0);
    const wall = performance.now() - w0;
    const sa = r.ca.stats;
    const sb = r.cb.stats;
    console.log(
      `soak: 2×${total / MB} MB in ${(wall / 1000).toFixed(2)} s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s CPU; ` +
        `${(r.simMs / 1000).toFixed(1)} s simulated, ${r.steps} steps; ` +
        `A→B sent ${r.ab.sent} lost ${r.ab.lost} dup ${r.ab.duplicated} reordered ${r.ab.reordered}; ` +
        `A: retransmits ${sa.retransmits} fast ${sa.fastRetransmits} timeouts ${sa.timeouts} cwnd ${sa.cwnd} srtt ${sa.srtt.toFixed(1)}; ` +
        `B: retransmits ${sb.retransmits} fast ${sb.fastRetransmits} timeouts ${sb.timeouts}; PAWS drops ${sa.pawsDropped + sb.pawsDropped}, duplicates ${sa.duplicateIn + sb.duplicateIn}`,
    );
    expect(r.a.mismatch).toBe(-1);
    expect(r.b.mismatch).toBe(-1);
    expect(r.a.received).toBe(total);
    expect(r.b.received).toBe(total);
    expect(r.a.peerFin && r.b.peerFin).toBe(true);
    expect(r.a.closed).toBe('normal');
    expect(r.b.closed).toBe('normal');
    expect(r.ca.state).toBe('CLOSED');
    expect(r.cb.state).toBe('CLOSED');
    expect(sa.bytesOut).toBe(total);
    expect(sb.bytesIn).toBe(total);
  });

  it('with segmentation offload and slow consumers: zero windows under loss, still byte-exact', () => {
    const total = 4 * MB;
    const r = soak(
      total,
      0xbeef,
      { loss: 0.05, dup: 0.01, reorder: 0.03, delay: 5, rate: 50_000 },
      { maxSegmentPayload: 65535, rcvBufSize: 128 * 1024 },
      1000, // the applications drain 1 MB/s: far slower than the link
    );
    const sa = r.ca.stats;
    const sb = r.cb.stats;
    console.log(
      `soak (GSO, slow consumers): ${(r.simMs / 1000).toFixed(1)} s simulated, ${r.steps} steps; ` +
        `A: retransmits ${sa.retransmits} timeouts ${sa.timeouts}; B: retransmits ${sb.retransmits} timeouts ${sb.timeouts}`,
    );
    expect(r.a.mismatch).toBe(-1);
    expect(r.b.mismatch).toBe(-1);
    expect(r.a.received).toBe(total);
    expect(r.b.received).toBe(total);
    expect(r.a.closed).toBe('normal');
    expect(r.b.closed).toBe('normal');
    // Consumption-limited: ~4 s to drain 4 MB at 1 MB/s.
    expect(r.simMs).toBeGreaterThan(4000);
  });
});
