/**
 * A WireGuard tunnel of `tunroute up` on tun0 — the forwarding half of DESIGN.md decision 1
 * ("forward for the tunnel"): whole IP packets from the device are sealed and sent to a peer,
 * whole packets from the peers are opened and written back to the device. Nothing is
 * terminated; the apps' own TCP keeps end-to-end reliability. The protocol, the socket, the
 * timer and cryptokey routing are the runtime's (runtime.ts, shared with `tunroute server`);
 * this file adds the client's device-facing packet path, as wireguard-go's device/send.go and
 * receive.go add it around the protocol:
 *
 *   device ──► sendPacket ──► undo offloads (GSO split, checksums) ──► MTU: ICMP "fragmentation
 *              needed" for DF, else fragment ──► NAT src, clamp MSS ──► cryptokey routing: the
 *              peer whose AllowedIPs hold the destination (longest prefix) ──► runtime ──► UDP
 *   UDP ──► runtime: only packets whose SOURCE lies in that peer's AllowedIPs (whitepaper §2:
 *              "Cryptokey Routing") ──► NAT dst, clamp MSS ──► (GRO on a vnet device) ──► device
 *
 * Nothing here throws on packets or datagrams: every refusal is a counter.
 */
import type { Clock, Timers } from '../clock.js';
import type { Logger } from '../logger.js';
import { fragmentIpv4, fragmentedSize } from '../wire/ipv4-fragment.js';
import { getU16, getU32 } from '../wire/checksum.js';
import { emitIcmpUnreachableIpv4, ICMP_UNREACH_FRAG_NEEDED, ICMP_UNREACH_HOST } from '../wire/icmp.js';
import type { Ipv4Packet } from '../wire/ipv4.js';
import { VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_HDR_LEN, writeVnetNone } from '../wire/virtio-net.js';
import { DEVICE_DROP_REASONS, type DeviceDropReason } from './device.js';
import type { RandomSource } from './keys.js';
import { clampMss } from './mss.js';
import type { Endpoint } from './endpoint.js';
import { natInbound, natOutbound } from './nat.js';
import { undoOffloads } from './offload.js';
import { TcpCoalescer, type GroStats } from './gro.js';
import { DEFAULT_TUNNEL_MTU, PEER_DROP_REASONS, type PeerDropReason } from './peer.js';
import { TunnelRuntime, type TunnelCounters, type TunnelPeer, type TunnelPeerConfig, type TunnelPeerStatus } from './runtime.js';
import type { UdpTransport } from './transport.js';

/** A peer of a client tunnel (the same fields as the server's). */
export type WireguardPeerConfig = TunnelPeerConfig;

/**
 * The device the tunnel reads from and writes to, as much of a Link as it needs (the protocol
 * layer knows no link/): whether frames carry a virtio-net header, and a write that may refuse.
 */
export interface TunnelDevice {
  readonly vnetHdr: boolean;
  send(frame: Uint8Array): boolean;
}

export interface WireguardTunnelOptions {
  /** The tunnel's name (for logs and status). */
  name: string;
  privateKey: Uint8Array;
  peers: readonly WireguardPeerConfig[];
  /** Largest inner packet sent as it is (wg-quick MTU; default 1420). */
  mtu?: number;
  /** Where decrypted packets go (and ICMP errors about refused ones). */
  link: TunnelDevice;
  transport: UdpTransport;
  clock: Clock;
  /** The protocol's timer; default the clock's own (a ManualClock's), else the event loop's. */
  timers?: Timers;
  logger: Logger;
  /**
   * The tunnel's own IPv4 address (wg-quick Address) and the device's address: packets from
   * `deviceAddress` leave with source `address`, packets to `address` are delivered to
   * `deviceAddress` (see nat.ts). Both or neither.
   */
  address?: number;
  deviceAddress?: number;
  /**
   * Runs `fn` once the current turn of the event loop has read what it could (default
   * setImmediate): decrypted packets wait until then, so segments of one flow go to a vnet
   * device as one super-packet (see gro.ts).
   */
  defer?: (fn: () => void) => void;
  random?: RandomSource;
  wallClock?: () => number;
}

/**
 * Why the tunnel (not the protocol) refused a packet:
 * - no_peer: no peer's AllowedIPs hold the destination (ICMP host unreachable is sent back)
 * - too_big: larger than the tunnel MTU with DF set (ICMP fragmentation needed is sent back)
 * - unsupported_gso / bad_offload: a virtio header we cannot undo (see offload.ts)
 * - not_ipv4: a peer sent an IPv6 packet (tunroute routes IPv4 only)
 * - link_full: the device did not take a decrypted packet
 */
export const TUNNEL_DROP_REASONS = ['no_peer', 'too_big', 'unsupported_gso', 'bad_offload', 'not_ipv4', 'link_full'] as const;
export type TunnelDropReason = (typeof TUNNEL_DROP_REASONS)[number];

/** Inner packets sent into the tunnel / delivered from it, and their bytes (the runtime's counts). */
type PacketTotals = Pick<TunnelCounters, 'txPackets' | 'txBytes' | 'rxPackets' | 'rxBytes'>;

export interface TunnelStats extends PacketTotals {
  name: string;
  listenPort: number;
  mtu: number;
  /** Super-packets cut into segments, and oversized (non-DF) packets fragmented. */
  gsoSplit: number;
  fragmented: number;
  natOut: number;
  natIn: number;
  mssClamped: number;
  icmpSent: number;
  /** Datagrams the UDP socket could not take. */
  udpSendDrops: number;
  /** Writes to a vnet device: frames, the packets in them, and how many frames were super-packets. */
  gro: GroStats;
  dropped: Record<TunnelDropReason, number>;
  /** Datagrams the protocol dropped before a peer saw them (only non-zero reasons). */
  deviceDropped: Partial<Record<DeviceDropReason, number>>;
  /** Sum over the peers of the protocol's drop counters (disallowed_source, forged, replayed, ...). */
  peerDropped: Partial<Record<PeerDropReason, number>>;
  peers: TunnelPeerStatus[];
}

/** The client path's own counters (the packet totals are the runtime's). */
type PathCounters = Pick<TunnelStats, 'gsoSplit' | 'fragmented' | 'natOut' | 'natIn' | 'mssClamped' | 'icmpSent' | 'dropped'>;

/** Largest IPv4 packet plus a virtio header: every scratch buffer fits any packet. */
const MAX_PACKET = 65535 + VNET_HDR_LEN;

export class WireguardTunnel {
  readonly name: string;
  readonly mtu: number;
  private readonly runtime: TunnelRuntime;
  private readonly link: TunnelDevice;
  private readonly address: number | undefined;
  private readonly deviceAddress: number | undefined;
  private readonly maxMss: number;
  private readonly s: PathCounters;
  private readonly defer: (fn: () => void) => void;
  private readonly gro: TcpCoalescer;
  /** Decrypted packets waiting for the end of the turn (vnet devices only). */
  private pending: Uint8Array[] = [];
  private flushScheduled = false;
  /** Segments of a super-packet are built here one at a time. */
  private readonly segment = new Uint8Array(MAX_PACKET);
  private readonly fragments = new Uint8Array(2 * MAX_PACKET);
  private readonly fragLengths: number[] = [];
  private readonly icmp = new Uint8Array(VNET_HDR_LEN + 128);
  /** The peer of the packet being sent (set by sendPacket, read by emit). */
  private target: TunnelPeer | undefined;
  private closed = false;

  constructor(opts: WireguardTunnelOptions) {
    this.name = opts.name;
    this.mtu = opts.mtu ?? DEFAULT_TUNNEL_MTU;
    this.maxMss = this.mtu - 40;
    this.link = opts.link;
    if ((opts.address === undefined) !== (opts.deviceAddress === undefined)) {
      throw new RangeError('WireguardTunnel: address and deviceAddress go together');
    }
    this.address = opts.address;
    this.deviceAddress = opts.deviceAddress;
    const dropped = {} as Record<TunnelDropReason, number>;
    for (const r of TUNNEL_DROP_REASONS) dropped[r] = 0;
    this.s = { gsoSplit: 0, fragmented: 0, natOut: 0, natIn: 0, mssClamped: 0, icmpSent: 0, dropped };
    this.defer = opts.defer ?? ((fn) => void setImmediate(fn));
    this.gro = new TcpCoalescer((frame) => this.link.send(frame));
    this.runtime = new TunnelRuntime({
      privateKey: opts.privateKey,
      peers: opts.peers,
      transport: opts.transport,
      clock: opts.clock,
      timers: opts.timers,
      logger: opts.logger,
      mtu: this.mtu,
      random: opts.random,
      wallClock: opts.wallClock,
    });
    this.runtime.onPacket(this.deliver);
  }

  /** The UDP port the tunnel listens on. */
  get listenPort(): number {
    return this.runtime.port;
  }

  /** See TunnelRuntime.setEndpoint. */
  setPeerEndpoint(publicKey: string, endpoint: Endpoint): boolean {
    return this.runtime.setEndpoint(publicKey, endpoint);
  }

  /** Bring the peers up: those with a persistent keepalive start their handshake now. */
  start(): void {
    this.runtime.start();
  }

  /**
   * Forward one IPv4 packet read from the device (validated by the dispatcher). `vnetOff` is the
   * offset of its virtio-net header in `ip.buffer`, or -1 on a link without one. The packet's
   * bytes may be rewritten in place (checksums, NAT); nothing is kept after the call.
   */
  sendPacket(ip: Ipv4Packet, vnetOff = -1): void {
    if (this.closed) return;
    const buf = ip.buffer;
    const entry = this.runtime.route(ip.dst);
    if (entry === undefined) {
      this.s.dropped.no_peer++;
      this.icmpError(buf.subarray(ip.offset, ip.offset + ip.length), ICMP_UNREACH_HOST, 0);
      return;
    }
    this.target = entry;
    if (vnetOff >= 0 && (buf[vnetOff] !== 0 || buf[vnetOff + 1] !== 0)) {
      if ((buf[vnetOff + 1] & ~VNET_GSO_ECN) === VNET_GSO_TCPV4) {
        // The kernel cuts at gso_size, its idea of the path MTU: when that is too big, one
        // "fragmentation needed" for the whole super-packet lowers it (RFC 1191).
        const gsoSize = buf[vnetOff + 4] | (buf[vnetOff + 5] << 8);
        const hdr = ip.headerLen + ((buf[ip.payloadOffset + 12] >>> 4) << 2);
        if (hdr + gsoSize > this.mtu && ip.length > this.mtu && ip.dontFrag) {
          this.s.dropped.too_big++;
          this.icmpError(buf.subarray(ip.offset, ip.offset + ip.length), ICMP_UNREACH_FRAG_NEEDED, this.mtu);
          return;
        }
        this.s.gsoSplit++;
      }
      const refused = undoOffloads(buf, vnetOff, ip.offset, ip.length, this.segment, this.emit);
      if (refused !== undefined) this.s.dropped[refused]++;
    } else {
      this.emit(buf.subarray(ip.offset, ip.offset + ip.length));
    }
    this.target = undefined;
  }

  /** One ordinary packet for `this.target`: MTU, NAT, MSS, seal, send. */
  private readonly emit = (p: Uint8Array): void => {
    const entry = this.target!;
    if (p.length > this.mtu) {
      if ((getU16(p, 6) & 0x4000) !== 0) {
        this.s.dropped.too_big++;
        this.icmpError(p, ICMP_UNREACH_FRAG_NEEDED, this.mtu);
        return;
      }
      this.rewriteOut(p);
      const hl = (p[0] & 0x0f) << 2;
      if (fragmentedSize(p.length, hl, this.mtu) > this.fragments.length) return;
      const lengths = this.fragLengths;
      lengths.length = 0;
      const r = fragmentIpv4(p, this.mtu, this.fragments, 0, lengths);
      if (typeof r === 'string') {
        this.s.dropped.too_big++;
        return;
      }
      this.s.fragmented++;
      let off = 0;
      for (const n of lengths) {
        this.runtime.sendTo(entry, this.fragments.subarray(off, off + n));
        off += n;
      }
      return;
    }
    this.rewriteOut(p);
    this.runtime.sendTo(entry, p);
  };

  private rewriteOut(p: Uint8Array): void {
    if (this.address !== undefined && natOutbound(p, 0, p.length, this.deviceAddress!, this.address)) this.s.natOut++;
    if (clampMss(p, 0, p.length, this.maxMss)) this.s.mssClamped++;
  }

  /** A decrypted packet whose source the peer may use: to the device. */
  private readonly deliver = (p: Uint8Array): void => {
    if (this.closed) return;
    if (p[0] >>> 4 !== 4) {
      this.s.dropped.not_ipv4++;
      return;
    }
    if (this.address !== undefined && natInbound(p, 0, p.length, this.deviceAddress!, this.address)) this.s.natIn++;
    if (clampMss(p, 0, p.length, this.maxMss)) this.s.mssClamped++;
    if (this.link.vnetHdr) {
      // `p` is the tunnel's own (freshly decrypted) buffer: it can wait for the batch.
      this.pending.push(p);
      if (this.pending.length >= 256) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        this.defer(this.flush);
      }
    } else if (!this.link.send(p)) {
      this.s.dropped.link_full++;
    }
  };

  /** Write the packets decrypted this turn, segments of a flow merged (vnet devices). */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.pending.length === 0 || this.closed) return;
    const batch = this.pending;
    this.pending = [];
    this.s.dropped.link_full += this.gro.write(batch);
  };

  /** ICMP destination unreachable about `original` back to its sender, from the address it tried to reach. */
  private icmpError(original: Uint8Array, code: number, mtu: number): void {
    const off = this.link.vnetHdr ? VNET_HDR_LEN : 0;
    const n = emitIcmpUnreachableIpv4(original, code, getU32(original, 16), this.icmp, off, mtu);
    if (n === 0) return;
    if (off > 0) writeVnetNone(this.icmp, 0);
    if (this.link.send(this.icmp.subarray(0, off + n))) this.s.icmpSent++;
  }

  /** Run the protocol's due timers now (retransmit, keepalive, rekey, key erasure). */
  poll(): void {
    this.runtime.poll();
  }

  /** When the protocol next needs poll() (for tests). */
  pollAt(): number | undefined {
    return this.runtime.pollAt();
  }

  stats(): TunnelStats {
    const deviceDropped: Partial<Record<DeviceDropReason, number>> = {};
    const device = this.runtime.deviceDrops();
    for (const r of DEVICE_DROP_REASONS) if (device[r] > 0) deviceDropped[r] = device[r];
    const peers = this.runtime.peerStatus();
    const peerDropped: Partial<Record<PeerDropReason, number>> = {};
    for (const p of peers) for (const r of PEER_DROP_REASONS) if (p.dropped[r] !== undefined) peerDropped[r] = (peerDropped[r] ?? 0) + p.dropped[r];
    const c = this.runtime.counters;
    return {
      name: this.name,
      listenPort: this.runtime.port,
      mtu: this.mtu,
      txPackets: c.txPackets,
      txBytes: c.txBytes,
      rxPackets: c.rxPackets,
      rxBytes: c.rxBytes,
      ...this.s,
      dropped: { ...this.s.dropped },
      udpSendDrops: this.runtime.udpSendDrops,
      gro: { ...this.gro.stats },
      deviceDropped,
      peerDropped,
      peers,
    };
  }

  /** Erase every key, stop the timer, close the socket. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.runtime.close();
  }
}

/** One tunnel as the config describes it (see config/tunnels.ts tunnelSpecsOf). */
export interface TunnelSpec {
  name: string;
  privateKey: Uint8Array;
  mtu?: number;
  /** UDP port; absent or 0: any free port. */
  listenPort?: number;
  /** The tunnel's own IPv4 address (wg-quick Address), uint32. */
  address?: number;
  peers: WireguardPeerConfig[];
}
