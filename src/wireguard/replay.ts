/**
 * Replay protection — WireGuard whitepaper §5.4.6 (Subsequent Messages: Transport Data
 * Messages): "the receiver ... must use a sliding window to keep track of received message
 * counters", following RFC 6479 (IPsec Anti-Replay Algorithm without Bit Shifting), as
 * wireguard-go's `replay` package and the kernel's `counter_validate`.
 *
 * The bitmap is 2^13 bits: a ring of 128 words of 64 bits, the kernel's and wireguard-go's
 * size. Moving the window forward clears whole words instead of shifting bits; one word is
 * always the partly-filled newest one, so the usable window is 8192 - 64 = 8128 counters behind
 * the highest seen (a 2,016-counter window refused honest packets under heavy reordering at
 * speed: at 1 Mpps, 8,128 counters is ~8 ms of reordering).
 *
 * Each 64-bit word is stored as two 32-bit halves of a Uint32Array (low half first), so the
 * hot path works on numbers, not bigints; clearing a word clears both halves.
 *
 * Counters are 64-bit (bigint). `validate` is called only after the message authenticated, so
 * a forged counter never moves the window.
 */

const WORD_BIT_LOG = 6n; // 64-bit words
const WORD_BITS = 64;
const RING_WORDS = 128; // 8192 bits in all
/** How far behind the highest counter a message may still be accepted. */
export const REPLAY_WINDOW_SIZE = (RING_WORDS - 1) * WORD_BITS; // 8128
const WINDOW = BigInt(REPLAY_WINDOW_SIZE);
const RING_MASK = RING_WORDS - 1;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export class ReplayFilter {
  private last = 0n;
  /** Word w's low 32 bits at [2w], its high 32 bits at [2w + 1]. */
  private readonly ring = new Uint32Array(RING_WORDS * 2);

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
    const indexWord = Math.floor(c / WORD_BITS);
    if (c > last) {
      this.clearAhead(Math.floor(last / WORD_BITS), indexWord - Math.floor(last / WORD_BITS));
      this.last = counter;
    } else if (last - c > REPLAY_WINDOW_SIZE) {
      return false; // behind the window
    }
    return this.testAndSet(indexWord % RING_WORDS, c % WORD_BITS);
  }

  private validateBig(counter: bigint): boolean {
    const indexWord = counter >> WORD_BIT_LOG;
    if (counter > this.last) {
      const current = this.last >> WORD_BIT_LOG;
      const diff = indexWord - current;
      this.clearAhead(Number(current & BigInt(RING_MASK)), diff > BigInt(RING_WORDS) ? RING_WORDS : Number(diff));
      this.last = counter;
    } else if (this.last - counter > WINDOW) {
      return false;
    }
    return this.testAndSet(Number(indexWord & BigInt(RING_MASK)), Number(counter & 63n));
  }

  /** Move the window forward: clear the `count` words after word `current` (at most the ring). */
  private clearAhead(current: number, count: number): void {
    const n = Math.min(count, RING_WORDS);
    let w = (current + 1) & RING_MASK;
    for (let k = 0; k < n; k++) {
      this.ring[2 * w] = 0;
      this.ring[2 * w + 1] = 0;
      w = (w + 1) & RING_MASK;
    }
  }

  private testAndSet(word: number, bitIndex: number): boolean {
    const slot = 2 * word + (bitIndex >>> 5);
    const bit = (1 << (bitIndex & 31)) >>> 0;
    const old = this.ring[slot];
    if ((old & bit) !== 0) return false;
    this.ring[slot] = (old | bit) >>> 0;
    return true;
  }
}
