/**
 * RFC 9293 §3.3.1 (receive sequence space), §3.10.7.4 (segment acceptability; segment text;
 * FIN), §3.8.6.2.2 (receiver SWS avoidance), §3.8.6.3 / RFC 1122 §4.2.3.2 (delayed ACKs).
 *
 *                    1          2          3
 *                ----------|----------|----------
 *                       RCV.NXT    RCV.NXT
 *                                 +RCV.WND
 *    1 - old sequence numbers that have been acknowledged
 *    2 - sequence numbers allowed for new reception
 *    3 - future sequence numbers that are not yet allowed
 *
 * Positions are unwrapped and counted from the IRS (the SYN is 0, the first data byte 1).
 *
 * The window is the buffer minus what was delivered but not yet consumed by the application:
 * a slow consumer shrinks it to zero and memory stays bounded by `bufSize`. The right edge we
 * advertised never moves left (§3.8.6.2.2 "MUST NOT shrink"); it moves right only when it
 * can move by at least min(MSS, buffer/2) — the receiver side of SWS avoidance.
 *
 * ACK policy: in-order data is acknowledged at least every second full-sized segment or after
 * `delayedAckMs`; out-of-order data, data that fills a gap, duplicates, and FIN are
 * acknowledged at once (RFC 5681 §4.2). An "immediate" ACK is still sent from `poll()`, so a
 * batch of segments processed together is acknowledged once. One exception, as Linux makes it
 * (its "pingpong" mode on a FIN in ESTABLISHED): while our own side is still open
 * (receive()'s `delayFinAck`), the peer's FIN is acknowledged after `delayedAckMs`, so that
 * our FIN, which the relay sends as soon as the upstream closes too, carries that ACK: one
 * segment into the device instead of two, for every connection an app closes first.
 *
 * With a shared budget (`account`), `bufSize` is a ceiling: the buffer is what the account can
 * hold now (its floor plus what the pool gives). In-window bytes the pool cannot cover are
 * dropped as if beyond the window (the peer sends them again), and the next ACK advertises
 * the smaller window, moving the right edge left if it must (RFC 9293 §3.8.6.2.2 lets a
 * receiver shrink the window; the sender "MUST be robust" against it). Memory is then
 * bounded by the budget, not by bufSize times the flows.
 */

import type { BufferAccount } from './buffer-account.js';
import { Reassembly } from './reassembly.js';
import { recvSlabs, type RecvSlab } from './recv-slabs.js';
import { EMPTY_PAYLOAD } from './segment.js';
import type { TcpListener } from './types.js';

export class Receiver {
  /** Initial receive sequence number (wire value). */
  irs = 0;
  /** RCV.NXT (unwrapped). */
  nxt = 0;
  /** RCV.NXT + RCV.WND as last advertised (unwrapped). */
  advRight = 0;
  /** Our window scale shift (RCV.WIND.SHIFT). */
  wscale = 0;
  /** Bytes delivered to the application and not yet consumed. */
  unconsumed = 0;
  /** Expected size of the peer's full segments (for the ACK-every-2 rule and SWS). */
  mss = 536;
  /** The peer's FIN was consumed. */
  finReceived = false;
  /** A FIN seen beyond a gap (unwrapped position), or -1. */
  finAt = -1;
  /** An ACK must go out at the next poll. */
  ackNow = false;
  /** Delayed-ACK deadline, or Infinity. */
  delAckAt = Infinity;
  /** RCV.NXT when we last sent an ACK (RFC 7323 Last.ACK.sent). */
  lastAckSent = 0;
  /** The connection closed: deliver nothing more. */
  stopped = false;
  /** Upper bound for the segment-size estimate (our own MSS). */
  mssCap = 65535;
  bytesIn = 0;
  outOfOrderIn = 0;
  duplicateIn = 0;
  /** Segments (or parts) dropped because the shared budget could not hold them. */
  pressured = 0;

  readonly ooo: Reassembly;
  /**
   * Delivered chunks not yet consumed, oldest first, with the slab each was copied into
   * (undefined: not a slab copy). consumed() releases a slab copy once all its bytes are.
   * Made on first use and emptied (not dropped) when drained: a request/response flow makes
   * no new arrays per exchange, and an idle one keeps two empty arrays, no elements.
   */
  private chunkSlabs: Array<RecvSlab | undefined> | undefined = undefined;
  private chunkLens: number[] | undefined = undefined;
  private chunkHead = 0;
  /** Bytes of the oldest chunk already consumed. */
  private headDone = 0;
  private bytesSinceAck = 0;
  private scale = 1;

  constructor(
    readonly bufSize: number,
    private readonly delayedAckMs: number,
    private readonly copyInput: boolean,
    /** The share of a shared budget this buffer draws from, or undefined: bufSize is its own. */
    private readonly account: BufferAccount | undefined = undefined,
  ) {
    this.ooo = new Reassembly(bufSize);
  }

  /** The buffer's size now: bufSize, or less when the shared budget cannot cover it. */
  private size(): number {
    const a = this.account;
    if (a === undefined) return this.bufSize;
    const l = a.limit();
    return l < this.bufSize ? l : this.bufSize;
  }

  /** Bytes held: delivered and not consumed, and out of order. */
  get held(): number {
    return this.unconsumed + this.ooo.byteCount;
  }

  /** Report what is held to the budget and give back what is no longer needed. */
  private settle(): void {
    this.account?.settle(this.unconsumed + this.ooo.byteCount);
  }

  /** The connection closed: its share of the budget goes back. */
  release(): void {
    this.account?.release();
  }

  /** The window field of our SYN / SYN-ACK (never scaled, RFC 7323 §2.2). */
  synWindow(): number {
    const w = this.size() - this.unconsumed;
    return w > 65535 ? 65535 : w < 0 ? 0 : w;
  }

  /** The peer's SYN arrived: RCV.NXT = IRS + 1, and the SYN window we sent (or will send) applies. */
  init(irs: number, wscale: number, synWindow: number): void {
    this.irs = irs;
    this.nxt = 1;
    this.lastAckSent = 1;
    this.advRight = 1 + synWindow;
    this.wscale = wscale;
    this.scale = 2 ** wscale;
  }

  /** RCV.WND as last advertised. */
  get window(): number {
    const w = this.advRight - this.nxt;
    return w > 0 ? w : 0;
  }

  /** RFC 9293 §3.10.7.4, the four acceptability cases (positions unwrapped). */
  acceptable(seg: number, len: number): boolean {
    const nxt = this.nxt;
    const wnd = this.window;
    // Zero window: only a segment at exactly RCV.NXT — for its ACK and RST (the RFC's "special
    // allowance"), a probe is answered, its data dropped; a bare FIN is taken, as Linux does.
    if (wnd === 0) return seg === nxt;
    if (len === 0) return seg >= nxt && seg < nxt + wnd;
    return seg < nxt + wnd && seg + len > nxt;
  }

  /**
   * Segment text and FIN (states ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2). Trims to the window,
   * delivers what is in order, holds what is not. Returns true when the peer's FIN was
   * consumed by this segment (or by the data it completed). `delayFinAck`: our side is still
   * open, so that FIN's ACK may wait for our own FIN (see the ACK policy above).
   */
  receive(now: number, seg: number, payload: Uint8Array, fin: boolean, listener: TcpListener | undefined, delayFinAck: boolean): boolean {
    let start = seg;
    let data = payload;
    const finPos = seg + payload.length;
    if (start < this.nxt) {
      const d = this.nxt - start;
      data = d >= data.length ? EMPTY_PAYLOAD : data.subarray(d);
      start = this.nxt;
    }
    const right = this.advRight > this.nxt ? this.advRight : this.nxt;
    if (start + data.length > right) {
      const keep = right - start;
      data = keep > 0 ? data.subarray(0, keep) : EMPTY_PAYLOAD;
      fin = false;
    }
    if (data.length === 0) {
      if (payload.length > 0) {
        this.duplicateIn++;
        this.ackNow = true;
      }
    } else if (start === this.nxt) {
      if (data.length > this.mss && data.length <= this.mssCap) this.mss = data.length;
      if (this.account !== undefined) {
        const n = this.account.room(this.unconsumed + this.ooo.byteCount, data.length);
        if (n < data.length) {
          // The budget is spent: hold what it covers, the peer resends the rest.
          data = data.subarray(0, n);
          fin = false;
          this.ackNow = true;
          this.pressured++;
          if (n === 0) {
            this.settle();
            return false;
          }
        }
      }
      if (this.copyInput) {
        const copy = recvSlabs.copy(data);
        this.track(recvSlabs.lastSlab, copy.length);
        this.deliver(copy, listener);
      } else this.deliver(data, listener);
      if (!this.ooo.isEmpty) {
        // Filled (part of) a gap: acknowledge at once, with what is still missing.
        this.ackNow = true;
        for (let r = this.ooo.take(this.nxt); r !== undefined && !this.stopped; r = this.ooo.take(this.nxt)) {
          for (const c of r.chunks) {
            if (this.copyInput) this.track(undefined, c.length);
            this.deliver(c, listener);
          }
        }
      } else {
        this.bytesSinceAck += data.length;
        if (this.bytesSinceAck >= 2 * this.mss || this.delayedAckMs <= 0) this.ackNow = true;
        else if (this.delAckAt === Infinity) this.delAckAt = now + this.delayedAckMs;
      }
    } else {
      this.outOfOrderIn++;
      const a = this.account;
      if (a !== undefined) {
        // Out-of-order bytes are held too: the queue takes only what the budget covers.
        const held = this.unconsumed + this.ooo.byteCount;
        const n = a.room(held, data.length);
        if (n < data.length) this.pressured++;
        this.ooo.capacity = this.ooo.byteCount + n;
      }
      if (this.ooo.insert(start, data, this.copyInput) === 0) this.duplicateIn++;
      this.ackNow = true;
    }
    this.settle();
    if (fin) {
      if (finPos === this.nxt) return this.consumeFin(now, delayFinAck);
      if (finPos > this.nxt) this.finAt = finPos;
    }
    if (this.finAt === this.nxt) return this.consumeFin(now, delayFinAck);
    return false;
  }

  /**
   * The window field for an outgoing ACK; records what was advertised and clears the pending
   * ACK state (every segment we send carries the ACK).
   */
  advertise(): number {
    let avail = this.size() - this.unconsumed;
    if (avail < 0) avail = 0;
    const cur = this.window;
    const scale = this.scale;
    let field: number;
    if (this.account !== undefined && avail < cur) {
      // The budget no longer covers the window we offered: offer what it covers (shrink).
      field = Math.floor(avail / scale);
      if (field > 65535) field = 65535;
      this.advRight = this.nxt + field * scale;
    } else {
      const wnd = avail > cur && avail - cur >= this.swsThreshold() ? avail : cur;
      field = Math.floor(wnd / scale);
      const keep = Math.ceil(cur / scale);
      if (field < keep) field = keep;
      if (field > 65535) field = 65535;
      const right = this.nxt + field * scale;
      if (right > this.advRight) this.advRight = right;
    }
    this.lastAckSent = this.nxt;
    this.ackNow = false;
    this.delAckAt = Infinity;
    this.bytesSinceAck = 0;
    return field;
  }

  /**
   * The application consumed `n` delivered bytes. Returns true when the window opened enough
   * that the peer should hear about it now (a window update): by at least min(MSS, buffer/2),
   * and either from below one MSS (a closed window) or to at least twice what is left once the
   * peer has used half of what we last offered. Without that last condition the first bytes
   * of every connection whose buffer exceeds the SYN's unscaled 64 KiB would cost a pure ACK
   * (64 KiB - 32 left, 256 KiB free): the next ACK or data segment says it soon enough, and a
   * peer with half its window left is not waiting for it.
   */
  consumed(n: number): boolean {
    if (this.chunkLens !== undefined && this.chunkSlabs !== undefined) this.releaseChunks(n, this.chunkLens, this.chunkSlabs);
    this.unconsumed -= n;
    if (this.unconsumed < 0) this.unconsumed = 0;
    this.settle();
    if (this.finReceived) return false;
    const avail = this.size() - this.unconsumed;
    const cur = this.window;
    if (avail - cur >= this.swsThreshold() && (cur < this.mss || (avail >= 2 * cur && 2 * cur <= this.advRight - this.lastAckSent))) {
      this.ackNow = true;
      return true;
    }
    return false;
  }

  /** SACK blocks to report (unwrapped [start, end)), most recent first. */
  sackBlocks(max: number): Array<[number, number]> {
    return this.ooo.sackBlocks(max);
  }

  private swsThreshold(): number {
    const half = this.bufSize >>> 1;
    return this.mss < half ? this.mss : half;
  }

  /** A chunk about to be delivered, in order: its bytes and the slab its copy lives in. */
  private track(slab: RecvSlab | undefined, len: number): void {
    (this.chunkLens ??= []).push(len);
    (this.chunkSlabs ??= []).push(slab);
  }

  /** `n` more delivered bytes were consumed: release every chunk they complete. */
  private releaseChunks(n: number, lens: number[], slabs: Array<RecvSlab | undefined>): void {
    let left = n + this.headDone;
    let i = this.chunkHead;
    while (i < lens.length && left >= lens[i]) {
      left -= lens[i];
      const slab = slabs[i];
      if (slab !== undefined) {
        slabs[i] = undefined;
        recvSlabs.release(slab);
      }
      i++;
    }
    if (i === lens.length) {
      // Drained: empty the lists (length 0 lets their elements go). Bytes consumed beyond
      // what was delivered and tracked (none should be) are forgotten with them.
      lens.length = 0;
      slabs.length = 0;
      this.chunkHead = 0;
      this.headDone = 0;
      return;
    }
    this.headDone = left;
    this.chunkHead = i;
    if (i > 1024 && i * 2 > lens.length) {
      lens.splice(0, i);
      slabs.splice(0, i);
      this.chunkHead = 0;
    }
  }

  private deliver(chunk: Uint8Array, listener: TcpListener | undefined): void {
    if (this.stopped) return; // the application aborted during an earlier chunk
    this.nxt += chunk.length;
    this.unconsumed += chunk.length;
    this.bytesIn += chunk.length;
    listener?.onData?.(chunk);
  }

  private consumeFin(now: number, delayAck: boolean): boolean {
    this.nxt++;
    this.finAt = -1;
    this.finReceived = true;
    if (delayAck && this.delayedAckMs > 0) {
      if (this.delAckAt === Infinity) this.delAckAt = now + this.delayedAckMs;
    } else this.ackNow = true;
    return true;
  }
}
