/**
 * Copies that outlive a packet buffer (RFC 9293 §3.10.7.4 keeps segment text "for later
 * processing"): received bytes must be copied out of the link's reused batch buffer, and a
 * segment that spans two written chunks needs one contiguous payload.
 *
 * A fresh `Uint8Array` per copy costs an ArrayBuffer allocation and a zero-fill before the
 * copy — measured at more than half of the per-segment cost. Instead small copies are carved
 * out of a shared slab (allocated uninitialized, every byte is overwritten before use) and
 * large ones get their own uninitialized buffer. A slab is never reused: it is released by
 * the garbage collector once no view into it is alive, so handed-out bytes stay valid.
 */

const SLAB_SIZE = 256 * 1024;
/** Copies larger than this get their own buffer. */
const LARGE = 16 * 1024;

let slab: ArrayBufferLike = new ArrayBuffer(0);
let slabOffset = 0;
let slabEnd = 0;
let used = 0;

/** `n` bytes of writable memory that the caller will fill completely. */
export function allocBytes(n: number): Uint8Array {
  if (n > LARGE) {
    const b = Buffer.allocUnsafeSlow(n);
    return new Uint8Array(b.buffer, b.byteOffset, n);
  }
  if (slabOffset + used + n > slabEnd) {
    const b = Buffer.allocUnsafeSlow(SLAB_SIZE);
    slab = b.buffer;
    slabOffset = b.byteOffset;
    slabEnd = b.byteOffset + b.length;
    used = 0;
  }
  // A plain Uint8Array view (not a Buffer): cheaper to create, same bytes.
  const out = new Uint8Array(slab, slabOffset + used, n);
  // Keep views 8-byte aligned, as a fresh allocation would be.
  used += (n + 7) & ~7;
  return out;
}

/** A copy of `src` that stays valid after `src` is reused. */
export function copyBytes(src: Uint8Array): Uint8Array {
  const out = allocBytes(src.length);
  out.set(src);
  return out;
}
