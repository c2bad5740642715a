/**
 * The WireGuard tunnel runtime: one Device (our static key, the configured peers) on one UDP
 * transport, with the timers the protocol asks for and cryptokey routing both ways. Both
 * `tunroute up` (client-tunnel.ts adds the device-facing packet path) and `tunroute server`
 * (which terminates or forwards what comes out) run their tunnels on it.
 *
 *   UDP datagram ─► Device.receive ─► handshake replies, keepalives ─► UDP
 *                                  └► decrypted packets whose source the peer may use ─► onPacket
 *   sendPacket(ip) ─► the peer whose AllowedIPs hold ip.dst (cryptokey routing) ─► Peer.send ─► UDP
 *
 * The protocol core (device.ts, peer.ts) takes `now` and returns datagrams; this class is the
 * only place that owns a socket and a timer for it. The one timer (on the injected Timers)
 * follows the earliest deadline of any peer. After traffic it is re-armed at most once per
 * turn of the event loop, comparing only the deadlines of the peers that had traffic (no walk
 * over all peers per batch), and only moved when one of them comes earlier than the one armed;
 * when it fires, every due peer is polled and it is re-armed from the device's earliest
 * deadline. Nothing here throws on packets or datagrams: every refusal is a counter.
 */
import { timersOf, type Clock, type TimerHandle, type Timers } from '../clock.js';
import type { Logger } from '../logger.js';
import { getU32 } from '../wire/checksum.js';
import { cidrToString, normalizeCidr, type Cidr } from '../net/ipv4.js';
import { CryptokeyTable } from './cryptokey.js';
import { Device, type DeviceDropReason } from './device.js';
import { formatEndpoint, type Datagram, type Endpoint } from './endpoint.js';
import { formatKey, type RandomSource } from './keys.js';
import { PEER_DROP_REASONS, type Peer, type PeerCounters, type PeerDropReason } from './peer.js';
import type { UdpTransport } from './transport.js';

export interface TunnelPeerConfig {
  /** A label for logs and status; default the start of the key, as `wg show` abbreviates it. */
  name?: string;
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** Where to send; a peer without one is reached once it has sent us an authenticated packet. */
  endpoint?: Endpoint;
  /** IPv4 prefixes routed to this peer and accepted from it. */
  allowedIPs: readonly Cidr[];
  /** Seconds; 0 or absent: off. */
  persistentKeepaliveSec?: number;
}

/** One configured peer: the protocol state and what the runtime shows of it. */
export interface TunnelPeer {
  readonly name: string;
  readonly publicKey: string;
  readonly allowedIPs: readonly string[];
  readonly peer: Peer;
}

class TunnelPeerEntry implements TunnelPeer {
  peer!: Peer;
  /** Traffic this turn may have moved its deadlines (see markDirty). */
  touched = false;
  handshakesSeen = 0;
  lastEndpoint: string | undefined;
  constructor(
    readonly name: string,
    readonly publicKey: string,
    readonly allowedIPs: readonly string[],
  ) {}
}

/** A peer as `status` and the logs show it, on either side. */
export interface TunnelPeerStatus {
  name: string;
  publicKey: string;
  endpoint?: string;
  allowedIPs: string[];
  /** Milliseconds (monotonic clock) since the last completed handshake; absent: never. */
  lastHandshakeAgoMs?: number;
  hasSession: boolean;
  /** A copy of the peer's counters, drops by reason included. */
  counters: PeerCounters;
  /** Only the non-zero drop reasons. */
  dropped: Partial<Record<PeerDropReason, number>>;
}

export interface TunnelCounters {
  /** Datagrams received on the UDP socket, and datagrams handed to it. */
  rxDatagrams: number;
  txDatagrams: number;
  /** Datagrams the transport refused at once (send queue full, socket closed). */
  txDropped: number;
  /** Inner packets sealed to a peer, and packets delivered from the peers, with their bytes. */
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Packets handed to sendPacket whose destination no peer's AllowedIPs hold. */
  noPeer: number;
  /** Packets handed to sendPacket that were not IPv4. */
  notIpv4: number;
  /** Decrypted packets whose handler threw (a bug; logged, dropped). */
  internalErrors: number;
}

export interface TunnelRuntimeOptions {
  privateKey: Uint8Array;
  peers: readonly TunnelPeerConfig[];
  transport: UdpTransport;
  clock: Clock;
  /** The protocol's one timer; default the clock's own (a ManualClock's), else the event loop's. */
  timers?: Timers;
  logger: Logger;
  /** Tunnel MTU (padding); default 1420. */
  mtu?: number;
  /** For repeatable tests; default crypto randomness and Date.now. */
  random?: RandomSource;
  wallClock?: () => number;
}

/** Where decrypted packets go. The packet is the tunnel's own fresh buffer: keep it if you like. */
export type TunnelPacketHandler = (packet: Uint8Array, from: TunnelPeer) => void;

export class TunnelRuntime {
  readonly device: Device;
  readonly routes = new CryptokeyTable<TunnelPeer>();
  readonly peers: readonly TunnelPeer[];
  readonly counters: TunnelCounters = {
    rxDatagrams: 0,
    txDatagrams: 0,
    txDropped: 0,
    txPackets: 0,
    txBytes: 0,
    rxPackets: 0,
    rxBytes: 0,
    noPeer: 0,
    notIpv4: 0,
    internalErrors: 0,
  };
  private readonly transport: UdpTransport;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly log: Logger;
  private packetHandler: TunnelPacketHandler = () => {};
  private readonly byPeer = new Map<Peer, TunnelPeerEntry>();
  /** The peers that had traffic since the last re-arm. */
  private readonly touched: TunnelPeerEntry[] = [];
  private timer: TimerHandle | undefined;
  private timerAt = Infinity;
  private dirty = false;
  private closed = false;

  constructor(opts: TunnelRuntimeOptions) {
    this.transport = opts.transport;
    this.clock = opts.clock;
    this.timers = opts.timers ?? timersOf(opts.clock);
    this.log = opts.logger;
    this.device = new Device({ privateKey: opts.privateKey, mtu: opts.mtu, random: opts.random, wallClock: opts.wallClock });
    const peers: TunnelPeer[] = [];
    for (const p of opts.peers) {
      const key = formatKey(p.publicKey);
      const entry = new TunnelPeerEntry(p.name ?? `${key.slice(0, 8)}…`, key, p.allowedIPs.map((c) => cidrToString(normalizeCidr(c))));
      // The entry exists before its Peer so that the Peer's source check can compare against it.
      entry.peer = this.device.addPeer({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.endpoint,
        persistentKeepaliveSec: p.persistentKeepaliveSec,
        allowedSource: this.routes.sourceCheck(entry),
      });
      for (const c of p.allowedIPs) {
        if (this.routes.owner(c) !== undefined) {
          // As `wg set`: an allowed IP belongs to one peer; the later one takes it.
          this.log.warn({ allowedIP: cidrToString(normalizeCidr(c)) }, 'two peers list the same allowed IP; the later peer gets it');
        }
        this.routes.add(c, entry);
      }
      this.byPeer.set(entry.peer, entry);
      peers.push(entry);
    }
    this.routes.optimize();
    this.peers = peers;
    this.transport.onMessage(this.onDatagram);
  }

  get publicKey(): string {
    return formatKey(this.device.publicKey);
  }

  /** The UDP port the tunnel listens on. */
  get port(): number {
    return this.transport.port;
  }

  /** Datagrams the UDP socket could not take (its own count: it also sees late failures). */
  get udpSendDrops(): number {
    return this.transport.sendDrops;
  }

  /** Where decrypted packets go (after the AllowedIPs source check). */
  onPacket(handler: TunnelPacketHandler): void {
    this.packetHandler = handler;
  }

  /**
   * Send to a peer at another endpoint from now on (its configured name resolved elsewhere after
   * a network change). The peer's next authenticated datagram may move it again (roaming).
   * False if no peer has this public key (base64).
   */
  setEndpoint(publicKey: string, endpoint: Endpoint): boolean {
    const entry = this.peers.find((p) => p.publicKey === publicKey);
    if (entry === undefined) return false;
    entry.peer.endpoint = endpoint;
    return true;
  }

  /** Bring the peers up: those with a persistent keepalive start their handshake now. */
  start(): void {
    const now = this.clock.now();
    for (const p of this.peers) {
      this.sendAll(p.peer.up(now));
      this.markDirty(p as TunnelPeerEntry);
    }
  }

  /** The peer whose AllowedIPs hold `dst` (uint32), longest prefix first. */
  route(dst: number): TunnelPeer | undefined {
    return this.routes.lookup(dst);
  }

  /**
   * Seal one IPv4 packet to the peer that owns its destination. The bytes are only read during
   * the call (copied when the peer has to queue them for a handshake). False when no peer owns
   * the destination or the tunnel is closed.
   */
  sendPacket(packet: Uint8Array): boolean {
    if (this.closed) return false;
    if (packet.length < 20 || packet[0] >>> 4 !== 4) {
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
    // since callers pass views into buffers they reuse. (A responder cannot start a handshake
    // without an endpoint; the queue then waits for the peer to come back.)
    const bytes = p.hasSession(now) ? packet : packet.slice();
    this.counters.txPackets++;
    this.counters.txBytes += packet.length;
    this.sendAll(p.send(now, bytes));
    // Every TunnelPeer is an entry of this runtime: `peers` and `route` hand out nothing else.
    this.markDirty(to as TunnelPeerEntry);
    return true;
  }

  /** Run the protocol's due timers now (retransmit, keepalive, rekey, key erasure). */
  poll(): void {
    if (this.closed) return;
    try {
      this.sendAll(this.device.poll(this.clock.now()));
    } catch (e) {
      this.log.error({ err: e }, 'tunnel timers failed');
    }
    this.rearm();
  }

  /** When the protocol next needs poll() (for tests). */
  pollAt(): number | undefined {
    return this.device.pollAt();
  }

  peerStatus(): TunnelPeerStatus[] {
    const now = this.clock.now();
    return this.peers.map((t): TunnelPeerStatus => {
      const counters = structuredClone(t.peer.counters);
      const dropped: Partial<Record<PeerDropReason, number>> = {};
      for (const r of PEER_DROP_REASONS) if (counters.dropped[r] > 0) dropped[r] = counters.dropped[r];
      return {
        name: t.name,
        publicKey: t.publicKey,
        allowedIPs: [...t.allowedIPs],
        ...(t.peer.endpoint === undefined ? {} : { endpoint: formatEndpoint(t.peer.endpoint) }),
        ...(t.peer.lastHandshakeAt === undefined ? {} : { lastHandshakeAgoMs: Math.max(0, Math.round(now - t.peer.lastHandshakeAt)) }),
        hasSession: t.peer.hasSession(now),
        counters,
        dropped,
      };
    });
  }

  /** Datagrams the device dropped before any peer saw them, by reason. */
  deviceDrops(): Record<DeviceDropReason, number> {
    return { ...this.device.dropped };
  }

  /** Stop the timer, erase every key, close the socket. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) this.timers.clearTimer(this.timer);
    this.timer = undefined;
    this.device.destroy();
    this.transport.close();
  }

  private readonly onDatagram = (data: Uint8Array, from: Endpoint): void => {
    if (this.closed) return;
    this.counters.rxDatagrams++;
    const r = this.device.receive(this.clock.now(), data, from);
    this.sendAll(r.datagrams);
    if (r.peer !== undefined) {
      const owner = this.byPeer.get(r.peer);
      if (owner !== undefined) {
        if (r.peer.counters.handshakesCompleted !== owner.handshakesSeen) this.noteHandshake(owner);
        for (let i = 0; i < r.packets.length; i++) this.deliver(r.packets[i], owner);
        this.markDirty(owner);
      }
    }
  };

  private deliver(p: Uint8Array, owner: TunnelPeerEntry): void {
    this.counters.rxPackets++;
    this.counters.rxBytes += p.length;
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
    for (let i = 0; i < ds.length; i++) {
      const d = ds[i];
      if (this.transport.send(d.data, d.to)) this.counters.txDatagrams++;
      else this.counters.txDropped++;
    }
  }

  // -------------------------------------------------------------------------------------------
  // The timer

  /** `e` had traffic: re-arm once this turn's batch of packets or datagrams is done. */
  private markDirty(e: TunnelPeerEntry): void {
    if (!e.touched) {
      e.touched = true;
      this.touched.push(e);
    }
    if (this.dirty) return;
    this.dirty = true;
    queueMicrotask(this.rearmTouched);
  }

  private readonly rearmTouched = (): void => {
    this.dirty = false;
    let at: number | undefined;
    for (const e of this.touched) {
      e.touched = false;
      const a = e.peer.pollAt();
      if (a !== undefined && (at === undefined || a < at)) at = a;
    }
    this.touched.length = 0;
    this.armAt(at);
  };

  private rearm(): void {
    this.armAt(this.device.pollAt());
  }

  private armAt(at: number | undefined): void {
    if (this.closed) return;
    // A timer armed for earlier than needed just fires, finds nothing due, and re-arms.
    if (at === undefined || (this.timer !== undefined && this.timerAt <= at)) return;
    if (this.timer !== undefined) this.timers.clearTimer(this.timer);
    this.timerAt = at;
    this.timer = this.timers.setTimer(this.onTimer, Math.max(0, Math.ceil(at - this.clock.now())));
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.poll();
  };
}
