/**
 * The internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * The checksum is the 16-bit ones'-complement of the ones'-complement sum of the data taken as
 * big-endian 16-bit words (an odd trailing byte is padded with a zero low byte):
 *
 *     sum      = w0 +' w1 +' ... +' wN        (+' is addition with end-around carry)
 *     checksum = ~sum & 0xffff
 *
 * A receiver sums the data *including* the checksum field; the result is 0xffff when it is
 * intact. Three of the properties listed in RFC 1071 §2 make it fast here:
 *   - (A) it is commutative and associative, so words can be added in any order, and a
 *     partial sum can be carried into the next one (`initial`: pseudo-header + segment);
 *   - (B) it is byte-order independent: summing byte-swapped words gives the byte-swapped sum,
 *     so 32-bit little-endian loads can be summed and the result swapped once;
 *   - (E) carries can be deferred: add in a wider accumulator and fold them back at the end.
 *
 * Sums returned here are folded to 16 bits and NOT inverted: 0x0000 only for all-zero input.
 */

/** True on little-endian hosts (every platform Node supports in practice). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Below this length the byte loop beats the 32-bit path (set-up cost of alignment). */
const SMALL = 64;

/** Fold carries of `s` (a non-negative integer below 2^53) into 16 bits, end-around. */
export function foldSum(s: number): number {
  while (s > 0xffff) {
    s = s > 0xffffffff ? (s % 0x10000) + Math.floor(s / 0x10000) : (s & 0xffff) + (s >>> 16);
  }
  return s;
}

/** Fold to 16 bits and invert: the value that goes into a checksum field. */
export function foldComplement(s: number): number {
  return ~foldSum(s) & 0xffff;
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

// One-entry cache of a Uint32Array over the last ArrayBuffer seen: packets of a batch share one
// buffer, so the 32-bit view is created once per buffer, not once per packet.
let cachedBuffer: ArrayBufferLike | undefined;
let cachedWords: Uint32Array = new Uint32Array(0);

function wordsOf(ab: ArrayBufferLike, lastWord: number): Uint32Array {
  if (ab !== cachedBuffer || cachedWords.length <= lastWord) {
    cachedBuffer = ab;
    cachedWords = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  }
  return cachedWords;
}

function sumBytes(buf: Uint8Array, off: number, len: number, s: number): number {
  const end = off + len;
  const evenEnd = end - (len & 1);
  let i = off;
  for (; i < evenEnd; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i < end) s += buf[i] << 8;
  return s;
}

/**
 * Plain sum of words[w..wEnd) as a double (exact below 2^53). Two accumulators and pairwise
 * adds keep the floating-point dependency chain short.
 */
function sumWords(words: Uint32Array, w: number, wEnd: number): number {
  let m = 0;
  let n = 0;
  const end16 = w + ((wEnd - w) & ~15);
  for (; w < end16; w += 16) {
    m += (words[w] + words[w + 1] + (words[w + 2] + words[w + 3])) +
      (words[w + 4] + words[w + 5] + (words[w + 6] + words[w + 7]));
    n += (words[w + 8] + words[w + 9] + (words[w + 10] + words[w + 11])) +
      (words[w + 12] + words[w + 13] + (words[w + 14] + words[w + 15]));
  }
  for (; w < wEnd; w++) m += words[w];
  return m + n;
}

/**
 * Ones'-complement sum of `len` bytes at `buf[off]`, plus `initial`, folded to 16 bits, not
 * inverted. Any offset and length (odd lengths are zero-padded). The range must lie inside
 * `buf`; callers pass ranges they have validated.
 */
export function sum16(buf: Uint8Array, off: number, len: number, initial = 0): number {
  if (len < SMALL) return foldSum(sumBytes(buf, off, len, initial));

  const abs = buf.byteOffset + off;
  // Leading bytes up to a 4-byte boundary of the underlying ArrayBuffer (0..3 of them).
  const lead = (4 - (abs & 3)) & 3;
  let s = initial;
  for (let j = 0; j < lead; j++) s += j & 1 ? buf[off + j] : buf[off + j] << 8;

  const nWords = (len - lead) >>> 2;
  let w = (abs + lead) >>> 2;
  const wEnd = w + nWords;
  const words = wordsOf(buf.buffer, wEnd - 1);
  let m = 0;
  while (w < wEnd) {
    // A double holds 2^53 exactly: fold at least every 2^20 words (4 MiB) of 32-bit addends.
    const chunkEnd = Math.min(wEnd, w + 0x100000);
    m = foldSum(m + sumWords(words, w, chunkEnd));
    w = chunkEnd;
  }
  // m now pairs bytes as the host loaded them, starting at an aligned address. On a
  // little-endian host that is the byte-swapped aligned sum (property B); an odd `lead`
  // shifts the packet's own pairing by one byte, which is one more swap.
  const aligned = LITTLE_ENDIAN ? swap16(m) : m;
  s += lead & 1 ? swap16(aligned) : aligned;

  for (let j = lead + nWords * 4; j < len; j++) s += j & 1 ? buf[off + j] : buf[off + j] << 8;
  return foldSum(s);
}

/** The RFC 1071 checksum of a byte range: `~sum16 & 0xffff`. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~sum16(buf, off, len, initial) & 0xffff;
}

/**
 * Sum of the IPv4 pseudo-header used by TCP and UDP (RFC 9293 §3.1, RFC 768):
 *
 *     +--------+--------+--------+--------+
 *     |           Source Address          |
 *     +--------+--------+--------+--------+
 *     |         Destination Address       |
 *     +--------+--------+--------+--------+
 *     |  zero  |  PTCL  |    TCP Length   |
 *     +--------+--------+--------+--------+
 *
 * Addresses as uint32, `length` is the transport header plus payload. Folded, not inverted:
 * pass it as `initial` to `sum16` over the segment.
 */
export function pseudoHeaderSum(src: number, dst: number, proto: number, length: number): number {
  return foldSum(
    (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + (proto & 0xff) + (length & 0xffff),
  );
}

/**
 * Update a checksum field after one 16-bit word of the covered data changed from `oldWord` to
 * `newWord`, per RFC 1624 eq. 3: HC' = ~(~HC + ~m + m'). Unlike RFC 1141's HC + m + ~m',
 * it gives 0x0000, as a full recompute does, where the new sum is all ones (RFC 1624 §3).
 */
export function checksumAdjust(checksum: number, oldWord: number, newWord: number): number {
  const s = (~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~foldSum(s) & 0xffff;
}

/** As `checksumAdjust` for a 32-bit field (an IPv4 address, a sequence number). */
export function checksumAdjust32(checksum: number, old32: number, new32: number): number {
  const s =
    (~checksum & 0xffff) +
    (0xffff - (old32 >>> 16)) + (0xffff - (old32 & 0xffff)) +
    (new32 >>> 16) + (new32 & 0xffff);
  return ~foldSum(s) & 0xffff;
}

/**
 * Complete a partial checksum (CHECKSUM_PARTIAL / virtio `NEEDS_CSUM`): the field at
 * `buf[fieldOff]` already holds the folded pseudo-header sum; the sender left the rest to us.
 * Sums `len` bytes from `start` (the transport header) and stores the final checksum.
 */
export function completePartialChecksum(buf: Uint8Array, start: number, len: number, fieldOff: number): void {
  const c = internetChecksum(buf, start, len);
  buf[fieldOff] = c >>> 8;
  buf[fieldOff + 1] = c & 0xff;
}

// ---------------------------------------------------------------------------------------------
// Big-endian field access shared by the wire views (network byte order, no bounds checks: the
// views validate before they read).

export function getU16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}
/** As uint32 (`>>> 0`). */
export function getU32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}
export function setU16(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 8;
  b[i + 1] = v;
}
export function setU32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = v >>> 16;
  b[i + 2] = v >>> 8;
  b[i + 3] = v;
}
