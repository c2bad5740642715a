/**
 * The bridge between packets and the pure TCP machine: parse validated IPv4/TCP packets into
 * segments for the connection table, emit the table's segments as IPv4/TCP packets onto the
 * link, and keep the one timer that the table's `pollAt()` asks for.
 *
 * Segments produced while serving one batch of input are written together at the end of the
 * batch (one writev-style call), so a burst of ACKs costs one trip to the kernel.
 */
import { randomFillSync } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { Link } from '../link/link.js';
import type { Logger } from '../logger.js';
import type { Ipv4Packet } from '../wire/ipv4.js';
import { TcpPacket, TcpOptionValues, emitTcpIpv4, emitTcpIpv4Head, TCP_HEADER_LEN } from '../wire/tcp.js';
import { IPV4_HEADER_LEN } from '../wire/ipv4.js';
import { VNET_HDR_LEN, writeVnetTcp } from '../wire/virtio-net.js';
import { TcpTable, type TcpSynRequest, type TcpTableCounters } from './tcp/table.js';
import type { TcpSegment, TcpSegmentOptions } from './tcp/segment.js';
import { noOptions, EMPTY_PAYLOAD } from './tcp/segment.js';
import { allocBytes } from './tcp/bytes.js';

export interface TcpStackOptions {
  link: Link;
  clock: Clock;
  logger: Logger;
  maxConnections?: number;
}

/** Largest packet the stack builds: a full IPv4 datagram behind a virtio-net header. */
const MAX_PACKET = 65535 + VNET_HDR_LEN;
/** Largest TCP payload in one IPv4 packet, with room for the largest TCP header. */
const MAX_SUPER_PAYLOAD = 65535 - IPV4_HEADER_LEN - 60;
/** Output collected per flush before it is written (bounded: flushes early when full). */
const OUT_BUFFER = 1 << 20;
/** Payloads from this size go out by writev after their headers instead of through the arena. */
const PARTS_MIN = 8 * 1024;

export class TcpStack {
  readonly table: TcpTable;
  private readonly link: Link;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly tcp = new TcpPacket();
  private readonly opt = new TcpOptionValues();

  // Output staging: packets are laid end to end in one buffer and written as one batch.
  private readonly outBuf = Buffer.allocUnsafe(OUT_BUFFER);
  private outUsed = 0;
  private outViews: Uint8Array[] = [];
  private readonly emit = (srcIp: number, dstIp: number, seg: TcpSegment, sendMss: number): void => this.emitSegment(srcIp, dstIp, seg, sendMss);

  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private immediate: NodeJS.Immediate | undefined;
  private readonly random = new Uint32Array(256);
  private randomLeft = 0;
  private closed = false;
  /** Until someone accepts connections, every SYN is answered by RST. */
  private synHandler: (request: TcpSynRequest) => void = (req) => req.reject();

  constructor(opts: TcpStackOptions) {
    this.link = opts.link;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.table = new TcpTable({ onSyn: (req) => this.synHandler(req), maxConnections: opts.maxConnections });
  }

  /** Who decides about a SYN for no connection: accept (then complete or reject) or reject. */
  setSynHandler(h: (request: TcpSynRequest) => void): void {
    this.synHandler = h;
  }

  /**
   * How connections hand this stack their payloads (TcpConnectionOptions.output): each is
   * written out or copied into the arena before emit returns, so a scratch may be reused; on a
   * link that writes a packet in pieces, a payload spanning two send-buffer chunks comes in two.
   */
  get outputMode(): 'scratch' | 'split' {
    return this.link.vnetHdr && this.link.sendParts !== undefined ? 'split' : 'scratch';
  }

  /** The MSS this link allows: MTU minus the IPv4 and TCP headers. */
  get mss(): number {
    return this.link.mtu - IPV4_HEADER_LEN - TCP_HEADER_LEN;
  }

  /**
   * The largest payload a connection may put in one segment: on a vnet-header link the kernel
   * segments for us (TSO), so a whole 64 KiB super-segment costs one write; otherwise the MSS.
   */
  get maxSegmentPayload(): number {
    return this.link.vnetHdr ? MAX_SUPER_PAYLOAD : this.mss;
  }

  get counters(): Readonly<TcpTableCounters> {
    return this.table.counters;
  }

  /** A random 32-bit value (ISS, timestamp offsets), from a refilled pool of crypto randomness. */
  random32(): number {
    if (this.randomLeft === 0) {
      randomFillSync(this.random);
      this.randomLeft = this.random.length;
    }
    return this.random[--this.randomLeft];
  }

  /** The dispatcher's TCP handler: `ip` holds a validated IPv4 packet with a valid TCP header. */
  readonly input = (ip: Ipv4Packet): void => {
    if (this.closed) return;
    const tcp = this.tcp;
    // The dispatcher validated header and options already: only point our own view at it
    // (a second wrap() would walk the options again for every segment).
    tcp.wrapUnchecked(ip.buffer, ip.payloadOffset, ip.payloadLen);
    const seg: TcpSegment = {
      srcPort: tcp.srcPort,
      dstPort: tcp.dstPort,
      seq: tcp.seq,
      ack: tcp.ack,
      flags: tcp.flags,
      window: tcp.window,
      options: tcp.optionsLen > 0 ? this.readOptions(tcp) : noOptions(),
      // A plain Uint8Array view, not a Buffer: the connection copies what it keeps with
      // slice(), which on a Buffer would be another view of the reused receive buffer.
      payload: tcp.payloadLen > 0 ? new Uint8Array(ip.buffer.buffer, ip.buffer.byteOffset + tcp.payloadOffset, tcp.payloadLen) : EMPTY_PAYLOAD,
    };
    this.table.input(this.clock.now(), ip.src, ip.dst, seg);
    this.schedule();
  };

  private readOptions(tcp: TcpPacket): TcpSegmentOptions {
    const o = this.opt;
    tcp.readOptions(o);
    const out: TcpSegmentOptions = {};
    if (o.mss >= 0) out.mss = o.mss;
    if (o.wscale >= 0) out.wscale = o.wscale;
    if (o.sackPermitted) out.sackPermitted = true;
    if (o.hasTimestamp) out.timestamp = [o.tsval, o.tsecr];
    if (o.sackCount > 0) {
      const blocks: Array<[number, number]> = [];
      for (let k = 0; k < o.sackCount; k++) blocks.push([o.sack[2 * k], o.sack[2 * k + 1]]);
      out.sack = blocks;
    }
    return out;
  }

  /**
   * Ask for a poll soon: after the current batch of input (setImmediate runs once the I/O
   * callbacks of this loop turn are done), or after an application call on a connection.
   */
  schedule(): void {
    if (this.immediate === undefined && !this.closed) this.immediate = setImmediate(this.runPoll);
  }

  private readonly runPoll = (): void => {
    this.immediate = undefined;
    this.poll();
  };

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.poll();
  };

  /** Serve every connection that is due, write what they emitted, re-arm the timer. */
  poll(): void {
    if (this.closed) return;
    const now = this.clock.now();
    this.table.poll(now, this.emit);
    this.flushOut();
    const at = this.table.pollAt();
    if (at === undefined) return;
    if (at <= now) {
      this.schedule();
      return;
    }
    // Re-arm only when the deadline moves earlier; a late timer just polls and re-arms.
    if (at < this.timerAt) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timerAt = at;
      this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(at - now)));
    }
  }

  private emitSegment(srcIp: number, dstIp: number, seg: TcpSegment, sendMss: number): void {
    if (this.outUsed + MAX_PACKET > this.outBuf.length) this.flushOut();
    const start = this.outUsed;
    if (!this.link.vnetHdr) {
      const n = emitTcpIpv4(seg, this.outBuf, start, srcIp, dstIp);
      this.outViews.push(this.outBuf.subarray(start, start + n));
      this.outUsed += n;
      return;
    }
    // Checksum offload: the kernel completes the TCP checksum, and segments a payload longer
    // than one MSS into the connection's segment size.
    const tail = seg.payloadTail;
    const payload = seg.payload.length + (tail === undefined ? 0 : tail.length);
    const gso = payload > sendMss ? sendMss : 0;
    if (payload >= PARTS_MIN && this.link.sendParts !== undefined) {
      // A large payload goes out from where it lies (the send buffer's chunks, or its
      // scratch), after its headers, in one writev: no copy. What the arena holds goes first,
      // so a flow's segments keep their order.
      this.flushOut();
      const h = emitTcpIpv4Head(seg, payload, this.outBuf, VNET_HDR_LEN, srcIp, dstIp);
      writeVnetTcp(this.outBuf, 0, IPV4_HEADER_LEN, h - IPV4_HEADER_LEN, gso);
      if (!this.link.sendParts(this.outBuf.subarray(0, VNET_HDR_LEN + h), seg.payload, tail) && this.log.isLevelEnabled('debug')) {
        this.log.debug({ dropped: 1 }, 'tun refused segments (queue full)');
      }
      return;
    }
    if (tail !== undefined) {
      // A small payload in two pieces: one contiguous copy for the arena path.
      const whole = allocBytes(payload);
      whole.set(seg.payload);
      whole.set(tail, seg.payload.length);
      seg.payload = whole;
      seg.payloadTail = undefined;
    }
    const n = emitTcpIpv4(seg, this.outBuf, start + VNET_HDR_LEN, srcIp, dstIp, 64, 0, true);
    writeVnetTcp(this.outBuf, start, IPV4_HEADER_LEN, n - IPV4_HEADER_LEN - payload, gso);
    this.outViews.push(this.outBuf.subarray(start, start + VNET_HDR_LEN + n));
    this.outUsed += VNET_HDR_LEN + n;
  }

  private flushOut(): void {
    const views = this.outViews;
    if (views.length === 0) return;
    const sent = this.link.sendMany(views);
    if (sent < views.length && this.log.isLevelEnabled('debug')) {
      this.log.debug({ dropped: views.length - sent }, 'tun refused segments (queue full)');
    }
    views.length = 0;
    this.outUsed = 0;
  }

  /** Stop the timers; connections are left as they are (the link is going away). */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }
}
