/**
 * RFC 9293 §3.8 (data communication: §3.8.1 retransmission timeout, §3.8.6 window management,
 * §3.8.6.1 zero-window probing, §3.8.6.2.1 sender SWS avoidance) and §3.10.7.4 (the ACK
 * field), with RFC 6298 (RTO), RFC 5681/6582 (NewReno), RFC 6675 (SACK loss recovery).
 *
 * Positions are unwrapped, counted from the ISS: the SYN is 0, data byte k of the stream is
 * 1 + k, our FIN follows the last data byte. SND.UNA ≤ SND.NXT ≤ SND.MAX, where SND.MAX is the
 * highest position ever sent; after a timeout SND.NXT is pulled back to SND.UNA (go-back-N,
 * the BSD way) and the data is sent again as the congestion window allows.
 *
 * Transmission order in `output()`: (1) the segment at SND.UNA when a fast retransmit or a
 * NewReno partial ACK asked for it; (2) in SACK recovery, the holes below the highest SACKed
 * byte, while pipe < cwnd; (3) new data (or go-back-N data) from SND.NXT, limited by the peer's
 * window, cwnd and the sender SWS rule. Nagle is off (tunroute relays streams: every write
 * is "pushed"); SWS avoidance still holds back a runt segment that the window cuts short.
 *
 * Zero window: when nothing is outstanding and the window stops us, the persist timer runs.
 * On expiry it sends what the window allows if anything (the SWS override), else a probe with
 * SEG.SEQ = SND.UNA - 1 and no data (as Linux does), which any receiver answers with an ACK
 * carrying its window. The interval backs off exponentially up to the maximum RTO; the probe
 * count is reset by every ACK, so a peer that keeps answering keeps the connection alive.
 */

import { Congestion } from './congestion.js';
import { RttEstimator, type RttConfig } from './rtt.js';
import { SackScoreboard } from './sack-scoreboard.js';
import { ACK, EMPTY_PAYLOAD, FIN, PSH, SYN, type TcpSegment } from './segment.js';
import type { BufferAccount } from './buffer-account.js';
import { SendBuffer, type SliceMode } from './send-buffer.js';
import { seqUnwrap } from './seq.js';

/** Where the sender's segments go: the connection fills in the ACK, window and options. */
export interface SegmentSink {
  /** `tail`: the payload's second piece, when the send buffer hands it out in two ('split'). */
  sendSegment(flags: number, seq: number, payload: Uint8Array, tail?: Uint8Array): void;
  /** Option bytes the next segment will carry beyond the timestamps (SACK blocks). */
  optionOverhead(): number;
}

export const ACK_OK = 0;
/** The ACK acknowledges something not yet sent: send an ACK, drop the segment. */
export const ACK_AHEAD = 1;
/** The ACK is older than SND.UNA - MAX.SND.WND (RFC 5961 §5.2): send an ACK, drop. */
export const ACK_OLD = 2;

const DUP_THRESH = 3;

export class Sender {
  una = 0;
  nxt = 0;
  max = 0;
  /** SND.WND in bytes (scaled). */
  wnd = 0;
  wl1 = 0;
  wl2 = 0;
  /** The largest window the peer ever offered (for SWS and RFC 5961). */
  maxWnd = 0;
  /** Payload bytes per full-sized segment. */
  mss = 536;
  /** Payload bytes per emitted segment (≥ mss with segmentation offload). */
  maxSeg = 536;
  finQueued = false;
  sackOk = false;

  readonly buf: SendBuffer;
  readonly cc: Congestion;
  readonly sb = new SackScoreboard();
  readonly rtt: RttEstimator;

  rtoAt = Infinity;
  /** Retransmissions since the last ACK of new data. */
  retries = 0;
  persistAt = Infinity;
  /** Zero-window probes since the last ACK. */
  probesOut = 0;
  dupAcks = 0;

  bytesOut = 0;
  retransmits = 0;
  fastRetransmits = 0;
  timeouts = 0;
  dupAcksIn = 0;

  private highRxt = 0;
  private rexmitUna = false;
  private forceOne = false;
  private overrideSws = false;
  private persistBackoffs = 0;
  private lastSendAt = -1;
  private readonly maxRtoMs: number;

  constructor(
    readonly iss: number,
    bufSize: number,
    rttCfg: RttConfig,
    iwSegments: number,
    slices: SliceMode = 'keep',
    account: BufferAccount | undefined = undefined,
  ) {
    this.buf = new SendBuffer(bufSize, slices, account);
    this.rtt = new RttEstimator(rttCfg);
    this.cc = new Congestion(this.mss, iwSegments);
    this.maxRtoMs = rttCfg.maxRtoMs;
  }

  /** Position just past the last byte written. */
  get dataEnd(): number {
    return 1 + this.buf.end;
  }

  /** All data and our FIN are acknowledged. */
  get finAcked(): boolean {
    return this.finQueued && this.una === 2 + this.buf.end;
  }

  /** Something is sent and not yet acknowledged. */
  get outstanding(): boolean {
    return this.una < this.max;
  }

  /** Something is written (or a FIN queued) and not yet sent. */
  get pending(): boolean {
    return this.nxt < this.dataEnd + (this.finQueued ? 1 : 0);
  }

  /** The SYN exchange fixed the segment size. */
  setMss(mss: number, maxSegmentPayload: number): void {
    if (maxSegmentPayload < mss) mss = maxSegmentPayload;
    this.mss = mss;
    this.maxSeg = maxSegmentPayload > mss ? Math.floor(maxSegmentPayload / mss) * mss : mss;
    this.cc.setMss(mss);
  }

  /** The SYN (or SYN-ACK) went out at `now`. */
  synSent(now: number, first: boolean): void {
    if (this.nxt < 1) this.nxt = 1;
    if (this.max < 1) this.max = 1;
    if (first) this.rtt.startTiming(1, now);
    else this.rtt.invalidateTiming();
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
    this.lastSendAt = now;
  }

  /**
   * RFC 9293 §3.10.7.4 "fifth, check the ACK field" for a synchronized connection (and the
   * ACK of a SYN-ACK). `segSeq`: the segment's unwrapped receive-space position (for the
   * SND.WL1 rule); `wnd`: the offered window in bytes (scaled, except in a SYN-ACK);
   * `tsRtt`: an RTT sample from the echoed timestamp, or -1 without timestamps.
   */
  ack(now: number, seg: TcpSegment, segSeq: number, wnd: number, tsRtt: number): number {
    const ackPos = seqUnwrap(this.iss, this.una, seg.ack);
    if (ackPos > this.max) return ACK_AHEAD;
    if (ackPos < this.una - this.maxWnd) return ACK_OLD;
    this.probesOut = 0;
    let windowChanged = false;
    if (ackPos >= this.una && (this.wl1 < segSeq || (this.wl1 === segSeq && this.wl2 <= ackPos))) {
      windowChanged = wnd !== this.wnd;
      this.wnd = wnd;
      this.wl1 = segSeq;
      this.wl2 = ackPos;
      if (wnd > this.maxWnd) this.maxWnd = wnd;
      if (wnd > 0 && this.persistAt !== Infinity) {
        this.persistAt = Infinity;
        this.persistBackoffs = 0;
      }
    }
    let newlySacked = 0;
    const blocks = seg.options.sack;
    if (this.sackOk && blocks !== undefined && ackPos >= this.una) {
      for (let i = 0; i < blocks.length; i++) {
        const b = blocks[i];
        let s = seqUnwrap(this.iss, ackPos, b[0]);
        const e = seqUnwrap(this.iss, ackPos, b[1]);
        // Blocks at or below the cumulative ACK are D-SACKs (RFC 2883); they change nothing here.
        if (e <= ackPos || e > this.max || s >= e) continue;
        if (s < ackPos) s = ackPos;
        newlySacked += this.sb.add(s, e);
      }
    }
    if (ackPos > this.una) {
      this.newAck(now, ackPos, tsRtt);
    } else if (
      ackPos === this.una &&
      this.una < this.max &&
      (newlySacked > 0 || (seg.payload.length === 0 && (seg.flags & (SYN | FIN)) === 0 && !windowChanged))
    ) {
      // RFC 5681 §2 "duplicate acknowledgment", or RFC 6675's: an ACK that SACKs new data
      // (which also counts ACKs riding on data, so two-way transfers recover quickly too).
      this.dupAcks++;
      this.dupAcksIn++;
      if (this.cc.inRecovery) this.cc.onDupAckInRecovery(this.sackOk);
    }
    if (!this.cc.inRecovery && this.una >= this.cc.recover && this.una < this.max) {
      const thresh = this.dupThresh();
      // RFC 6675 IsLost(SND.UNA): more than (DupThresh - 1)·SMSS SACKed above it.
      if (this.dupAcks >= thresh || (this.sackOk && this.sb.sackedBytes > (thresh - 1) * this.mss)) {
        this.enterRecovery();
      }
    }
    return ACK_OK;
  }

  /**
   * DupThresh: 3, or — RFC 5827 Early Retransmit — one less than the segments outstanding
   * when fewer than four are and there is no new data to send (which would make more ACKs).
   */
  private dupThresh(): number {
    const oseg = Math.ceil((this.max - this.una) / this.mss);
    if (oseg >= DUP_THRESH + 1 || this.pending) return DUP_THRESH;
    return oseg > 2 ? oseg - 1 : 1;
  }

  private newAck(now: number, ackPos: number, tsRtt: number): void {
    const acked = ackPos - this.una;
    const flightBefore = this.nxt > this.una ? this.nxt - this.una : 0;
    const prevUna = this.una;
    this.una = ackPos;
    if (this.nxt < ackPos) this.nxt = ackPos;
    const dataEnd = this.dataEnd;
    this.buf.ack((ackPos < dataEnd ? ackPos : dataEnd) - 1);
    this.sb.ackTo(ackPos);
    if (tsRtt >= 0) this.rtt.sample(tsRtt);
    else this.rtt.ackTiming(ackPos, now);
    this.retries = 0;
    this.dupAcks = 0;
    const cc = this.cc;
    if (cc.inRecovery) {
      if (ackPos >= cc.recover) cc.exitRecovery();
      else {
        cc.onPartialAck(acked, this.sackOk);
        if (!this.sackOk) this.rexmitUna = true;
        if (this.highRxt < ackPos) this.highRxt = ackPos;
      }
    } else cc.onAck(prevUna === 0 ? acked - 1 : acked, flightBefore);
    this.rtoAt = this.una === this.max ? Infinity : now + this.rtt.rto;
  }

  private enterRecovery(): void {
    this.cc.enterRecovery(this.max - this.una, this.max, this.sackOk);
    this.fastRetransmits++;
    this.highRxt = this.una;
    this.rexmitUna = true;
    this.rtt.invalidateTiming();
  }

  /** RFC 6298 §5.4-5.6 and RFC 5681 §3.1: the retransmission timer expired. */
  onRto(): void {
    this.timeouts++;
    this.retries++;
    this.rtt.backoff();
    this.rtt.invalidateTiming();
    this.cc.onRto(this.max - this.una, this.max, this.retries === 1);
    this.sb.clear();
    this.dupAcks = 0;
    this.highRxt = this.una;
    this.rexmitUna = false;
    this.nxt = this.una;
    this.forceOne = true;
    this.rtoAt = Infinity;
  }

  /** The persist timer expired: allow a runt segment into a small window, or probe a zero one. */
  onPersist(now: number, sink: SegmentSink): void {
    this.persistAt = Infinity;
    this.probesOut++;
    if (this.una + this.wnd > this.nxt && this.pending) {
      this.overrideSws = true;
      return;
    }
    sink.sendSegment(ACK, this.una - 1, EMPTY_PAYLOAD);
    this.persistBackoffs++;
    this.armPersist(now);
  }

  /** Send everything the windows allow. */
  output(now: number, sink: SegmentSink): void {
    if (this.una === this.max && this.lastSendAt >= 0 && this.pending && now - this.lastSendAt > this.rtt.rto) {
      this.cc.restartAfterIdle();
    }
    if (this.rexmitUna) {
      this.rexmitUna = false;
      if (this.una < this.max) this.retransmit(now, this.una, this.max, sink);
    }
    if (this.cc.inRecovery && this.sackOk) this.sendHoles(now, sink);
    this.sendNew(now, sink);
  }

  /** RFC 6675 §4 NextSeg (rule 1, with FACK's view of loss): the holes below the highest SACK. */
  private sendHoles(now: number, sink: SegmentSink): void {
    const sb = this.sb;
    for (;;) {
      if (this.cc.cwnd - this.pipe() < this.mss) return;
      const from = this.highRxt > this.una ? this.highRxt : this.una;
      const limit = sb.highest < this.max ? sb.highest : this.max;
      const h = sb.nextHole(from, limit);
      if (h < 0) return;
      this.retransmit(now, h, sb.holeEnd, sink);
    }
  }

  /** RFC 6675 §4 SetPipe, FACK-style: unSACKed bytes above the highest SACK plus retransmissions in flight. */
  private pipe(): number {
    const sb = this.sb;
    const fack = sb.highest > this.una ? sb.highest : this.una;
    const rx = this.highRxt < fack ? this.highRxt : fack;
    return this.max - fack + sb.holeBytes(this.una, rx);
  }

  private segLimit(sink: SegmentSink): number {
    const ovh = sink.optionOverhead();
    return ovh > 0 ? this.mss - ovh : this.maxSeg;
  }

  /** Retransmit one segment starting at `pos`, not beyond `limit`. */
  private retransmit(now: number, pos: number, limit: number, sink: SegmentSink): void {
    const dataEnd = this.dataEnd;
    const lim = limit < dataEnd ? limit : dataEnd;
    const segMax = sink.optionOverhead() > 0 ? this.mss - sink.optionOverhead() : this.mss;
    let len = lim - pos;
    if (len > segMax) len = segMax;
    if (len < 0) len = 0;
    const fin = this.finQueued && pos + len === dataEnd && limit > dataEnd;
    let flags = ACK;
    if (fin) flags |= FIN;
    if (len > 0) sink.sendSegment(flags, pos, this.buf.slice(pos - 1, len), this.buf.takeTail());
    else sink.sendSegment(flags, pos, EMPTY_PAYLOAD);
    this.retransmits++;
    const end = pos + len + (fin ? 1 : 0);
    if (end > this.highRxt) this.highRxt = end;
    this.rtt.invalidateTiming();
    if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
    this.lastSendAt = now;
  }

  private sendNew(now: number, sink: SegmentSink): void {
    const dataEnd = this.dataEnd;
    const sendEnd = dataEnd + (this.finQueued ? 1 : 0);
    const sackRecovery = this.cc.inRecovery && this.sackOk;
    while (this.nxt < sendEnd) {
      const nxt = this.nxt;
      const dataLeft = dataEnd - nxt;
      const segMax = this.segLimit(sink);
      let len = dataLeft < segMax ? dataLeft : segMax;
      if (this.forceOne) {
        // The segment at SND.UNA after a timeout goes out whatever the windows say.
        this.forceOne = false;
        if (len > this.mss) len = this.mss;
      } else {
        const wndRoom = this.una + this.wnd - nxt;
        const inflight = sackRecovery ? this.pipe() : nxt - this.una;
        let cwndRoom = this.cc.cwnd - inflight;
        // RFC 3042 Limited Transmit: each of the first two duplicate ACKs lets one new segment out.
        if (this.dupAcks > 0 && !this.cc.inRecovery) cwndRoom += (this.dupAcks < 2 ? this.dupAcks : 2) * this.mss;
        if (len > wndRoom) len = wndRoom > 0 ? wndRoom : 0;
        let cwndLimited = false;
        if (len > cwndRoom) {
          len = cwndRoom > 0 ? cwndRoom : 0;
          cwndLimited = true;
        }
        if (len < dataLeft && len < (segMax < this.mss ? segMax : this.mss)) {
          // Sender SWS avoidance (RFC 9293 §3.8.6.2.1): no runt segments while more data waits,
          // unless it is half the largest window the peer offered, or the override timer fired.
          const runtOk = len > 0 && (this.overrideSws || (!cwndLimited && len >= this.maxWnd / 2));
          if (!runtOk) {
            if (!cwndLimited && this.una === this.max) this.armPersist(now);
            return;
          }
        }
        // (A bare FIN goes out whatever the windows: a receiver takes it at RCV.NXT even then.)
        if (len > this.mss && len < dataLeft) len -= len % this.mss;
      }
      this.overrideSws = false;
      const fin = this.finQueued && nxt + len === dataEnd;
      if (len === 0 && !fin) return;
      let flags = ACK;
      if (len > 0 && nxt + len === dataEnd) flags |= PSH;
      if (fin) flags |= FIN;
      if (len > 0) sink.sendSegment(flags, nxt, this.buf.slice(nxt - 1, len), this.buf.takeTail());
      else sink.sendSegment(flags, nxt, EMPTY_PAYLOAD);
      const end = nxt + len + (fin ? 1 : 0);
      if (nxt < this.max) {
        this.retransmits++;
        if (nxt + len > this.max) this.bytesOut += nxt + len - this.max;
      } else {
        this.bytesOut += len;
        this.rtt.startTiming(end, now);
      }
      this.nxt = end;
      if (end > this.max) this.max = end;
      if (this.rtoAt === Infinity) this.rtoAt = now + this.rtt.rto;
      this.persistAt = Infinity;
      this.persistBackoffs = 0;
      this.lastSendAt = now;
    }
  }

  private armPersist(now: number): void {
    if (this.persistAt !== Infinity || this.rtoAt !== Infinity) return;
    let t = this.rtt.rto;
    for (let i = 0; i < this.persistBackoffs && t < this.maxRtoMs; i++) t *= 2;
    this.persistAt = now + (t < this.maxRtoMs ? t : this.maxRtoMs);
  }
}
