/**
 * Replay protection — WireGuard whitepaper §5.4.6 (Subsequent Messages: Transport Data
 * Messages): "the receiver ... must use a sliding window to keep track of received message
 * counters", following RFC 6479 (IPsec Anti-Replay Algorithm without Bit Shifting), as
 * wireguard-go's `replay` package and the kernel's `counter_validate`.
 *
 * The bitmap is a ring of 64 blocks of 32 bits (2048 bits). Moving the window forward clears
 * whole blocks instead of shifting bits; one block is always the partly-filled newest one, so
 * the usable window is 2048 - 32 = 2016 counters behind the highest seen.
 *
 * Counters are 64-bit (bigint). `validate` is called only after the message authenticated, so
 * a forged counter never moves the window.
 */

const BLOCK_BIT_LOG = 5n; // 32-bit blocks
const BLOCK_BITS = 32;
const RING_BLOCKS = 64; // 2048 bits in all
/** How far behind the highest counter a message may still be accepted. */
export const REPLAY_WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS; // 2016
const WINDOW = BigInt(REPLAY_WINDOW_SIZE);
const RING_MASK = RING_BLOCKS - 1;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export class ReplayFilter {
  private last = 0n;
  private readonly ring = new Uint32Array(RING_BLOCKS);

  /** Forget everything (a new keypair starts with counter 0). */
  reset(): void {
    this.last = 0n;
    this.ring.fill(0);
  }

  /** The highest counter accepted so far. */
  get highest(): bigint {
    return this.last;
  }

  /**
   * Accept `counter` once: true if it is below `limit`, not older than the window and not seen
   * before (and marks it seen); false otherwise.
   */
  validate(counter: bigint, limit: bigint): boolean {
    if (counter >= limit || counter < 0n) return false;
    // Numbers are exact below 2^53, far beyond any real counter: the common path avoids
    // allocating bigints per packet. The bigint path handles the rest identically.
    if (counter <= MAX_SAFE && this.last <= MAX_SAFE) return this.validateSafe(counter, Number(counter));
    return this.validateBig(counter);
  }

  private validateSafe(counter: bigint, c: number): boolean {
    const last = Number(this.last);
    const indexBlock = Math.floor(c / BLOCK_BITS);
    if (c > last) {
      // Move the window forward: clear the blocks between the old newest block and the new one.
      const current = Math.floor(last / BLOCK_BITS);
      const n = Math.min(indexBlock - current, RING_BLOCKS);
      let i = (current + 1) % RING_BLOCKS;
      for (let k = 0; k < n; k++) {
        this.ring[i] = 0;
        i = (i + 1) & RING_MASK;
      }
      this.last = counter;
    } else if (last - c > REPLAY_WINDOW_SIZE) {
      return false; // behind the window
    }
    return this.testAndSet(indexBlock % RING_BLOCKS, c % BLOCK_BITS);
  }

  private validateBig(counter: bigint): boolean {
    const indexBlock = counter >> BLOCK_BIT_LOG;
    if (counter > this.last) {
      const current = this.last >> BLOCK_BIT_LOG;
      const diff = indexBlock - current;
      const n = diff > BigInt(RING_BLOCKS) ? RING_BLOCKS : Number(diff);
      let i = Number((current + 1n) & BigInt(RING_MASK));
      for (let k = 0; k < n; k++) {
        this.ring[i] = 0;
        i = (i + 1) & RING_MASK;
      }
      this.last = counter;
    } else if (this.last - counter > WINDOW) {
      return false;
    }
    return this.testAndSet(Number(indexBlock & BigInt(RING_MASK)), Number(counter & 31n));
  }

  private testAndSet(block: number, bitIndex: number): boolean {
    const bit = (1 << bitIndex) >>> 0;
    const old = this.ring[block];
    if ((old & bit) !== 0) return false;
    this.ring[block] = (old | bit) >>> 0;
    return true;
  }
}
