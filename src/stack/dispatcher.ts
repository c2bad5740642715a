/**
 * The first stop of every packet that leaves the host through the TUN device: validate the
 * IPv4 header and the transport header, count and drop what is malformed, and hand the rest
 * to its protocol. One view object per layer is reused for every packet, so the hot loop
 * allocates nothing.
 *
 * Today ICMP echo is answered here; TCP and UDP are handed to the handlers the app installs
 * (the userspace stack) and counted as `no_handler` while none is installed.
 */
import type { Link, PacketBatch } from '../link/link.js';
import type { Logger } from '../logger.js';
import { newDropCounters, type DropCounters, type DropReason } from '../wire/drop.js';
import { Ipv4Packet, IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { IcmpPacket, ICMP_ECHO_REQUEST, echoReplyInPlace } from '../wire/icmp.js';
import { TcpPacket } from '../wire/tcp.js';
import { UdpPacket } from '../wire/udp.js';
import type { Ipv4Reassembler } from './ip-reassembly.js';
import { VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID, vnetFlags, writeVnetNone } from '../wire/virtio-net.js';

/**
 * A transport handler sees a packet whose IPv4 and transport headers were validated. On a
 * vnet-header link the packet may be a TCP super-packet larger than the MTU.
 */
export type TransportHandler = (ip: Ipv4Packet) => void;

/**
 * Asked first for every valid IPv4 packet (any protocol, fragments too), before anything is
 * terminated: true when it took the packet whole (a tunnel seals and sends it). `vnetOff` is
 * the offset of the packet's virtio-net header in `ip.buffer`, or -1. Nothing may be kept.
 */
export type ForwardHandler = (ip: Ipv4Packet, vnetOff: number) => boolean;

export interface DispatcherOptions {
  link: Link;
  icmp: 'reply' | 'drop';
  logger: Logger;
  tcp?: TransportHandler;
  udp?: TransportHandler;
  /** Fragments go here to be made whole; without one they are dropped as 'fragment'. */
  reassembler?: Ipv4Reassembler;
  /** Tunnel forwarding (only installed when a tunnel exists: one rule lookup per packet). */
  forward?: ForwardHandler;
}

export interface DispatcherStats {
  rxPackets: number;
  tcpPackets: number;
  udpPackets: number;
  icmpEchoReplied: number;
  icmpEchoDropped: number;
  /** Fragments taken in by the reassembler (held or completed, not dropped). */
  fragments: number;
  dropped: number;
  drops: DropCounters;
}

export class PacketDispatcher {
  private readonly link: Link;
  private readonly icmpMode: 'reply' | 'drop';
  private readonly log: Logger;
  private readonly ip = new Ipv4Packet();
  private readonly icmp = new IcmpPacket();
  private readonly tcp = new TcpPacket();
  private readonly udp = new UdpPacket();
  private tcpHandler: TransportHandler | undefined;
  private udpHandler: TransportHandler | undefined;
  private readonly reassembler: Ipv4Reassembler | undefined;
  private readonly forward: ForwardHandler | undefined;
  /** The virtio header of the packet onVnetPacket is passing to onPacket, else -1. */
  private vnetOff = -1;
  private readonly s: DispatcherStats;

  constructor(opts: DispatcherOptions) {
    this.link = opts.link;
    this.icmpMode = opts.icmp;
    this.log = opts.logger;
    this.tcpHandler = opts.tcp;
    this.udpHandler = opts.udp;
    this.reassembler = opts.reassembler;
    this.forward = opts.forward;
    this.s = { rxPackets: 0, tcpPackets: 0, udpPackets: 0, icmpEchoReplied: 0, icmpEchoDropped: 0, fragments: 0, dropped: 0, drops: newDropCounters() };
  }

  setTcpHandler(h: TransportHandler | undefined): void {
    this.tcpHandler = h;
  }

  setUdpHandler(h: TransportHandler | undefined): void {
    this.udpHandler = h;
  }

  /** A UDP packet the link answered itself (Link.answerQueries): counted as one this read. */
  countAnsweredAtLink(): void {
    this.s.rxPackets++;
    this.s.udpPackets++;
  }

  /** A snapshot; the live counters stay private. */
  stats(): DispatcherStats {
    return { ...this.s, drops: { ...this.s.drops } };
  }

  onBatch(batch: PacketBatch): void {
    const { buf, offsets, lengths, count } = batch;
    if (this.link.vnetHdr) {
      for (let i = 0; i < count; i++) this.onVnetPacket(buf, offsets[i], lengths[i]);
    } else {
      for (let i = 0; i < count; i++) this.onPacket(buf, offsets[i], lengths[i], true);
    }
  }

  /** A packet behind a virtio-net header (the header is at `off`). */
  onVnetPacket(buf: Uint8Array, off: number, len: number): void {
    if (len < VNET_HDR_LEN) {
      this.s.rxPackets++;
      return this.drop('too_short');
    }
    // The kernel marks what it built itself: a partial checksum (to be completed by a NIC that
    // does not exist here) or one it already verified. Either way there is nothing to check.
    const trusted = (vnetFlags(buf, off) & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) !== 0;
    this.vnetOff = off;
    this.onPacket(buf, off + VNET_HDR_LEN, len - VNET_HDR_LEN, !trusted);
  }

  onPacket(buf: Uint8Array, off: number, len: number, verifyTransport = true): void {
    this.s.rxPackets++;
    const vnetOff = this.vnetOff;
    this.vnetOff = -1;
    const ip = this.ip;
    const bad = ip.wrap(buf, off, len);
    if (bad !== undefined) {
      // IPv6 is not malformed, just not ours (yet): the kernel sends router solicitations
      // and neighbour discovery into every new device.
      return this.drop(bad === 'bad_version' && len > 0 && buf[off] >>> 4 === 6 ? 'ipv6' : bad);
    }
    if (this.forward !== undefined && this.forward(ip, vnetOff)) return;
    if (ip.isFragment) {
      if (this.reassembler === undefined) return this.drop('fragment');
      const whole = this.reassembler.input(ip);
      if (typeof whole === 'string') return this.drop(whole);
      this.s.fragments++;
      if (whole === undefined) return; // held until the rest arrives
      // The whole datagram is a packet of its own (counted again in rxPackets); its pieces'
      // checksums were not final, the reassembled one is checked like any other.
      return this.onPacket(whole, 0, whole.length, true);
    }
    switch (ip.protocol) {
      case IP_PROTO_ICMP:
        return this.onIcmp(ip);
      case IP_PROTO_TCP: {
        const r = this.tcp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen);
        if (r !== undefined) return this.drop(r);
        if (verifyTransport && !this.tcp.verifyChecksum(ip.src, ip.dst)) return this.drop('bad_tcp_checksum');
        if (!this.tcpHandler) return this.drop('no_handler');
        this.s.tcpPackets++;
        return this.tcpHandler(ip);
      }
      case IP_PROTO_UDP: {
        const r = this.udp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen);
        if (r !== undefined) return this.drop(r);
        if (verifyTransport && !this.udp.verifyChecksum(ip.src, ip.dst)) return this.drop('bad_udp_checksum');
        if (!this.udpHandler) return this.drop('no_handler');
        this.s.udpPackets++;
        return this.udpHandler(ip);
      }
      default:
        return this.drop('unsupported_protocol');
    }
  }

  private onIcmp(ip: Ipv4Packet): void {
    const icmp = this.icmp;
    const bad = icmp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen);
    if (bad !== undefined) return this.drop(bad);
    if (icmp.type !== ICMP_ECHO_REQUEST || icmp.code !== 0) return this.drop('unsupported_icmp');
    if (this.icmpMode === 'drop') {
      this.s.icmpEchoDropped++;
      return;
    }
    // The request becomes its own reply in the receive buffer: no copy, no allocation but
    // the view that send() takes.
    echoReplyInPlace(ip, icmp);
    let reply = ip.buffer.subarray(ip.offset, ip.offset + ip.length);
    if (this.link.vnetHdr) {
      if (ip.offset >= VNET_HDR_LEN) {
        // The request's own virtio header sits right before it: reuse it as "nothing to do".
        reply = ip.buffer.subarray(ip.offset - VNET_HDR_LEN, ip.offset + ip.length);
      } else {
        // A reassembled request has no header room before it (rare: large pings only).
        const withHdr = new Uint8Array(VNET_HDR_LEN + ip.length);
        withHdr.set(reply, VNET_HDR_LEN);
        reply = withHdr;
      }
      writeVnetNone(reply, 0);
    }
    if (this.link.send(reply)) this.s.icmpEchoReplied++;
  }

  private drop(reason: DropReason): void {
    this.s.dropped++;
    this.s.drops[reason]++;
    if (this.log.isLevelEnabled('trace')) this.log.trace({ reason }, 'packet dropped');
  }
}
