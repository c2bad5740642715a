/**
 * The server's tunnel: one WireGuard Device (our static key, the configured peers) on one UDP
 * transport, with the timers the protocol asks for and cryptokey routing both ways.
 *
 *   UDP datagram ─► Device.receive ─► handshake replies, keepalives ─► UDP
 *                                  └► decrypted packets whose source the peer may use ─► onPacket
 *   sendPacket(ip) ─► the peer whose AllowedIPs hold ip.dst ─► Peer.send ─► UDP
 *
 * The protocol core (src/wireguard) takes `now` and returns datagrams; this class is
 * the only place that owns a socket and a timer for it. The timer follows the earliest
 * deadline of any peer: after traffic, only that peer's next deadline is compared (cheap, no
 * walk over all peers per packet); when the timer fires, every due peer is polled and the
 * timer re-armed from the device's earliest deadline.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { Device, type DeviceDropReason } from '../wireguard/device.js';
import { formatEndpoint, type Datagram, type Endpoint } from '../wireguard/endpoint.js';
import { formatKey, type RandomSource } from '../wireguard/keys.js';
import type { Peer, PeerCounters } from '../wireguard/peer.js';
import { getU32 } from '../wire/checksum.js';
import { cidrToString, normalizeCidr, type Cidr } from '../net/ipv4.js';
import { CryptokeyTable } from './cryptokey.js';

/**
 * The UDP socket the tunnel speaks through (the same shape as wireguard-go's `conn.Bind`); the
 * real one is udp-transport.ts, unit tests pass an in-memory one.
 */
export interface UdpTransport {
  /** The local UDP port. */
  readonly port: number;
  /** Set the one receiver of datagrams. `data` is valid only during the call (copy to keep it). */
  onMessage(handler: (data: Uint8Array, from: Endpoint) => void): void;
  /** Send one datagram; the bytes must not change afterwards. False when it was dropped. Never throws. */
  send(data: Uint8Array, to: Endpoint): boolean;
  /** Stop receiving and release the socket; idempotent. */
  close(): void;
}

export interface TunnelPeerConfig {
  /** A label for logs and status. */
  name: string;
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  allowedIPs: Cidr[];
}

/** One configured peer: the protocol state and what the server knows about it. */
export interface TunnelPeer {
  readonly name: string;
  readonly publicKey: string;
  readonly allowedIPs: readonly string[];
  readonly peer: Peer;
}

class TunnelPeerEntry implements TunnelPeer {
  peer!: Peer;
  handshakesSeen = 0;
  lastEndpoint: string | undefined;
  constructor(
    readonly name: string,
    readonly publicKey: string,
    readonly allowedIPs: readonly string[],
  ) {}
}

export interface WgTunnelOptions {
  privateKey: Uint8Array;
  peers: readonly TunnelPeerConfig[];
  transport: UdpTransport;
  clock: Clock;
  logger: Logger;
  /** Tunnel MTU (padding); default 1420. */
  mtu?: number;
  /** For repeatable tests; default crypto randomness and Date.now. */
  random?: RandomSource;
  wallClock?: () => number;
}

export interface TunnelCounters {
  /** Datagrams received on the UDP socket. */
  rxDatagrams: number;
  txDatagrams: number;
  /** Datagrams the transport refused (send queue full, socket error). */
  txDropped: number;
  /** Packets handed to sendPacket whose destination no peer's AllowedIPs hold. */
  noPeer: number;
  /** Packets handed to sendPacket that were not IPv4. */
  notIpv4: number;
  /** Decrypted packets whose handling threw (a bug; logged, dropped). */
  internalErrors: number;
}

export interface TunnelPeerStatus {
  name: string;
  publicKey: string;
  allowedIPs: string[];
  endpoint: string | undefined;
  /** ms since the last completed handshake (by the monotonic clock), if any. */
  lastHandshakeAgoMs: number | undefined;
  counters: PeerCounters;
}

export class WgTunnel {
  readonly device: Device;
  readonly routes = new CryptokeyTable<TunnelPeer>();
  readonly peers: readonly TunnelPeer[];
  readonly counters: TunnelCounters = { rxDatagrams: 0, txDatagrams: 0, txDropped: 0, noPeer: 0, notIpv4: 0, internalErrors: 0 };
  private readonly transport: UdpTransport;
  private readonly clock: Clock;
  private readonly log: Logger;
  private packetHandler: (packet: Uint8Array, from: TunnelPeer) => void = () => {};
  private readonly byPeer = new Map<Peer, TunnelPeerEntry>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private closed = false;

  constructor(opts: WgTunnelOptions) {
    this.transport = opts.transport;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.device = new Device({ privateKey: opts.privateKey, mtu: opts.mtu, random: opts.random, wallClock: opts.wallClock });
    const peers: TunnelPeer[] = [];
    for (const p of opts.peers) {
      const owner = new TunnelPeerEntry(p.name, formatKey(p.publicKey), p.allowedIPs.map((c) => cidrToString(normalizeCidr(c))));
      // The entry exists before its Peer so that the Peer's source check can compare against it.
      owner.peer = this.device.addPeer({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        allowedSource: this.routes.sourceCheck(owner),
      });
      for (const c of p.allowedIPs) this.routes.add(c, owner);
      this.byPeer.set(owner.peer, owner);
      peers.push(owner);
    }
    this.peers = peers;
    this.transport.onMessage(this.onDatagram);
  }

  get publicKey(): string {
    return formatKey(this.device.publicKey);
  }

  /** Where decrypted packets go (after the AllowedIPs source check). The packet is fresh: keep it if you like. */
  onPacket(handler: (packet: Uint8Array, from: TunnelPeer) => void): void {
    this.packetHandler = handler;
  }

  /**
   * Seal one IPv4 packet to the peer that owns its destination. The bytes are only read during
   * the call (copied when the peer has to queue them for a handshake). False when no peer owns
   * the destination or the tunnel is closed.
   */
  sendPacket(packet: Uint8Array): boolean {
    if (this.closed) return false;
    if (packet.length < 20 || packet[0]! >>> 4 !== 4) {
      this.counters.notIpv4++;
      return false;
    }
    const owner = this.routes.lookup(getU32(packet, 16));
    if (owner === undefined) {
      this.counters.noPeer++;
      return false;
    }
    return this.sendTo(owner, packet);
  }

  /** Seal one packet to `to`, whatever its destination (the caller did the routing). */
  sendTo(to: TunnelPeer, packet: Uint8Array): boolean {
    if (this.closed) return false;
    const now = this.clock.now();
    const p = to.peer;
    // Without a session the peer queues the packet until a handshake completes: give it a copy,
    // since the stack reuses its output buffer. (A responder cannot start one without an
    // endpoint; the queue then waits for the peer to come back.)
    const bytes = p.hasSession(now) ? packet : packet.slice();
    this.sendAll(p.send(now, bytes));
    this.armFor(p);
    return true;
  }

  status(): TunnelPeerStatus[] {
    const now = this.clock.now();
    return this.peers.map((t) => ({
      name: t.name,
      publicKey: t.publicKey,
      allowedIPs: [...t.allowedIPs],
      endpoint: t.peer.endpoint === undefined ? undefined : formatEndpoint(t.peer.endpoint),
      lastHandshakeAgoMs: t.peer.lastHandshakeAt === undefined ? undefined : Math.max(0, Math.round(now - t.peer.lastHandshakeAt)),
      counters: structuredClone(t.peer.counters),
    }));
  }

  /** Datagrams the device dropped before any peer saw them, by reason. */
  deviceDrops(): Record<DeviceDropReason, number> {
    return { ...this.device.dropped };
  }

  /** Stop the timer, erase every key, close the socket. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.device.destroy();
    this.transport.close();
  }

  private readonly onDatagram = (data: Uint8Array, from: Endpoint): void => {
    if (this.closed) return;
    this.counters.rxDatagrams++;
    const r = this.device.receive(this.clock.now(), data, from);
    this.sendAll(r.datagrams);
    if (r.peer === undefined) return;
    const owner = this.byPeer.get(r.peer);
    if (owner !== undefined) {
      if (r.peer.counters.handshakesCompleted !== owner.handshakesSeen) this.noteHandshake(owner);
      for (const p of r.packets) {
        try {
          this.packetHandler(p, owner);
        } catch (e) {
          // A bug behind one packet must not take every peer's tunnel down with the process.
          this.counters.internalErrors++;
          if (this.counters.internalErrors === 1 || this.counters.internalErrors % 1000 === 0) {
            this.log.error({ err: e, count: this.counters.internalErrors, peer: owner.name }, 'a decrypted packet could not be handled (dropped)');
          }
        }
      }
    }
    this.armFor(r.peer);
  };

  /** A new session: worth a line the first time and when the peer moved, otherwise debug. */
  private noteHandshake(t: TunnelPeerEntry): void {
    const first = t.handshakesSeen === 0;
    t.handshakesSeen = t.peer.counters.handshakesCompleted;
    const endpoint = t.peer.endpoint === undefined ? undefined : formatEndpoint(t.peer.endpoint);
    const moved = endpoint !== t.lastEndpoint;
    t.lastEndpoint = endpoint;
    if (first || moved) this.log.info({ peer: t.name, endpoint }, first ? 'peer connected (handshake completed)' : 'peer handshake from a new endpoint');
    else if (this.log.isLevelEnabled('debug')) this.log.debug({ peer: t.name, endpoint }, 'peer rekeyed');
  }

  private sendAll(ds: readonly Datagram[]): void {
    for (const d of ds) {
      if (this.transport.send(d.data, d.to)) this.counters.txDatagrams++;
      else this.counters.txDropped++;
    }
  }

  /** Re-arm the timer if this peer's next deadline is earlier than the one armed. */
  private armFor(p: Peer): void {
    const at = p.pollAt();
    if (at !== undefined && at < this.timerAt) this.arm(at);
  }

  private arm(at: number): void {
    if (this.closed) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(at - this.clock.now())));
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.clock.now();
    try {
      this.sendAll(this.device.poll(now));
    } catch (e) {
      this.log.error({ err: e }, 'tunnel timers failed');
    }
    const at = this.device.pollAt();
    if (at !== undefined) this.arm(at);
  };
}
