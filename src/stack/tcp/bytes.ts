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
 *
 * In-order received data is the exception (`copyRecyclable`): an upload moves a 64 KiB
 * super-packet per copy, and fresh memory for each (allocation, first-touch page faults,
 * garbage) cost more than the copy itself. Those copies are carved from 1 MiB slabs that come
 * back once every view carved from them was handed back with `releaseBytes` (the relay does
 * that when the socket write completed). A view that is never handed back only keeps its slab
 * from being reused: it is then left to the garbage collector like any other memory.
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

/** Slabs of recyclable copies: 1 MiB holds a full default receive window. */
const RECYCLE_SLAB = 1024 * 1024;
/** Free slabs kept for reuse; beyond this they go to the garbage collector. */
const RECYCLE_FREE_MAX = 16;

interface Slab {
  readonly buf: ArrayBuffer;
  /** Bytes carved so far. */
  used: number;
  /** Views carved and not handed back yet. */
  live: number;
  /** No more carving: reusable once live is 0. */
  full: boolean;
}

const slabOf = new WeakMap<ArrayBufferLike, Slab>();
const freeSlabs: Slab[] = [];
let carving: Slab | undefined;

function recycle(s: Slab): void {
  s.used = 0;
  s.live = 0;
  s.full = false;
  if (freeSlabs.length < RECYCLE_FREE_MAX) freeSlabs.push(s);
  else slabOf.delete(s.buf);
}

/**
 * A copy of `src` the consumer should hand back with `releaseBytes` once nothing reads it any
 * more (small and very large copies fall back to `copyBytes`; handing those back is a no-op).
 */
export function copyRecyclable(src: Uint8Array): Uint8Array {
  const n = src.length;
  if (n <= LARGE || n > RECYCLE_SLAB) return copyBytes(src);
  let s = carving;
  if (s === undefined || s.used + n > RECYCLE_SLAB) {
    if (s !== undefined) {
      s.full = true;
      if (s.live === 0) recycle(s);
    }
    s = freeSlabs.pop();
    if (s === undefined) {
      s = { buf: new ArrayBuffer(RECYCLE_SLAB), used: 0, live: 0, full: false };
      slabOf.set(s.buf, s);
    }
    carving = s;
  }
  const out = new Uint8Array(s.buf, s.used, n);
  out.set(src);
  s.used += (n + 7) & ~7;
  s.live++;
  return out;
}

/** Hand back a view from `copyRecyclable`, exactly once, when nothing reads it any more. */
export function releaseBytes(b: Uint8Array): void {
  const s = slabOf.get(b.buffer);
  if (s === undefined || s.live === 0) return;
  s.live--;
  if (s.live === 0 && s.full) recycle(s);
}
