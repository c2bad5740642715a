/**
 * A Link whose "device" is a piece of code instead of a kernel interface: what the stack sends
 * goes to `transmit` (the tunnel server seals it to the peer that owns the destination), and
 * what that code hands to `deliver` (packets a tunnel decrypted) reaches the stack as batches.
 *
 *   stack ── send/sendMany ──► transmit(packet)          (synchronous; the bytes are only
 *                                                          borrowed for the call: copy to keep)
 *   stack ◄── PacketBatch ◄── deliver(packet) … flush()  (copied into one reused buffer,
 *                                                          delivered after the current I/O
 *                                                          turn, at most `batchSize` at once)
 *
 * Delivering the packets of one event-loop turn together is what lets the TCP relay write
 * everything a flow received in that turn with one writev (it corks until the batch returns),
 * exactly as with the TUN link's batched reads.
 */
import { emptyLinkStats, type Link, type LinkStats, type ReceiveHandler } from './link.js';
import { ReusedBatch } from './reused-batch.js';

export interface PacketPipeOptions {
  name: string;
  mtu: number;
  /** Carries one packet the stack sent; false when it could not (no route, queue full). */
  transmit: (packet: Uint8Array) => boolean;
  /** Most packets per handler call (default 64). */
  batchSize?: number;
}

/** Bytes queued for delivery beyond which a batch is delivered at once, without waiting for the turn to end. */
const MAX_QUEUED_BYTES = 1 << 20;

export class PacketPipe implements Link {
  readonly name: string;
  readonly mtu: number;
  /** Plain IPv4 packets, no virtio-net header. */
  readonly vnetHdr = false;
  /** rx: packets delivered to the stack; tx: packets the stack sent. */
  readonly stats: LinkStats = emptyLinkStats();
  private readonly transmit: (packet: Uint8Array) => boolean;
  private readonly batchSize: number;
  private readonly batch: ReusedBatch;
  private handler: ReceiveHandler | undefined;
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(opts: PacketPipeOptions) {
    this.name = opts.name;
    this.mtu = opts.mtu;
    this.transmit = opts.transmit;
    this.batchSize = Math.max(1, opts.batchSize ?? 64);
    this.batch = new ReusedBatch(Buffer.alloc(64 * 1024), this.batchSize);
  }

  onReceive(handler: ReceiveHandler): void {
    this.handler = handler;
    this.schedule();
  }

  send(packet: Uint8Array): boolean {
    if (this.closed || packet.byteLength > this.mtu || !this.transmit(packet)) {
      this.stats.txErrors++;
      return false;
    }
    this.stats.txPackets++;
    this.stats.txBytes += packet.byteLength;
    return true;
  }

  sendMany(packets: readonly Uint8Array[]): number {
    let sent = 0;
    for (const p of packets) if (this.send(p)) sent++;
    return sent;
  }

  /**
   * Queue one packet for the stack. The pipe keeps a reference until it copies the packet
   * into its batch buffer, so the caller must not reuse the bytes (a decrypted packet is fresh).
   */
  deliver(packet: Uint8Array): void {
    if (this.closed) return;
    this.queue.push(packet);
    this.queuedBytes += packet.byteLength;
    if (this.queuedBytes >= MAX_QUEUED_BYTES) this.flush();
    else this.schedule();
  }

  /** Deliver everything queued now, synchronously; returns the packet count. */
  flush(): number {
    if (this.immediate !== undefined) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    let delivered = 0;
    try {
      while (this.handler !== undefined && !this.closed && this.queue.length > 0) {
        const n = Math.min(this.queue.length, this.batchSize);
        const packets = this.queue.length === n ? this.queue : this.queue.slice(0, n);
        this.queue = this.queue.length === n ? [] : this.queue.slice(n);
        this.fill(packets);
        delivered += n;
        this.handler(this.batch);
      }
    } finally {
      // A throwing handler must not strand the packets behind it.
      if (this.queue.length === 0) this.queuedBytes = 0;
      this.schedule();
    }
    return delivered;
  }

  close(): void {
    this.closed = true;
    this.handler = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.immediate = undefined;
  }

  private schedule(): void {
    if (this.immediate !== undefined || this.closed || this.handler === undefined || this.queue.length === 0) return;
    this.immediate = setImmediate(this.runFlush);
  }

  private readonly runFlush = (): void => {
    this.immediate = undefined;
    this.flush();
  };

  private fill(packets: Uint8Array[]): void {
    const total = this.batch.copyIn(packets);
    this.queuedBytes -= total;
    this.stats.rxPackets += packets.length;
    this.stats.rxBytes += total;
  }
}
