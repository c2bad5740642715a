/**
 * DNS over TCP framing (RFC 1035 §4.2.2, RFC 7766 §8): each message on the stream is preceded
 * by its length as a 2-byte big-endian number. A TCP segment boundary means nothing: one read
 * may hold half a length prefix, or several messages, or the tail of one and the head of the
 * next.
 *
 * `DnsTcpReader` takes the stream's chunks as they come and hands out whole messages; it keeps
 * the chunks it was given (no copy) and copies only a message that spans two of them.
 * `frameDnsMessage` is the emit side. A length below a DNS header or above the reader's bound
 * cannot be resynchronised from (there is no marker to find the next message), so the reader
 * reports it once and the caller closes the stream.
 */
import { DNS_HEADER_LEN } from './message.js';

/** Bytes of the length prefix. */
export const DNS_TCP_PREFIX_LEN = 2;
/** The most a 2-byte prefix can announce. */
export const DNS_TCP_MAX_MESSAGE = 0xffff;

/** What `DnsTcpReader.next()` found. */
export type DnsTcpRead =
  /**
   * A whole message (without its prefix): a view into the chunk it lies in (valid while that
   * chunk is: a TCP stack may reuse a chunk once its bytes are consumed), or, when it spans
   * chunks, a copy of its own.
   */
  | { readonly kind: 'message'; readonly message: Uint8Array }
  /** Not a whole message yet: feed more. */
  | { readonly kind: 'more' }
  /** A length prefix that no DNS message can have (`length`): the stream is unusable. */
  | { readonly kind: 'malformed'; readonly length: number };

const MORE: DnsTcpRead = { kind: 'more' };

export class DnsTcpReader {
  /** The chunks not yet handed out, in order; `head` is how much of the first was used. */
  private readonly chunks: Uint8Array[] = [];
  private head = 0;
  private held = 0;
  private broken: DnsTcpRead | undefined;

  /** `maxMessage`: the largest message accepted (at most 65,535). */
  constructor(readonly maxMessage: number = DNS_TCP_MAX_MESSAGE) {
    if (!Number.isInteger(maxMessage) || maxMessage < DNS_HEADER_LEN || maxMessage > DNS_TCP_MAX_MESSAGE) {
      throw new RangeError(`maxMessage must be ${DNS_HEADER_LEN}..${DNS_TCP_MAX_MESSAGE}`);
    }
  }

  /** Bytes fed and not yet handed out as messages. */
  get buffered(): number {
    return this.held;
  }

  /** Append a chunk of the stream. The reader keeps it (no copy): do not reuse its buffer. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0 || this.broken !== undefined) return;
    this.chunks.push(chunk);
    this.held += chunk.length;
  }

  /**
   * The next whole message, 'more' when the stream holds none yet, or 'malformed' (from then
   * on always) after a length prefix outside [12, maxMessage].
   */
  next(): DnsTcpRead {
    if (this.broken !== undefined) return this.broken;
    if (this.held < DNS_TCP_PREFIX_LEN) return MORE;
    const length = (this.byteAt(0) << 8) | this.byteAt(1);
    if (length < DNS_HEADER_LEN || length > this.maxMessage) {
      this.broken = { kind: 'malformed', length };
      this.chunks.length = 0;
      this.head = 0;
      this.held = 0;
      return this.broken;
    }
    if (this.held < DNS_TCP_PREFIX_LEN + length) return MORE;
    const first = this.chunks[0];
    const start = this.head + DNS_TCP_PREFIX_LEN;
    let message: Uint8Array;
    if (first.length - start >= length) {
      // The usual case: the whole message sits in one chunk.
      message = first.subarray(start, start + length);
      this.skip(DNS_TCP_PREFIX_LEN + length);
    } else {
      this.skip(DNS_TCP_PREFIX_LEN);
      message = new Uint8Array(length);
      this.copyOut(message);
    }
    return { kind: 'message', message };
  }

  /** Byte `i` of what is held (i < held). */
  private byteAt(i: number): number {
    let off = this.head + i;
    for (const c of this.chunks) {
      if (off < c.length) return c[off];
      off -= c.length;
    }
    return 0;
  }

  /** Drop `n` held bytes from the front. */
  private skip(n: number): void {
    this.held -= n;
    while (n > 0) {
      const c = this.chunks[0];
      const left = c.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }

  /** Fill `out` from the front of what is held, dropping those bytes. */
  private copyOut(out: Uint8Array): void {
    let at = 0;
    while (at < out.length) {
      const c = this.chunks[0];
      const n = Math.min(c.length - this.head, out.length - at);
      out.set(c.subarray(this.head, this.head + n), at);
      at += n;
      this.skip(n);
    }
  }
}

/** `message` with its 2-byte length prefix, ready for the stream. */
export function frameDnsMessage(message: Uint8Array): Uint8Array {
  if (message.length > DNS_TCP_MAX_MESSAGE) throw new RangeError(`a DNS message over TCP is at most ${DNS_TCP_MAX_MESSAGE} bytes, not ${message.length}`);
  const out = new Uint8Array(DNS_TCP_PREFIX_LEN + message.length);
  out[0] = message.length >>> 8;
  out[1] = message.length & 0xff;
  out.set(message, DNS_TCP_PREFIX_LEN);
  return out;
}
