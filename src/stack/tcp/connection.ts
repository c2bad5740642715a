/**
 * RFC 9293 §3.10 (event processing) — one TCP connection as a pure state machine.
 *
 *   input(now, segment)   §3.10.7 SEGMENT ARRIVES
 *   poll(now, out)        everything due now: SYN/SYN-ACK, data, ACKs, retransmissions
 *                         (§3.8.1), probes (§3.8.6.1), FIN, RST; timers (§3.10.8 TIMEOUTS)
 *   pollAt()              when poll() must run next — the host keeps ONE timer
 *   write / shutdownWrite / abort / consumed   §3.10.2 SEND, §3.10.4 CLOSE, §3.10.5 ABORT,
 *                         and the receive side of §3.10.3 RECEIVE (the app took the bytes)
 *
 * Nothing here reads a clock, owns a timer or touches a socket: time comes in as `now` (ms,
 * monotonic), segments go out through the `out` callback of poll().
 *
 * Opening. Passive: `TcpConnection.accept(now, syn, opts)` builds the connection from a SYN in
 * SYN-RECEIVED with `acceptPending` set; nothing is sent until `completeAccept(now)` (tunroute
 * first connects the upstream) or `reject(now)` (RST: the upstream refused). Retransmitted
 * SYNs are ignored meanwhile. Active: `TcpConnection.connect(now, opts)` starts in SYN-SENT.
 * Simultaneous open (SYN-SENT receiving a bare SYN) goes through SYN-RECEIVED.
 *
 * Options: MSS, window scale, SACK and timestamps are settled in the SYN exchange (options.ts).
 * With timestamps (RFC 7323 §3-5): TSval = floor(now) + tsOffset, TS.Recent echoed, RTT samples
 * from TSecr, and PAWS-lite: a non-RST segment whose TSval is older than TS.Recent (by more
 * than one tick, as Linux) is dropped and answered by an ACK (no 24-day idle rule). A segment without the option on a timestamped
 * connection is accepted (as Linux does), without the PAWS check.
 *
 * Security checks: RFC 5961 — a RST must carry exactly RCV.NXT to reset; one elsewhere in the
 * window, and any SYN on a synchronized connection, earn a challenge ACK (rate-limited); an ACK
 * outside [SND.UNA - MAX.SND.WND, SND.MAX] is answered by an ACK and dropped.
 *
 * Closing. FIN in both directions with half-close: after `onPeerFin` we may keep sending
 * (CLOSE-WAIT), and after `shutdownWrite()` we keep receiving (FIN-WAIT-1/2). TIME-WAIT lasts
 * `timeWaitMs` (2·MSL, 60 s by default); a retransmitted FIN restarts it; an acceptable RST
 * ends it at once (RFC 9293; RFC 1337's "ignore RST in TIME-WAIT" is not applied). A new SYN
 * for a TIME-WAIT connection is the table's business (see table.ts); the connection itself
 * answers it with an ACK (RFC 5961 §4).
 *
 * Unwrapped positions: the send side counts from the ISS, the receive side from the IRS (the
 * SYN is position 0); wire values are made with seqWrap/seqUnwrap at this boundary only.
 */

import { ACK_OK, Sender, type SegmentSink } from './sender.js';
import { Receiver } from './receiver.js';
import type { RecvSlab } from './recv-slabs.js';
import { BufferAccount } from './buffer-account.js';
import {
  ACK,
  EMPTY_PAYLOAD,
  FIN,
  RST,
  SYN,
  noOptions,
  resetFor,
  type TcpSegment,
  type TcpSegmentOptions,
} from './segment.js';
import { seqGe, seqGt, seqLt, seqUnwrap, seqWrap } from './seq.js';
import { resolveConfig, sharedConfig, type SharedTcpConfig } from './config.js';
import {
  DEFAULT_PEER_MSS,
  chooseWindowScale,
  maxSackBlocks,
  negotiate,
  sackOptionLen,
  synOptions,
  type Negotiated,
} from './options.js';
import type {
  CloseReason,
  ConnectOptions,
  TcpConnectionOptions,
  TcpListener,
  TcpState,
  TcpStats,
} from './types.js';

/** TSval ticks a segment may lag TS.Recent before PAWS drops it. */
const PAWS_WINDOW = 1;
/** Bytes each direction holds without asking a shared budget (TcpConnectionOptions.memoryFloor). */
const DEFAULT_MEMORY_FLOOR = 4 * 1024;
/** Out-of-window segments without data are answered at most this often. */
const OOW_ACK_INTERVAL_MS = 500;

/** Hears that a connection needs a poll (see TcpConnection.waker). */
export interface TcpWaker {
  wake(): void;
}

export class TcpConnection implements SegmentSink {
  readonly localPort: number;
  readonly remotePort: number;
  /** True for connections created by accept(). */
  readonly passive: boolean;
  listener: TcpListener | undefined;
  /**
   * Set by an owner (the table) that must hear when an application call — write, consumed,
   * shutdownWrite, completeAccept, reject, abort — makes a poll necessary. (An object, not a
   * callback: the table's entry serves, so no closure per connection.)
   */
  waker: TcpWaker | undefined;

  private st: TcpState;
  /** Shared with the other connections made with the same settings (read-only). */
  private readonly cfg: SharedTcpConfig;
  private readonly tsOffset: number;
  private readonly snd: Sender;
  private readonly rcv: Receiver;
  private readonly sink: SegmentSink;
  private pendingAccept = false;
  private synToSend = false;
  /** What the SYN exchange settled (undefined until the peer's SYN is seen). */
  private agreed: Negotiated | undefined;
  private ctl: TcpSegment[] = [];
  private dirty = true;
  private polling = false;
  private lastNow: number;
  private out: ((seg: TcpSegment) => void) | undefined;

  private readonly ourWscale: number;
  private wscaleOk = false;
  private sndScale = 1;
  private tsOk = false;
  private tsRecent = 0;
  private tsRecentValid = false;

  private keepAliveAt = Infinity;
  private kaProbes = 0;
  private timeWaitAt = Infinity;
  private reported = false;
  private writeBlocked = false;
  /** A blocked writer hears onWritable once this much is free (a quarter, or half the floor under a budget). */
  private readonly writeWakeAt: number;
  private challengeStart = -Infinity;
  private oowAckAt = -Infinity;
  private challengeCount = 0;

  private segmentsIn = 0;
  private segmentsOut = 0;
  private challengeAcks = 0;
  private pawsDropped = 0;

  private constructor(now: number, localPort: number, remotePort: number, opts: TcpConnectionOptions, passive: boolean) {
    const own = resolveConfig(opts);
    this.cfg = sharedConfig(own);
    this.tsOffset = own.tsOffset;
    this.localPort = localPort;
    this.remotePort = remotePort;
    this.passive = passive;
    this.listener = opts.listener;
    this.lastNow = now;
    this.st = passive ? 'SYN-RECEIVED' : 'SYN-SENT';
    const pool = opts.memory;
    const floor = opts.memoryFloor ?? DEFAULT_MEMORY_FLOOR;
    this.snd = new Sender(opts.iss >>> 0, own.sndBufSize, this.cfg.rtt, this.cfg.initialWindow, this.cfg.output, pool && new BufferAccount(pool, floor));
    this.rcv = new Receiver(own.rcvBufSize, this.cfg.delayedAckMs, this.cfg.copyInput, pool && new BufferAccount(pool, floor));
    this.writeWakeAt = pool === undefined ? own.sndBufSize / 4 : Math.min(own.sndBufSize / 4, Math.max(1, floor >>> 1));
    this.rcv.mssCap = this.cfg.mss;
    this.ourWscale = this.cfg.windowScaling ? chooseWindowScale(own.rcvBufSize) : 0;
    // Until the SYN exchange says otherwise: the peer's default MSS.
    this.snd.setMss(Math.min(DEFAULT_PEER_MSS, this.cfg.mss), this.cfg.maxSegmentPayload ?? DEFAULT_PEER_MSS);
    // The connection is its sender's sink (no object and two closures per connection).
    this.sink = this;
  }

  /**
   * Passive open from a received SYN. The connection waits in SYN-RECEIVED with
   * `acceptPending` until `completeAccept()` (send the SYN-ACK) or `reject()` (send RST).
   */
  static accept(now: number, syn: TcpSegment, opts: TcpConnectionOptions): TcpConnection {
    if ((syn.flags & (SYN | ACK | RST)) !== SYN) {
      throw new RangeError('TcpConnection.accept() needs a SYN without ACK or RST');
    }
    const c = new TcpConnection(now, syn.dstPort, syn.srcPort, opts, true);
    c.negotiate(syn);
    c.rcv.init(syn.seq, c.wscaleOk ? c.ourWscale : 0, c.rcv.synWindow());
    c.pendingAccept = true;
    return c;
  }

  /** Active open: SYN-SENT; the SYN goes out at the next poll(). */
  static connect(now: number, opts: ConnectOptions): TcpConnection {
    const c = new TcpConnection(now, opts.localPort, opts.remotePort, opts, false);
    c.synToSend = true;
    return c;
  }

  get state(): TcpState {
    return this.st;
  }

  /** A passive connection still waiting for completeAccept() / reject(). */
  get acceptPending(): boolean {
    return this.pendingAccept;
  }

  /** Payload bytes per full-sized segment we send (the GSO segment size). */
  get sendMss(): number {
    return this.snd.mss;
  }

  /** Bytes the connection's buffers hold now (received and not consumed, out of order, unacknowledged and unsent). */
  get bufferedBytes(): number {
    return this.rcv.held + this.snd.buf.length;
  }

  /** Bytes write() would accept now. */
  get writable(): number {
    return this.canWrite() ? this.snd.buf.free : 0;
  }

  /** The peer's FIN has been received (no more data will be delivered). */
  get peerFinReceived(): boolean {
    return this.rcv.finReceived;
  }

  /** Our FIN is queued (shutdownWrite() was called). */
  get writeShutdown(): boolean {
    return this.snd.finQueued;
  }

  /** Send the SYN-ACK of a deferred passive open. */
  completeAccept(now: number): void {
    if (!this.pendingAccept || this.st === 'CLOSED') return;
    this.lastNow = now;
    this.pendingAccept = false;
    this.synToSend = true;
    this.touch();
  }

  /** Refuse a deferred passive open: RST <SEQ=0><ACK=IRS+1><CTL=RST,ACK>, onClosed('refused'). */
  reject(now: number): void {
    if (!this.pendingAccept) {
      this.abort(now);
      return;
    }
    this.lastNow = now;
    this.pendingAccept = false;
    this.queueRst(0, seqWrap(this.rcv.irs, 1));
    this.close('refused');
  }

  /**
   * Queue up to data.length bytes for sending; returns how many were accepted. `slab`: the
   * pooled slab `data` was copied into (outbound/pooled-reads.ts); the bytes kept hold it.
   */
  write(data: Uint8Array, slab?: RecvSlab): number {
    if (!this.canWrite() || data.length === 0) return 0;
    const n = this.snd.buf.write(data, slab);
    if (n < data.length) this.writeBlocked = true;
    if (n > 0) this.touch();
    return n;
  }

  /** Send FIN once all written data is sent (half-close; receiving continues). */
  shutdownWrite(): void {
    if (this.snd.finQueued) return;
    switch (this.st) {
      case 'ESTABLISHED':
        this.st = 'FIN-WAIT-1';
        break;
      case 'CLOSE-WAIT':
        this.st = 'LAST-ACK';
        break;
      case 'SYN-SENT':
      case 'SYN-RECEIVED':
        break; // the FIN follows the handshake
      default:
        return;
    }
    this.snd.finQueued = true;
    this.touch();
  }

  /** RFC 9293 §3.10.5 ABORT: RST now (when the peer knows us), onClosed('aborted'). */
  abort(now: number): void {
    const st = this.st;
    if (st === 'CLOSED') return;
    this.lastNow = now;
    if (this.pendingAccept) {
      this.pendingAccept = false;
      this.queueRst(0, seqWrap(this.rcv.irs, 1));
    } else if (st !== 'SYN-SENT' && st !== 'TIME-WAIT') {
      this.queueAbortRst();
    }
    this.close('aborted');
  }

  /**
   * The application took `n` delivered bytes (in stream order) and reads them no more: the
   * receive window opens by that much, and their memory may be reused (TcpListener.onData).
   */
  consumed(n: number): void {
    if (n <= 0) return;
    if (this.rcv.consumed(n) && this.st !== 'CLOSED' && !this.pendingAccept) this.touch();
  }

  /** The next time poll() must run, or undefined when nothing is scheduled. */
  pollAt(): number | undefined {
    if (this.dirty || this.ctl.length > 0) return this.lastNow;
    if (this.st === 'CLOSED') return undefined;
    let t = this.snd.rtoAt;
    if (this.snd.persistAt < t) t = this.snd.persistAt;
    if (this.rcv.delAckAt < t) t = this.rcv.delAckAt;
    if (this.keepAliveAt < t) t = this.keepAliveAt;
    if (this.timeWaitAt < t) t = this.timeWaitAt;
    return t === Infinity ? undefined : t;
  }

  /**
   * RFC 6191-lite: may a new SYN take over this TIME-WAIT connection's 4-tuple? Yes when its
   * timestamp is newer than the last one seen (if both carry timestamps), else when its
   * sequence number lies beyond what this incarnation received (RFC 1122 §4.2.2.13).
   * Otherwise the connection answers the SYN with an ACK (RFC 5961 §4).
   */
  reusableBy(syn: TcpSegment): boolean {
    if (this.st !== 'TIME-WAIT') return false;
    const ts = syn.options.timestamp;
    if (this.tsOk && this.tsRecentValid && ts !== undefined) return seqGt(ts[0], this.tsRecent);
    return seqGt(syn.seq, seqWrap(this.rcv.irs, this.rcv.nxt));
  }

  /** Nothing left to emit and the connection is closed: the owner may drop it. */
  get finished(): boolean {
    return this.st === 'CLOSED' && this.ctl.length === 0;
  }

  get stats(): TcpStats {
    const snd = this.snd;
    const rcv = this.rcv;
    return {
      state: this.st,
      bytesIn: rcv.bytesIn,
      bytesOut: snd.bytesOut,
      segmentsIn: this.segmentsIn,
      segmentsOut: this.segmentsOut,
      retransmits: snd.retransmits,
      fastRetransmits: snd.fastRetransmits,
      timeouts: snd.timeouts,
      dupAcksIn: snd.dupAcksIn,
      outOfOrderIn: rcv.outOfOrderIn,
      duplicateIn: rcv.duplicateIn,
      challengeAcks: this.challengeAcks,
      pawsDropped: this.pawsDropped,
      srtt: snd.rtt.srtt,
      rttvar: snd.rtt.rttvar,
      rto: snd.rtt.rto,
      cwnd: snd.cc.cwnd,
      ssthresh: snd.cc.ssthresh,
      sndWnd: snd.wnd,
      rcvWnd: rcv.window,
      sendMss: snd.mss,
      sndBuffered: snd.buf.length,
      rcvUnconsumed: rcv.unconsumed,
      rcvOutOfOrder: rcv.ooo.byteCount,
    };
  }

  // ---------------------------------------------------------------------------------------
  // SEGMENT ARRIVES (§3.10.7)

  input(now: number, seg: TcpSegment): void {
    const st = this.st;
    if (st === 'CLOSED') return;
    this.lastNow = now;
    this.segmentsIn++;
    this.dirty = true;
    if (st === 'SYN-SENT') this.inputSynSent(now, seg);
    else if (this.pendingAccept) this.inputPendingAccept(seg);
    else this.inputSynchronized(now, seg);
    const ka = this.cfg.keepAlive;
    if (ka !== undefined && (this.st === 'ESTABLISHED' || this.st === 'CLOSE-WAIT' || this.st === 'FIN-WAIT-2')) {
      this.keepAliveAt = now + ka.idleMs;
      this.kaProbes = 0;
    }
  }

  /** §3.10.7.3 SYN-SENT STATE. */
  private inputSynSent(now: number, seg: TcpSegment): void {
    const f = seg.flags;
    const snd = this.snd;
    let ackOk = false;
    if (f & ACK) {
      // Only our SYN is outstanding: the one acceptable ACK is ISS + 1.
      if (seg.ack !== seqWrap(snd.iss, 1)) {
        if ((f & RST) === 0) this.queueSegment(resetFor(seg));
        return;
      }
      ackOk = true;
    }
    if (f & RST) {
      if (ackOk) this.close('refused');
      return;
    }
    if ((f & SYN) === 0) return;
    this.negotiate(seg);
    this.rcv.init(seg.seq, this.wscaleOk ? this.ourWscale : 0, this.rcv.synWindow());
    if (!ackOk) {
      // Simultaneous open: answer with SYN-ACK from SYN-RECEIVED.
      this.st = 'SYN-RECEIVED';
      this.synToSend = true;
      return;
    }
    // The window of a SYN-ACK is never scaled (RFC 7323 §2.2).
    snd.ack(now, seg, 0, seg.window, this.tsRtt(now, seg));
    this.rcv.ackNow = true;
    this.establish(now);
    if (this.isClosed()) return;
    if (seg.payload.length > 0 || f & FIN) this.receiveText(now, seg, 1);
  }

  /** A passive connection whose SYN-ACK has not been sent: only a RST for the SYN matters. */
  private inputPendingAccept(seg: TcpSegment): void {
    if (seg.flags & RST && seg.seq === seqWrap(this.rcv.irs, 1)) this.close('reset');
  }

  /** §3.10.7.4 Other states. */
  private inputSynchronized(now: number, seg: TcpSegment): void {
    const f = seg.flags;
    const rcv = this.rcv;
    const snd = this.snd;
    if (this.st === 'SYN-RECEIVED' && f & SYN && (f & RST) === 0 && seg.seq === rcv.irs) {
      if ((f & ACK) === 0) {
        this.synToSend = true; // our SYN-ACK was lost: send it again
      } else if (!this.passive && seg.ack === seqWrap(snd.iss, 1)) {
        // Simultaneous open (RFC 9293 figure 8, line 6): the peer's SYN-ACK completes it.
        this.establish(now);
        if (!this.isClosed()) snd.ack(now, seg, 0, seg.window, this.tsRtt(now, seg));
      } else this.queueSegment(resetFor(seg));
      return;
    }
    const segPos = seqUnwrap(rcv.irs, rcv.nxt, seg.seq);
    const plen = seg.payload.length;
    const len = plen + (f & SYN ? 1 : 0) + (f & FIN ? 1 : 0);
    const ts = this.tsOk ? seg.options.timestamp : undefined;
    // RFC 7323 §5.3 PAWS, with Linux's tolerance of one tick (TCP_PAWS_WINDOW) for segments
    // reordered within the same millisecond boundary.
    if (ts !== undefined && (f & RST) === 0 && this.tsRecentValid && seqLt(ts[0] + PAWS_WINDOW, this.tsRecent)) {
      this.pawsDropped++;
      this.dupAck(now, len);
      return;
    }
    // First: sequence number.
    if (!rcv.acceptable(segPos, len)) {
      if ((f & RST) === 0) {
        if (plen > 0) rcv.duplicateIn++;
        if (this.st === 'TIME-WAIT' && f & FIN) this.timeWaitAt = now + this.cfg.timeWaitMs;
        this.dupAck(now, len);
      }
      return;
    }
    // Second: RST (RFC 5961 §3.2).
    if (f & RST) {
      if (segPos === rcv.nxt) this.onReset();
      else this.challengeAck(now);
      return;
    }
    // Fourth: SYN (RFC 5961 §4.2).
    if (f & SYN) {
      this.challengeAck(now);
      return;
    }
    // Fifth: ACK.
    if ((f & ACK) === 0) return;
    if (ts !== undefined && segPos <= rcv.lastAckSent && (!this.tsRecentValid || seqGe(ts[0], this.tsRecent))) {
      this.tsRecent = ts[0];
      this.tsRecentValid = true;
    }
    if (this.st === 'SYN-RECEIVED') {
      if (seg.ack !== seqWrap(snd.iss, 1)) {
        this.queueSegment(resetFor(seg));
        return;
      }
      this.establish(now);
      if (this.isClosed()) return;
    }
    if (snd.ack(now, seg, segPos, seg.window * this.sndScale, this.tsRtt(now, seg)) !== ACK_OK) {
      rcv.ackNow = true;
      return;
    }
    if (this.writeBlocked && snd.buf.free >= this.writeWakeAt) {
      this.writeBlocked = false;
      if (this.canWrite()) {
        this.listener?.onWritable?.(snd.buf.free);
        if (this.isClosed()) return;
      }
    }
    switch (this.st) {
      case 'FIN-WAIT-1':
        if (snd.finAcked) this.st = 'FIN-WAIT-2';
        break;
      case 'CLOSING':
        if (snd.finAcked) this.enterTimeWait(now, true);
        return;
      case 'LAST-ACK':
        if (snd.finAcked) this.close('normal');
        return;
      case 'TIME-WAIT':
      case 'CLOSE-WAIT':
        if (f & FIN) rcv.ackNow = true;
        return;
      default:
        break;
    }
    // Sixth/seventh: URG is ignored (RFC 6093: its data is delivered in line). Segment text.
    if (plen > 0 || f & FIN) this.receiveText(now, seg, segPos);
  }

  /** §3.10.7.4 seventh and eighth: segment text and FIN (ESTABLISHED, FIN-WAIT-1/2). */
  private receiveText(now: number, seg: TcpSegment, segPos: number): void {
    // In ESTABLISHED we have sent no FIN: the peer's may wait for ours to carry its ACK.
    const fin = this.rcv.receive(now, segPos, seg.payload, (seg.flags & FIN) !== 0, this.listener, this.st === 'ESTABLISHED');
    if (!fin || this.isClosed()) return;
    let timeWait = false;
    switch (this.st) {
      case 'ESTABLISHED':
        this.st = 'CLOSE-WAIT';
        break;
      case 'FIN-WAIT-1':
        if (this.snd.finAcked) {
          this.enterTimeWait(now, false);
          timeWait = true;
        } else this.st = 'CLOSING';
        break;
      case 'FIN-WAIT-2':
        this.enterTimeWait(now, false);
        timeWait = true;
        break;
      default:
        break;
    }
    this.listener?.onPeerFin?.();
    if (timeWait) this.report('normal');
  }

  private establish(now: number): void {
    this.st = this.snd.finQueued ? 'FIN-WAIT-1' : 'ESTABLISHED';
    // What the SYN exchange agreed only shapes our SYN-ACK: let it go unless one is still due.
    if (!this.synToSend) this.agreed = undefined;
    const ka = this.cfg.keepAlive;
    if (ka !== undefined) this.keepAliveAt = now + ka.idleMs;
    this.listener?.onEstablished?.();
  }

  private onReset(): void {
    if (this.st === 'SYN-RECEIVED') this.close(this.passive ? 'reset' : 'refused');
    else this.close('reset'); // in TIME-WAIT the close was already reported
  }

  /**
   * Answer an unacceptable segment with an ACK; one without data at most every 500 ms, so that
   * two confused ends cannot ping-pong ACKs forever (Linux's tcp_invalid_ratelimit).
   */
  private dupAck(now: number, len: number): void {
    if (len > 0 || now - this.oowAckAt >= OOW_ACK_INTERVAL_MS) {
      if (len === 0) this.oowAckAt = now;
      this.rcv.ackNow = true;
    }
  }

  /** RFC 5961 §3.2/§4.2 challenge ACK, at most `challengeAckLimit` per second. */
  private challengeAck(now: number): void {
    if (now - this.challengeStart >= 1000) {
      this.challengeStart = now;
      this.challengeCount = 0;
    }
    if (this.challengeCount < this.cfg.challengeAckLimit) {
      this.challengeCount++;
      this.challengeAcks++;
      this.rcv.ackNow = true;
    }
  }

  /** RFC 7323 §4: an RTT sample from the echoed timestamp, or -1. */
  private tsRtt(now: number, seg: TcpSegment): number {
    if (!this.tsOk) return -1;
    const ts = seg.options.timestamp;
    if (ts === undefined || ts[1] === 0) return -1;
    const r = (this.tsVal(now) - ts[1]) >>> 0;
    return r < 0x7fffffff ? r : -1;
  }

  private tsVal(now: number): number {
    const v = (Math.floor(now) + this.tsOffset) >>> 0;
    return v === 0 ? 1 : v;
  }

  /** Take the peer's SYN options (see options.ts). */
  private negotiate(syn: TcpSegment): void {
    const n = negotiate(this.cfg, syn);
    this.agreed = n;
    this.wscaleOk = n.wscaleOk;
    this.sndScale = 2 ** n.sndShift;
    this.snd.sackOk = n.sackOk;
    this.tsOk = n.tsOk;
    if (n.tsOk) {
      this.tsRecent = n.tsRecent;
      this.tsRecentValid = true;
    }
    this.snd.setMss(n.sendMss, this.cfg.maxSegmentPayload ?? n.sendMss);
    this.rcv.mss = n.sendMss < n.rcvMss ? n.sendMss : n.rcvMss;
    this.rcv.mssCap = n.rcvMss;
  }

  // ---------------------------------------------------------------------------------------
  // Output and timers (§3.10.8)

  poll(now: number, out: (seg: TcpSegment) => void): void {
    this.lastNow = now;
    this.out = out;
    this.dirty = false;
    this.polling = true;
    if (this.st !== 'CLOSED') {
      if (now >= this.timeWaitAt) {
        this.timeWaitAt = Infinity;
        this.close('normal');
      } else {
        if (now >= this.snd.rtoAt) this.onRtoTimer();
        if (now >= this.snd.persistAt && !this.isClosed()) this.onPersistTimer(now);
        if (now >= this.keepAliveAt && !this.isClosed()) this.onKeepAliveTimer(now);
        if (now >= this.rcv.delAckAt) {
          this.rcv.delAckAt = Infinity;
          this.rcv.ackNow = true;
        }
        if (!this.isClosed() && !this.pendingAccept) this.transmit(now);
      }
    }
    const ctl = this.ctl;
    if (ctl.length > 0) {
      for (let i = 0; i < ctl.length; i++) {
        this.segmentsOut++;
        out(ctl[i]);
      }
      ctl.length = 0;
    }
    this.polling = false;
    this.out = undefined;
  }

  private transmit(now: number): void {
    const snd = this.snd;
    const st = this.st;
    if (this.synToSend) {
      this.synToSend = false;
      const first = snd.max === 0;
      this.emit(st === 'SYN-SENT' ? SYN : SYN | ACK, 0, EMPTY_PAYLOAD);
      if (!first) snd.retransmits++;
      snd.synSent(now, first);
    }
    if (st === 'ESTABLISHED' || st === 'CLOSE-WAIT' || st === 'FIN-WAIT-1' || st === 'CLOSING' || st === 'LAST-ACK') {
      snd.output(now, this.sink);
    }
    // A bare ACK carries SND.MAX: after a timeout SND.NXT is pulled back to SND.UNA, but the
    // peer may hold more than that, and an ACK below its RCV.NXT would be unacceptable to it.
    if (this.rcv.ackNow && st !== 'SYN-SENT') this.emit(ACK, snd.max, EMPTY_PAYLOAD);
  }

  private onRtoTimer(): void {
    const snd = this.snd;
    const st = this.st;
    if (st === 'SYN-SENT' || st === 'SYN-RECEIVED') {
      snd.rtoAt = Infinity;
      if (snd.retries >= this.cfg.synRetries) {
        this.close('timeout');
        return;
      }
      snd.retries++;
      snd.timeouts++;
      snd.rtt.backoff();
      this.synToSend = true;
      return;
    }
    if (!snd.outstanding || st === 'TIME-WAIT' || st === 'FIN-WAIT-2') {
      snd.rtoAt = Infinity;
      return;
    }
    if (snd.retries >= this.cfg.maxRetries) {
      this.queueAbortRst();
      this.close('timeout');
      return;
    }
    snd.onRto();
  }

  private onPersistTimer(now: number): void {
    if (this.snd.probesOut >= this.cfg.maxRetries) {
      this.queueAbortRst();
      this.close('timeout');
      return;
    }
    this.snd.onPersist(now, this.sink);
  }

  /** RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: a probe <SEQ=SND.UNA-1> with no data. */
  private onKeepAliveTimer(now: number): void {
    this.keepAliveAt = Infinity;
    const ka = this.cfg.keepAlive;
    const st = this.st;
    if (ka === undefined || (st !== 'ESTABLISHED' && st !== 'CLOSE-WAIT' && st !== 'FIN-WAIT-2')) return;
    const snd = this.snd;
    if (snd.outstanding || snd.persistAt !== Infinity) {
      this.keepAliveAt = now + ka.idleMs; // the retransmission / persist timers watch the peer
      return;
    }
    if (this.kaProbes >= ka.count) {
      this.queueAbortRst();
      this.close('timeout');
      return;
    }
    this.kaProbes++;
    this.emit(ACK, snd.una - 1, EMPTY_PAYLOAD);
    this.keepAliveAt = now + ka.intervalMs;
  }

  private emit(flags: number, seqPos: number, payload: Uint8Array, payloadTail?: Uint8Array): void {
    const rcv = this.rcv;
    const now = this.lastNow;
    let ack = 0;
    let window: number;
    let options: TcpSegmentOptions;
    if (flags & SYN) {
      options = synOptions(this.cfg, this.ourWscale, this.agreed, this.tsVal(now), this.tsRecent);
      window = rcv.synWindow();
      if (flags & ACK) {
        ack = seqWrap(rcv.irs, rcv.nxt);
        rcv.ackNow = false;
      }
    } else {
      ack = seqWrap(rcv.irs, rcv.nxt);
      window = rcv.advertise();
      const sack = this.snd.sackOk && !rcv.ooo.isEmpty;
      if (this.tsOk || sack) {
        options = {};
        if (this.tsOk) options.timestamp = [this.tsVal(now), this.tsRecent];
        if (sack) options.sack = this.sackBlocks();
      } else options = noOptions();
    }
    const seg: TcpSegment = {
      srcPort: this.localPort,
      dstPort: this.remotePort,
      seq: seqWrap(this.snd.iss, seqPos),
      ack,
      flags,
      window,
      options,
      payload,
      payloadTail,
    };
    this.segmentsOut++;
    (this.out as (seg: TcpSegment) => void)(seg);
  }

  private sackBlocks(): Array<[number, number]> {
    const blocks = this.rcv.sackBlocks(maxSackBlocks(this.tsOk));
    const irs = this.rcv.irs;
    for (const b of blocks) {
      b[0] = seqWrap(irs, b[0]);
      b[1] = seqWrap(irs, b[1]);
    }
    return blocks;
  }

  /** @internal SegmentSink: the sender's segments; the connection fills in ACK, window and options. */
  sendSegment(flags: number, seqPos: number, payload: Uint8Array, tail?: Uint8Array): void {
    this.emit(flags, seqPos, payload, tail);
  }

  /** @internal SegmentSink: SACK option bytes (with two NOPs) the next segment will carry. */
  optionOverhead(): number {
    if (!this.snd.sackOk || this.rcv.ooo.isEmpty) return 0;
    const max = maxSackBlocks(this.tsOk);
    const n = this.rcv.ooo.rangeCount;
    return sackOptionLen(n < max ? n : max);
  }

  // ---------------------------------------------------------------------------------------

  /** (A method, so that TypeScript does not keep a narrowed `st` across callbacks.) */
  private isClosed(): boolean {
    return this.st === 'CLOSED';
  }

  private canWrite(): boolean {
    const st = this.st;
    return (
      !this.snd.finQueued &&
      (st === 'ESTABLISHED' || st === 'CLOSE-WAIT' || st === 'SYN-SENT' || st === 'SYN-RECEIVED')
    );
  }

  /** Something needs a poll; tell the owner, unless it is polling us right now. */
  private touch(): void {
    if (!this.dirty) {
      this.dirty = true;
      if (!this.polling) this.waker?.wake();
    }
  }

  private queueSegment(seg: TcpSegment | undefined): void {
    if (seg !== undefined) this.ctl.push(seg);
    this.touch();
  }

  private queueRst(seq: number, ack: number): void {
    this.queueSegment({
      srcPort: this.localPort,
      dstPort: this.remotePort,
      seq,
      ack,
      flags: RST | ACK,
      window: 0,
      options: noOptions(),
      payload: EMPTY_PAYLOAD,
    });
  }

  /** §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST> (SND.MAX, the edge the peer may have reached). */
  private queueAbortRst(): void {
    this.queueRst(seqWrap(this.snd.iss, this.snd.max), seqWrap(this.rcv.irs, this.rcv.nxt));
  }

  private enterTimeWait(now: number, report: boolean): void {
    this.st = 'TIME-WAIT';
    this.timeWaitAt = now + this.cfg.timeWaitMs;
    this.snd.rtoAt = Infinity;
    this.snd.persistAt = Infinity;
    this.keepAliveAt = Infinity;
    if (report) this.report('normal');
  }

  private close(reason: CloseReason): void {
    this.st = 'CLOSED';
    this.rcv.stopped = true;
    this.pendingAccept = false;
    this.synToSend = false;
    this.snd.rtoAt = Infinity;
    this.snd.persistAt = Infinity;
    this.rcv.delAckAt = Infinity;
    this.rcv.ackNow = false;
    this.keepAliveAt = Infinity;
    this.timeWaitAt = Infinity;
    this.touch();
    this.report(reason);
  }

  private report(reason: CloseReason): void {
    if (this.reported) return;
    this.reported = true;
    // The flow is over for its user: its buffers' share of a shared budget goes back.
    this.rcv.release();
    this.snd.buf.release();
    this.listener?.onClosed?.(reason);
  }
}
