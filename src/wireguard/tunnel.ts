/**
 * A WireGuard tunnel on tun0 — the forwarding half of DESIGN.md decision 1 ("forward for the
 * tunnel"): whole IP packets from the device are sealed and sent to a peer, whole packets from
 * the peers are opened and written back to the device. Nothing is terminated; the apps' own
 * TCP keeps end-to-end reliability. The protocol is the core of this folder (Device, Peer);
 * this file adds what wireguard-go's device/send.go and receive.go add around it:
 *
 *   device ──► sendPacket ──► undo offloads (GSO split, checksums) ──► MTU: ICMP "fragmentation
 *              needed" for DF, else fragment ──► NAT src, clamp MSS ──► cryptokey routing: the
 *              peer whose AllowedIPs hold the destination (longest prefix) ──► Peer.send ──► UDP
 *   UDP ──► Device.receive ──► only packets whose SOURCE lies in that peer's AllowedIPs
 *              (whitepaper §2: "Cryptokey Routing") ──► NAT dst, clamp MSS ──► device
 *
 * One timer, set from Device.pollAt() on the injected clock, runs handshake retransmission,
 * keepalives and rekeying; it is only moved when a deadline comes earlier than the one armed.
 * Nothing here throws on packets or datagrams: every refusal is a counter.
 */
import type { Clock } from '../clock.js';
import type { Link } from '../link/link.js';
import type { Logger } from '../logger.js';
import { CidrTrie } from '../net/cidr-trie.js';
import { fragmentIpv4, fragmentedSize } from '../wire/ipv4-fragment.js';
import { getU16, getU32 } from '../wire/checksum.js';
import { emitIcmpUnreachableIpv4, ICMP_UNREACH_FRAG_NEEDED, ICMP_UNREACH_HOST } from '../wire/icmp.js';
import { type Ipv4Packet } from '../wire/ipv4.js';
import { cidrToString, normalizeCidr, type Cidr } from '../net/ipv4.js';
import { VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_HDR_LEN, writeVnetNone } from '../wire/virtio-net.js';
import { Device, DEVICE_DROP_REASONS, type DeviceDropReason } from './device.js';
import { formatEndpoint, type Datagram, type Endpoint } from './endpoint.js';
import { formatKey, type RandomSource } from './keys.js';
import { clampMss } from './mss.js';
import { natInbound, natOutbound } from './nat.js';
import { undoOffloads } from './offload.js';
import { TcpCoalescer, type GroStats } from './gro.js';
import { DEFAULT_TUNNEL_MTU, PEER_DROP_REASONS, type Peer, type PeerCounters, type PeerDropReason } from './peer.js';
import type { UdpTransport } from './udp-transport.js';

export interface WireguardPeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** Where to send; a peer without one is reached once it has sent us an authenticated packet. */
  endpoint?: Endpoint;
  /** IPv4 prefixes routed to this peer and accepted from it. */
  allowedIPs: readonly Cidr[];
  /** Seconds; 0 or absent: off. */
  persistentKeepaliveSec?: number;
}

/** Timers behind an interface so that tests drive them by hand (default: setTimeout, unref'd). */
export interface TimerScheduler {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realTimers: TimerScheduler = {
  set: (fn, ms) => setTimeout(fn, ms).unref(),
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface WireguardTunnelOptions {
  /** The outbound's name (for logs and status). */
  name: string;
  privateKey: Uint8Array;
  peers: readonly WireguardPeerConfig[];
  /** Largest inner packet sent as it is (wg-quick MTU; default 1420). */
  mtu?: number;
  /** Where decrypted packets go (and ICMP errors about refused ones). */
  link: Link;
  transport: UdpTransport;
  clock: Clock;
  logger: Logger;
  /**
   * The tunnel's own IPv4 address (wg-quick Address) and the device's address: packets from
   * `deviceAddress` leave with source `address`, packets to `address` are delivered to
   * `deviceAddress` (see nat.ts). Both or neither.
   */
  address?: number;
  deviceAddress?: number;
  timers?: TimerScheduler;
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

export interface TunnelPeerStatus {
  publicKey: string;
  endpoint?: string;
  allowedIPs: string[];
  /** Milliseconds since the last completed handshake (absent: never). */
  lastHandshakeAgoMs?: number;
  hasSession: boolean;
  counters: Omit<PeerCounters, 'dropped'>;
  /** Only the non-zero reasons. */
  dropped: Partial<Record<PeerDropReason, number>>;
}

export interface TunnelStats {
  name: string;
  listenPort: number;
  mtu: number;
  /** Inner packets sent into the tunnel / delivered from it, and their bytes. */
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
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

interface PeerEntry {
  readonly config: WireguardPeerConfig;
  peer: Peer;
}

/** Largest IPv4 packet plus a virtio header: every scratch buffer fits any packet. */
const MAX_PACKET = 65535 + VNET_HDR_LEN;

export class WireguardTunnel {
  readonly name: string;
  readonly mtu: number;
  private readonly device: Device;
  private readonly routes = new CidrTrie<PeerEntry>();
  private readonly entries: PeerEntry[] = [];
  private readonly link: Link;
  private readonly transport: UdpTransport;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly timers: TimerScheduler;
  private readonly address: number | undefined;
  private readonly deviceAddress: number | undefined;
  private readonly maxMss: number;
  private readonly s: Omit<TunnelStats, 'name' | 'listenPort' | 'mtu' | 'udpSendDrops' | 'gro' | 'deviceDropped' | 'peerDropped' | 'peers'>;
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
  private target: PeerEntry | undefined;
  private timer: unknown;
  private timerAt = Infinity;
  private dirty = false;
  private closed = false;

  constructor(opts: WireguardTunnelOptions) {
    this.name = opts.name;
    this.mtu = opts.mtu ?? DEFAULT_TUNNEL_MTU;
    this.maxMss = this.mtu - 40;
    this.link = opts.link;
    this.transport = opts.transport;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.timers = opts.timers ?? realTimers;
    if ((opts.address === undefined) !== (opts.deviceAddress === undefined)) {
      throw new RangeError('WireguardTunnel: address and deviceAddress go together');
    }
    this.address = opts.address;
    this.deviceAddress = opts.deviceAddress;
    this.device = new Device({ privateKey: opts.privateKey, random: opts.random, wallClock: opts.wallClock, mtu: this.mtu });
    const dropped = {} as Record<TunnelDropReason, number>;
    for (const r of TUNNEL_DROP_REASONS) dropped[r] = 0;
    this.s = { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, gsoSplit: 0, fragmented: 0, natOut: 0, natIn: 0, mssClamped: 0, icmpSent: 0, dropped };
    this.defer = opts.defer ?? ((fn) => void setImmediate(fn));
    this.gro = new TcpCoalescer((frame) => this.link.send(frame));

    for (const config of opts.peers) {
      const entry = { config } as PeerEntry;
      entry.peer = this.device.addPeer({
        publicKey: config.publicKey,
        presharedKey: config.presharedKey,
        endpoint: config.endpoint,
        persistentKeepaliveSec: config.persistentKeepaliveSec,
        // Cryptokey routing, inbound: the source must be one this very peer is routed for.
        allowedSource: (p) => p.length >= 20 && p[0]! >>> 4 === 4 && this.routes.lookup(getU32(p, 12)) === entry,
      });
      this.entries.push(entry);
      for (const c of config.allowedIPs) {
        const n = normalizeCidr(c);
        const prev = this.routes.get(n.addr, n.prefix);
        if (prev !== undefined) {
          // As `wg set`: an allowed IP belongs to one peer; the later one takes it.
          this.log.warn({ tunnel: this.name, allowedIP: cidrToString(n) }, 'two peers list the same allowed IP; the later peer gets it');
        }
        this.routes.insert(n.addr, n.prefix, entry);
      }
    }
    this.routes.optimize();
    this.transport.onMessage(this.onDatagram);
  }

  /** The UDP port the tunnel listens on. */
  get listenPort(): number {
    return this.transport.port;
  }

  /** Bring the peers up: those with a persistent keepalive start their handshake now. */
  start(): void {
    const now = this.clock.now();
    for (const e of this.entries) this.transmitAll(e.peer.up(now));
    this.markDirty();
  }

  /**
   * Forward one IPv4 packet read from the device (validated by the dispatcher). `vnetOff` is the
   * offset of its virtio-net header in `ip.buffer`, or -1 on a link without one. The packet's
   * bytes may be rewritten in place (checksums, NAT); nothing is kept after the call.
   */
  sendPacket(ip: Ipv4Packet, vnetOff = -1): void {
    if (this.closed) return;
    const buf = ip.buffer;
    const entry = this.routes.lookup(ip.dst);
    if (entry === undefined) {
      this.s.dropped.no_peer++;
      this.icmpError(buf.subarray(ip.offset, ip.offset + ip.length), ICMP_UNREACH_HOST, 0);
      return;
    }
    this.target = entry;
    if (vnetOff >= 0 && (buf[vnetOff] !== 0 || buf[vnetOff + 1] !== 0)) {
      if ((buf[vnetOff + 1]! & ~VNET_GSO_ECN) === VNET_GSO_TCPV4) {
        // The kernel cuts at gso_size, its idea of the path MTU: when that is too big, one
        // "fragmentation needed" for the whole super-packet lowers it (RFC 1191).
        const gsoSize = buf[vnetOff + 4]! | (buf[vnetOff + 5]! << 8);
        const hdr = ip.headerLen + ((buf[ip.payloadOffset + 12]! >>> 4) << 2);
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
    this.markDirty();
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
      const hl = (p[0]! & 0x0f) << 2;
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
        this.seal(entry, this.fragments.subarray(off, off + n));
        off += n;
      }
      return;
    }
    this.rewriteOut(p);
    this.seal(entry, p);
  };

  private rewriteOut(p: Uint8Array): void {
    if (this.address !== undefined && natOutbound(p, 0, p.length, this.deviceAddress!, this.address)) this.s.natOut++;
    if (clampMss(p, 0, p.length, this.maxMss)) this.s.mssClamped++;
  }

  private seal(entry: PeerEntry, p: Uint8Array): void {
    const now = this.clock.now();
    const peer = entry.peer;
    // Without a session the peer queues the packet until the handshake completes: it must own
    // a copy, since `p` is a view into a buffer that is reused.
    const ds = peer.send(now, peer.hasSession(now) ? p : p.slice());
    this.s.txPackets++;
    this.s.txBytes += p.length;
    this.transmitAll(ds);
  }

  private transmitAll(ds: readonly Datagram[]): void {
    for (let i = 0; i < ds.length; i++) {
      const d = ds[i]!;
      this.transport.send(d.data, d.to);
    }
  }

  private readonly onDatagram = (data: Uint8Array, from: Endpoint): void => {
    if (this.closed) return;
    const r = this.device.receive(this.clock.now(), data, from);
    this.transmitAll(r.datagrams);
    for (let i = 0; i < r.packets.length; i++) this.deliver(r.packets[i]!);
    this.markDirty();
  };

  /** A decrypted packet whose source the peer may use: to the device. */
  private deliver(p: Uint8Array): void {
    if (p[0]! >>> 4 !== 4) {
      this.s.dropped.not_ipv4++;
      return;
    }
    if (this.address !== undefined && natInbound(p, 0, p.length, this.deviceAddress!, this.address)) this.s.natIn++;
    if (clampMss(p, 0, p.length, this.maxMss)) this.s.mssClamped++;
    this.s.rxPackets++;
    this.s.rxBytes += p.length;
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
  }

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

  // -------------------------------------------------------------------------------------------
  // Timers

  /** Re-arm at most once per turn of the event loop, after a batch of packets or datagrams. */
  private markDirty(): void {
    if (this.dirty) return;
    this.dirty = true;
    queueMicrotask(this.rearm);
  }

  private readonly rearm = (): void => {
    this.dirty = false;
    if (this.closed) return;
    const at = this.device.pollAt();
    // A timer armed for earlier than needed just fires, finds nothing due, and re-arms.
    if (at === undefined || (this.timer !== undefined && this.timerAt <= at)) return;
    if (this.timer !== undefined) this.timers.clear(this.timer);
    this.timerAt = at;
    this.timer = this.timers.set(this.onTimer, Math.max(0, Math.ceil(at - this.clock.now())));
  };

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.poll();
  };

  /** Run the protocol's due timers now (retransmit, keepalive, rekey, key erasure). */
  poll(): void {
    if (this.closed) return;
    this.transmitAll(this.device.poll(this.clock.now()));
    this.rearm();
  }

  /** When the protocol next needs poll() (for tests). */
  pollAt(): number | undefined {
    return this.device.pollAt();
  }

  // -------------------------------------------------------------------------------------------
  // Status and shutdown

  stats(): TunnelStats {
    const now = this.clock.now();
    const deviceDropped: Partial<Record<DeviceDropReason, number>> = {};
    for (const r of DEVICE_DROP_REASONS) if (this.device.dropped[r] > 0) deviceDropped[r] = this.device.dropped[r];
    const peerDropped: Partial<Record<PeerDropReason, number>> = {};
    const peers = this.entries.map((e): TunnelPeerStatus => {
      const { dropped, ...counters } = e.peer.counters;
      const nonZero: Partial<Record<PeerDropReason, number>> = {};
      for (const r of PEER_DROP_REASONS) {
        if (dropped[r] > 0) {
          nonZero[r] = dropped[r];
          peerDropped[r] = (peerDropped[r] ?? 0) + dropped[r];
        }
      }
      return {
        publicKey: formatKey(e.config.publicKey),
        endpoint: e.peer.endpoint === undefined ? undefined : formatEndpoint(e.peer.endpoint),
        allowedIPs: e.config.allowedIPs.map((c) => cidrToString(normalizeCidr(c))),
        lastHandshakeAgoMs: e.peer.lastHandshakeAt === undefined ? undefined : Math.round(now - e.peer.lastHandshakeAt),
        hasSession: e.peer.hasSession(now),
        counters: { ...counters },
        dropped: nonZero,
      };
    });
    return {
      name: this.name,
      listenPort: this.transport.port,
      mtu: this.mtu,
      ...this.s,
      dropped: { ...this.s.dropped },
      udpSendDrops: this.transport.sendDrops,
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
    if (this.timer !== undefined) this.timers.clear(this.timer);
    this.timer = undefined;
    this.transport.close();
    this.device.destroy();
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

export interface OpenTunnelsDeps {
  link: Link;
  clock: Clock;
  logger: Logger;
  /** The device's own address (uint32): the NAT maps it to each tunnel's address. */
  deviceAddress: number;
  /** The UDP socket of one tunnel; default openUdpTransport (the addon's batched socket, else node:dgram). */
  openTransport?: (spec: TunnelSpec) => Promise<UdpTransport>;
}

/** Bind every tunnel's UDP socket and build the tunnels (not started); on a failure, close what was opened. */
export async function openWireguardTunnels(specs: readonly TunnelSpec[], deps: OpenTunnelsDeps): Promise<Map<string, WireguardTunnel>> {
  const out = new Map<string, WireguardTunnel>();
  const open =
    deps.openTransport ??
    (async (spec: TunnelSpec): Promise<UdpTransport> => {
      const { openUdpTransport } = await import('./udp-transport.js');
      return openUdpTransport({
        port: spec.listenPort,
        // A transport message: 32 bytes of header and tag around the padded packet.
        maxDatagramBytes: (spec.mtu ?? DEFAULT_TUNNEL_MTU) + 64,
        onError: (err) => deps.logger.warn({ tunnel: spec.name, err }, 'tunnel UDP socket error'),
      });
    });
  try {
    for (const spec of specs) {
      const transport = await open(spec);
      out.set(
        spec.name,
        new WireguardTunnel({
          name: spec.name,
          privateKey: spec.privateKey,
          peers: spec.peers,
          mtu: spec.mtu,
          link: deps.link,
          transport,
          clock: deps.clock,
          logger: deps.logger.child({ tunnel: spec.name }),
          address: spec.address,
          deviceAddress: spec.address === undefined ? undefined : deps.deviceAddress,
        }),
      );
    }
  } catch (e) {
    for (const t of out.values()) t.close();
    throw e;
  }
  return out;
}
