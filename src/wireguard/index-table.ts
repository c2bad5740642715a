/**
 * Session indices — WireGuard whitepaper §5.4.2: "Ii (sender index 4 bytes) is generated
 * randomly (p4) when this message is sent, and is used to tie subsequent replies to the
 * session begun by this message". Each handshake and each keypair is reachable from the
 * 32-bit index the other side puts in its receiver field; indices are random and unique within
 * one device (shared by all its peers). Index 0 is never handed out (it means "none" here).
 */
import type { RandomSource } from './keys.js';

export class IndexTable<T> {
  private readonly map = new Map<number, T>();

  constructor(private readonly random: RandomSource) {}

  /** A fresh random index that now belongs to `owner`. */
  allocate(owner: T): number {
    for (;;) {
      const b = this.random(4);
      const idx = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
      if (idx !== 0 && !this.map.has(idx)) {
        this.map.set(idx, owner);
        return idx;
      }
    }
  }

  get(index: number): T | undefined {
    return this.map.get(index);
  }

  /** Free an index (no-op for 0 or an unknown index). */
  release(index: number): void {
    if (index !== 0) this.map.delete(index);
  }

  get size(): number {
    return this.map.size;
  }
}
