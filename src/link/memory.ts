/**
 * In-memory links for tests: no device, no root, deterministic.
 *
 *   const [a, b] = createMemoryLinkPair({ mtu: 1500, faults: { loss: 0.1, seed: 7 } });
 *   b.onReceive((batch) => …);   a.send(packet);   // b receives it on a later turn
 *
 *   const link = new MemoryLink({ mtu: 1500 });   // alone, for a stack under test:
 *   link.inject(packet);                          // as if it came from the device
 *   link.drain();                                 // → the packets the stack sent
 *
 * Packets are copied on send and delivered asynchronously (setImmediate), everything that
 * accumulated in one batch (at most `batchSize` per handler call), as PacketBatch views over
 * one reused buffer — the same contract as the TUN link. `flush()` delivers synchronously.
 * Faults apply to one direction each (what a link sends), drawn from a seeded PRNG, so a
 * failing run replays exactly.
 */
import { emptyLinkStats, type Link, type LinkStats, type ReceiveHandler } from './link.js';
import { ReusedBatch } from './reused-batch.js';

export interface MemoryFaults {
  /** Probability that a sent packet is dropped. */
  loss?: number;
  /** Probability that a sent packet is held back and delivered after the next one. */
  reorder?: number;
  /** Probability that a sent packet is delivered twice. */
  duplicate?: number;
  /** Probability that one random bit of a sent packet is flipped. */
  corrupt?: number;
  /** PRNG seed (any 32-bit integer): equal seeds and equal traffic give equal faults. */
  seed: number;
}

/** What the fault injector did to the packets this link sent. */
export interface FaultCounts {
  lost: number;
  reordered: number;
  duplicated: number;
  corrupted: number;
}

export interface MemoryLinkOptions {
  mtu: number;
  name?: string;
  /** Most packets per handler call (default 64). */
  batchSize?: number;
  faults?: MemoryFaults;
}

/** mulberry32: a tiny, well-mixed 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class MemoryLink implements Link {
  readonly name: string;
  readonly mtu: number;
  /** In-memory links carry plain IPv4 packets. */
  readonly vnetHdr = false;
  readonly stats: LinkStats = emptyLinkStats();
  readonly faultCounts: FaultCounts = { lost: 0, reordered: 0, duplicated: 0, corrupted: 0 };
  readonly batchSize: number;

  private peer: MemoryLink | undefined;
  private readonly faults: MemoryFaults | undefined;
  private readonly random: (() => number) | undefined;
  private held: Uint8Array | undefined; // a packet the reorder fault is holding back
  private inbox: Uint8Array[] = [];
  private outbox: Uint8Array[] = [];
  private handler: ReceiveHandler | undefined;
  private scheduled = false;
  private closed = false;
  private readonly batch: ReusedBatch;

  constructor(opts: MemoryLinkOptions) {
    this.mtu = opts.mtu;
    this.name = opts.name ?? 'mem0';
    this.batchSize = opts.batchSize ?? 64;
    this.batch = new ReusedBatch(Buffer.alloc(0), this.batchSize);
    this.faults = opts.faults;
    this.random = opts.faults !== undefined ? mulberry32(opts.faults.seed) : undefined;
  }

  /** Connects two links: what one sends, the other receives. */
  static connect(a: MemoryLink, b: MemoryLink): void {
    a.peer = b;
    b.peer = a;
  }

  onReceive(handler: ReceiveHandler): void {
    this.handler = handler;
    this.schedule();
  }

  /** Sends a copy of `packet` to the peer (through the faults), or to the outbox without one. Refuses packets over the MTU. */
  send(packet: Uint8Array): boolean {
    if (this.closed || packet.byteLength > this.mtu) {
      this.stats.txErrors++;
      return false;
    }
    this.stats.txPackets++;
    this.stats.txBytes += packet.byteLength;
    const copy = new Uint8Array(packet); // a copy (Buffer#slice would be a view)
    if (this.peer === undefined) {
      this.outbox.push(copy);
    } else {
      this.transmit(copy, this.peer);
    }
    return true;
  }

  sendMany(packets: readonly Uint8Array[]): number {
    let sent = 0;
    for (const p of packets) if (this.send(p)) sent++;
    return sent;
  }

  /** Queues a packet to be received by this link, as if the device had read it (no faults). */
  inject(packet: Uint8Array): void {
    if (this.closed) return;
    this.inbox.push(new Uint8Array(packet));
    this.schedule();
  }

  /** The packets sent since the last drain (only those not carried to a peer). */
  drain(): Uint8Array[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** Delivers everything queued for this link now, synchronously; returns the packet count. */
  flush(): number {
    this.scheduled = false;
    if (this.held !== undefined && this.peer !== undefined) {
      // Nothing followed the held-back packet: it goes out last.
      this.peer.enqueue(this.held);
      this.held = undefined;
    }
    let delivered = 0;
    try {
      while (this.handler !== undefined && !this.closed && this.inbox.length > 0) {
        const n = Math.min(this.inbox.length, this.batchSize);
        const packets = this.inbox.splice(0, n);
        this.fill(packets);
        delivered += n;
        this.handler(this.batch);
      }
    } finally {
      // A throwing handler must not strand the packets behind it.
      this.schedule();
    }
    return delivered;
  }

  close(): void {
    this.closed = true;
    this.handler = undefined;
    this.inbox = [];
    this.held = undefined;
  }

  private transmit(packet: Uint8Array, peer: MemoryLink): void {
    const f = this.faults;
    const random = this.random;
    if (f === undefined || random === undefined) {
      peer.enqueue(packet);
      return;
    }
    if (f.loss !== undefined && random() < f.loss) {
      this.faultCounts.lost++;
      return;
    }
    if (f.corrupt !== undefined && random() < f.corrupt && packet.byteLength > 0) {
      const bit = Math.floor(random() * packet.byteLength * 8);
      packet[bit >>> 3] ^= 1 << (bit & 7);
      this.faultCounts.corrupted++;
    }
    const copies = f.duplicate !== undefined && random() < f.duplicate ? 2 : 1;
    if (copies === 2) this.faultCounts.duplicated++;
    if (this.held === undefined && f.reorder !== undefined && random() < f.reorder) {
      this.faultCounts.reordered++;
      this.held = packet;
      if (copies === 2) peer.enqueue(new Uint8Array(packet));
      // The held packet leaves after the next one, or at this link's next flush.
      this.schedule();
      return;
    }
    peer.enqueue(packet);
    if (copies === 2) peer.enqueue(new Uint8Array(packet));
    if (this.held !== undefined) {
      peer.enqueue(this.held);
      this.held = undefined;
    }
  }

  private enqueue(packet: Uint8Array): void {
    if (this.closed) return;
    this.inbox.push(packet);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    if (this.inbox.length === 0 && this.held === undefined) return;
    this.scheduled = true;
    setImmediate(() => {
      if (this.scheduled) this.flush();
    });
  }

  /** Copies packets into the reused batch (its buffer grown when needed) and updates rx stats. */
  private fill(packets: Uint8Array[]): void {
    const total = this.batch.copyIn(packets);
    this.stats.rxPackets += packets.length;
    this.stats.rxBytes += total;
  }
}

/**
 * Two connected links: what `a` sends, `b` receives and vice versa. `faults` apply to both
 * directions, each with its own PRNG stream (b's seed is derived from a's).
 */
export function createMemoryLinkPair(opts: {
  mtu: number;
  batchSize?: number;
  faults?: MemoryFaults;
}): [MemoryLink, MemoryLink] {
  const base = { mtu: opts.mtu, batchSize: opts.batchSize };
  const a = new MemoryLink({ ...base, name: 'mem-a', faults: opts.faults });
  const b = new MemoryLink({
    ...base,
    name: 'mem-b',
    faults: opts.faults !== undefined ? { ...opts.faults, seed: (opts.faults.seed ^ 0x9e3779b9) >>> 0 } : undefined,
  });
  MemoryLink.connect(a, b);
  return [a, b];
}
