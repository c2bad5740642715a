/**
 * The bridge between UDP packets and flows: the dispatcher hands every validated IPv4/UDP
 * packet to `input`, which finds (or opens) the app's flow and passes the datagram to the
 * flow's listener; the relay answers through `sendToApp` and `sendUnreachable`.
 *
 *   app socket A:a ──► tun0 ──► input() ─► flow table [A:a → D:d] ─► listener.onDatagram
 *   app socket A:a ◄── tun0 ◄── flush() ◄─ sendToApp(flow, R:r, payload)   (any R:r: full cone)
 *
 * Endpoint-independent filtering ("full cone", RFC 4787 §5): a reply from any remote address
 * and port reaches the app's socket, with that remote as its source, through the flow that
 * carried the app's datagrams out. The app sees what it would see behind a full-cone NAT: a
 * STUN server's answer from its second address, a DNS answer from an anycast sibling.
 *
 * Replies are built as IPv4/UDP with both checksums (`emitUdpIpv4`) into one staging buffer
 * and written to the link together after the current batch of work (setImmediate), like the
 * TCP stack; those staged while a received batch is handed in (batchStart/batchEnd) leave
 * right after that batch, in one write. A reply larger than the MTU is built with DF clear and cut into fragments
 * (`fragmentIpv4`), as the kernel does for a UDP socket's datagram larger than the path MTU;
 * one that fits keeps DF set.
 */
import type { Clock } from '../../clock.js';
import type { Link } from '../../link/link.js';
import type { Logger } from '../../logger.js';
import { IPV4_HEADER_LEN, IP_PROTO_UDP, writeIpv4Header, type Ipv4Packet } from '../../wire/ipv4.js';
import { UdpPacket, UdpRepr, UDP_HEADER_LEN, emitUdpIpv4 } from '../../wire/udp.js';
import { emitIcmpUnreachableIpv4 } from '../../wire/icmp.js';
import { VNET_HDR_LEN, writeVnetNone } from '../../wire/virtio-net.js';
import { fragmentIpv4, fragmentedSize } from '../../wire/ipv4-fragment.js';
import { UdpFlowTable, UDP_QUOTE_MAX, type UdpFlow, type UdpFlowListener, type UdpFlowTableOptions, type UdpFlowTableStats } from './flow-table.js';

/** The largest UDP payload an IPv4 datagram carries: 65,535 − 20 − 8. */
export const UDP_MAX_PAYLOAD = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/** Output collected per flush before it is written (bounded: flushes early when full). */
const OUT_BUFFER = 1 << 20;

/**
 * Decides about the first datagram of a 5-tuple: return the flow's listener, or `undefined` to
 * refuse it (the datagram is dropped; the handler may have answered with `sendUnreachable`).
 * The flow's quote already holds this datagram.
 */
export type UdpFlowHandler = (flow: UdpFlow) => UdpFlowListener | undefined;

export interface UdpStackOptions {
  link: Link;
  clock: Clock;
  logger: Logger;
  /** Flow table limits and timeouts (defaults: 4096 flows, 60 s idle, 10 s for port 53). */
  table?: Omit<UdpFlowTableOptions, 'clock'>;
}

export interface UdpStackStats {
  /** Datagrams from apps handed to a flow. */
  datagramsIn: number;
  bytesIn: number;
  /** Replies written (fragmented ones count once). */
  datagramsOut: number;
  bytesOut: number;
  /** Replies that had to be fragmented. */
  fragmentedOut: number;
  /** ICMP errors sent to apps. */
  icmpOut: number;
  /** First datagrams whose flow the handler refused. */
  refused: number;
  /** Datagrams to a multicast or broadcast address, or to/from port 0: not proxied. */
  unroutable: number;
  /** Packets the link did not accept. */
  txDropped: number;
  /** Replies dropped because they were too large or their flow had ended. */
  replyDropped: number;
  flows: UdpFlowTableStats;
}

export class UdpStack {
  readonly table: UdpFlowTable;
  private readonly link: Link;
  private readonly log: Logger;
  private readonly udp = new UdpPacket();
  private handler: UdpFlowHandler = () => undefined;

  // Output staging: packets laid end to end in one buffer, written as one batch.
  private readonly outBuf = Buffer.allocUnsafe(OUT_BUFFER);
  private outUsed = 0;
  private readonly outViews: Uint8Array[] = [];
  /** A whole datagram larger than the MTU is built here before it is cut. */
  private readonly bigBuf = Buffer.allocUnsafe(65535);
  /** …and its pieces here, before each is staged behind its own vnet header (if any). */
  private readonly fragBuf: Buffer;
  private readonly lengths: number[] = [];
  private ident = 1;
  private immediate: NodeJS.Immediate | undefined;
  /** Inside a receive batch (batchStart..batchEnd): what is staged leaves at batchEnd, with no timer. */
  private inBatch = false;
  private closed = false;
  private readonly s: Omit<UdpStackStats, 'flows'> = {
    datagramsIn: 0,
    bytesIn: 0,
    datagramsOut: 0,
    bytesOut: 0,
    fragmentedOut: 0,
    icmpOut: 0,
    refused: 0,
    unroutable: 0,
    txDropped: 0,
    replyDropped: 0,
  };

  constructor(opts: UdpStackOptions) {
    this.link = opts.link;
    this.log = opts.logger;
    this.table = new UdpFlowTable({ ...opts.table, clock: opts.clock });
    this.fragBuf = Buffer.allocUnsafe(fragmentedSize(65535, IPV4_HEADER_LEN, Math.max(68, this.link.mtu)));
  }

  /** Who decides about the first datagram of a new 5-tuple. Until set, every flow is refused. */
  setFlowHandler(h: UdpFlowHandler): void {
    this.handler = h;
  }

  stats(): UdpStackStats {
    return { ...this.s, flows: this.table.stats };
  }

  /** A datagram the link answered itself (Link.answerQueries), with its reply: counted as ours. */
  countAnsweredAtLink(bytesIn: number, bytesOut: number): void {
    this.s.datagramsIn++;
    this.s.bytesIn += bytesIn;
    this.s.datagramsOut++;
    this.s.bytesOut += bytesOut;
  }

  /** The dispatcher's UDP handler: `ip` holds a validated IPv4 packet with a valid UDP header. */
  readonly input = (ip: Ipv4Packet): void => {
    if (this.closed) return;
    const udp = this.udp;
    // Validated by the dispatcher; wrap again only to point our own view at it.
    if (udp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen) !== undefined) return;
    const srcIp = ip.src;
    const dstIp = ip.dst;
    const srcPort = udp.srcPort;
    const dstPort = udp.dstPort;
    if (srcPort === 0 || dstPort === 0 || dstIp >>> 28 >= 0xe) {
      // Multicast (224/4), reserved and limited broadcast (240/4), port 0: nothing a proxy can
      // carry. Dropped quietly — no ICMP error about a multicast (RFC 1122 §3.2.2). (A subnet's
      // directed broadcast cannot be told from a host here: x.y.z.255 is a host in a /16.)
      this.s.unroutable++;
      return;
    }
    let flow = this.table.get(srcIp, srcPort, dstIp, dstPort);
    if (flow === undefined) {
      flow = this.table.create(srcIp, srcPort, dstIp, dstPort);
      this.keepQuote(flow, ip);
      const listener = this.handler(flow);
      if (listener === undefined) {
        this.s.refused++;
        this.table.delete(flow, 'closed');
        return;
      }
      if (flow.closed) return; // the handler ended it already
      flow.listener = listener;
    } else {
      this.keepQuote(flow, ip);
    }
    const len = udp.payloadLen;
    flow.packetsUp++;
    flow.bytesUp += len;
    this.s.datagramsIn++;
    this.s.bytesIn += len;
    // A plain Uint8Array view (not a Buffer), valid during the call only.
    const payload = new Uint8Array(ip.buffer.buffer, ip.buffer.byteOffset + udp.payloadOffset, len);
    flow.listener?.onDatagram(payload, flow);
  };

  private keepQuote(flow: UdpFlow, ip: Ipv4Packet): void {
    const n = Math.min(ip.length, ip.headerLen + 8, UDP_QUOTE_MAX);
    flow.quote.set(ip.buffer.subarray(ip.offset, ip.offset + n));
    flow.quoteLen = n;
  }

  /**
   * Send `payload` to the app's socket of `flow`, from `fromIp:fromPort` (any remote: full
   * cone). Keeps the flow alive. The bytes are copied; false when dropped (flow ended, too
   * large, stack closed).
   */
  sendToApp(flow: UdpFlow, fromIp: number, fromPort: number, payload: Uint8Array): boolean {
    if (this.closed || !this.table.touch(flow) || payload.length > UDP_MAX_PAYLOAD) {
      this.s.replyDropped++;
      return false;
    }
    flow.packetsDown++;
    flow.bytesDown += payload.length;
    return this.emitDatagram(fromIp, fromPort, flow.srcIp, flow.srcPort, payload);
  }

  /**
   * Send `payload` from `fromIp:fromPort` to `toIp:toPort` without a flow: for an answer that
   * is owed even when its flow has expired meanwhile (a DNS answer that took longer than the
   * flow's idle timeout). Copied; false when dropped.
   */
  sendDatagram(fromIp: number, fromPort: number, toIp: number, toPort: number, payload: Uint8Array): boolean {
    if (this.closed || payload.length > UDP_MAX_PAYLOAD) {
      this.s.replyDropped++;
      return false;
    }
    return this.emitDatagram(fromIp, fromPort, toIp, toPort, payload);
  }

  /**
   * Tell the app its datagram could not be delivered: ICMP destination unreachable with
   * `code` (3 port, 1 host, 13 administratively prohibited…), from `from` (default: the
   * flow's destination, as if that host answered), quoting `quote` (default: the flow's last
   * datagram). False when no error may be sent (RFC 1122 §3.2.2) or the stack is closed.
   */
  sendUnreachable(flow: UdpFlow, code: number, quote?: Uint8Array, from: number = flow.dstIp): boolean {
    if (this.closed) return false;
    const q = quote ?? flow.quote.subarray(0, flow.quoteLen);
    if (q.length === 0) return false;
    const vnet = this.link.vnetHdr ? VNET_HDR_LEN : 0;
    const start = this.reserve(vnet + IPV4_HEADER_LEN + 8 + UDP_QUOTE_MAX);
    const off = start + vnet;
    const n = emitIcmpUnreachableIpv4(q, code, from, this.outBuf, off);
    if (n === 0) return false;
    this.commit(start, off + n);
    this.s.icmpOut++;
    return true;
  }

  /** End a flow now (the relay's upstream died); its listener's onClosed runs. */
  closeFlow(flow: UdpFlow): void {
    this.table.delete(flow, 'closed');
  }

  /** Close idle-expired flows; the owner calls this periodically (e.g. every second). */
  sweep(): number {
    return this.table.sweep();
  }

  /**
   * A batch of received packets is about to be handed in: replies staged while it is (answers
   * given at once, such as fake-IP DNS) are written together at batchEnd(), without arming a
   * setImmediate per batch. Replies staged outside a batch still leave on the next turn.
   */
  batchStart(): void {
    this.inBatch = true;
  }

  /** The batch is done: write what it staged. */
  batchEnd(): void {
    this.inBatch = false;
    this.flush();
  }

  /** Write everything staged to the link now. */
  flush(): void {
    if (this.immediate !== undefined) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    const views = this.outViews;
    if (views.length === 0) return;
    const sent = this.link.sendMany(views);
    if (sent < views.length) {
      this.s.txDropped += views.length - sent;
      if (this.log.isLevelEnabled('debug')) this.log.debug({ dropped: views.length - sent }, 'tun refused UDP replies (queue full)');
    }
    views.length = 0;
    this.outUsed = 0;
  }

  /** End every flow and stop writing. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.table.clear('shutdown');
  }

  // --- output -------------------------------------------------------------------------------

  private emitDatagram(srcIp: number, srcPort: number, dstIp: number, dstPort: number, payload: Uint8Array): boolean {
    const repr: UdpRepr = { srcPort, dstPort, payload };
    const total = IPV4_HEADER_LEN + UDP_HEADER_LEN + payload.length;
    const vnet = this.link.vnetHdr ? VNET_HDR_LEN : 0;
    const mtu = this.link.mtu;
    if (total <= mtu) {
      const start = this.reserve(vnet + total);
      emitUdpIpv4(repr, this.outBuf, start + vnet, srcIp, dstIp);
      this.commit(start, start + vnet + total);
    } else {
      // Too big for one packet: build it whole (DF clear, a fresh identification), then cut.
      emitUdpIpv4Into(repr, this.bigBuf, 0, srcIp, dstIp, this.nextIdent(), false);
      const lengths = this.lengths;
      lengths.length = 0;
      const r = fragmentIpv4(this.bigBuf.subarray(0, total), mtu, this.fragBuf, 0, lengths);
      if (typeof r !== 'number') {
        this.s.replyDropped++;
        return false;
      }
      let o = 0;
      for (const l of lengths) {
        const start = this.reserve(vnet + l);
        this.outBuf.set(this.fragBuf.subarray(o, o + l), start + vnet);
        this.commit(start, start + vnet + l);
        o += l;
      }
      this.s.fragmentedOut++;
    }
    this.s.datagramsOut++;
    this.s.bytesOut += payload.length;
    return true;
  }

  private nextIdent(): number {
    const id = this.ident;
    this.ident = (this.ident + 1) & 0xffff || 1;
    return id;
  }

  /** Room for `n` bytes in the staging buffer (flushing first when full); returns the start. */
  private reserve(n: number): number {
    if (this.outUsed + n > this.outBuf.length) this.flush();
    return this.outUsed;
  }

  /** Stage the packet at outBuf[start, end); on a vnet link its header ("nothing to do") goes at `start`. */
  private commit(start: number, end: number): void {
    if (this.link.vnetHdr) writeVnetNone(this.outBuf, start);
    // A plain view: Buffer#subarray builds a FastBuffer, measurably slower per packet.
    this.outViews.push(new Uint8Array(this.outBuf.buffer, this.outBuf.byteOffset + start, end - start));
    this.outUsed = end;
    if (this.immediate === undefined && !this.inBatch) this.immediate = setImmediate(this.runFlush);
  }

  private readonly runFlush = (): void => {
    this.immediate = undefined;
    this.flush();
  };
}

/** emitUdpIpv4 with the IP identification and DF chosen by the caller (for a datagram to cut). */
function emitUdpIpv4Into(repr: UdpRepr, buf: Uint8Array, off: number, srcIp: number, dstIp: number, ident: number, dontFrag: boolean): number {
  const l = UdpRepr.emit(repr, buf, off + IPV4_HEADER_LEN, srcIp, dstIp);
  writeIpv4Header(buf, off, srcIp, dstIp, IP_PROTO_UDP, l, 64, 0, ident, dontFrag);
  return IPV4_HEADER_LEN + l;
}
