/**
 * The one PacketBatch implementation the links hand to their receivers: a view that is
 * refilled in place for every delivery, so a batch costs no allocation after warm-up.
 *
 * The in-memory links copy their queued packets in with `copyIn`; the TUN link points
 * `offsets`/`lengths` at the native reader's arrays, which fill its `buf` in place.
 */
import type { PacketBatch } from './link.js';

export class ReusedBatch implements PacketBatch {
  count = 0;

  /** `capacity`: entries of offsets/lengths made now (copyIn grows them when a batch is larger). */
  constructor(
    public buf: Buffer = Buffer.alloc(0),
    capacity = 0,
    public offsets: Uint32Array = new Uint32Array(capacity),
    public lengths: Uint32Array = new Uint32Array(capacity),
  ) {}

  /**
   * Copies `packets` back to back into `buf` (doubled, or grown to fit, when too small) and
   * makes them the batch; returns their total bytes.
   */
  copyIn(packets: readonly Uint8Array[]): number {
    let total = 0;
    for (const p of packets) total += p.byteLength;
    if (this.buf.length < total) this.buf = Buffer.alloc(Math.max(total, this.buf.length * 2));
    if (this.offsets.length < packets.length) {
      const size = Math.max(packets.length, this.offsets.length * 2);
      this.offsets = new Uint32Array(size);
      this.lengths = new Uint32Array(size);
    }
    let off = 0;
    for (let i = 0; i < packets.length; i++) {
      const p = packets[i];
      this.buf.set(p, off);
      this.offsets[i] = off;
      this.lengths[i] = p.byteLength;
      off += p.byteLength;
    }
    this.count = packets.length;
    return total;
  }
}
