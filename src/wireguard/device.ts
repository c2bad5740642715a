/**
 * A device: one static key, many peers — WireGuard whitepaper §2 (Cryptokey Routing: each
 * peer is known by its public key) and §5.3 (Denial of Service Mitigation), organised as
 * wireguard-go's device.go + the dispatch half of receive.go.
 *
 * Datagrams are routed to peers without trying every key:
 *   initiation   mac1 (and mac2 under load) checked here, then the initiator's static key is
 *                decrypted with ours and looked up among the peers;
 *   response, cookie reply, transport
 *                by the receiver index, from the index table all peers share.
 * Under load, handshake messages from one source address are also rate limited (20 per
 * second, bursts of 5, as wireguard-go's ratelimiter) after their cookie checks out.
 *
 * Like Peer: `now` in, datagrams out, `pollAt()` for the next deadline; nothing throws on input.
 */
import { CookieChecker, HandshakeLoadMeter } from './cookie.js';
import { endpointBytes, type Datagram, type Endpoint } from './endpoint.js';
import { openInitiation, StaticIdentity } from './handshake.js';
import { IndexTable } from './index-table.js';
import { formatKey, PrivateKey, systemRandom, type RandomSource } from './keys.js';
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  messageType,
  readU32,
} from './messages.js';
import { Peer, type PeerOptions, type ReceiveResult } from './peer.js';

/** Why the device itself dropped a datagram (before any peer saw it). */
export const DEVICE_DROP_REASONS = [
  'truncated',
  'bad_length',
  'unknown_type',
  'bad_mac1',
  'cookie_required',
  'rate_limited',
  'forged_handshake',
  'unknown_peer',
  'unknown_index',
] as const;
export type DeviceDropReason = (typeof DEVICE_DROP_REASONS)[number];

export interface DeviceOptions {
  /** The interface's private key (32 bytes) or identity. */
  privateKey: Uint8Array | StaticIdentity;
  random?: RandomSource;
  /** Wall clock (ms since the Unix epoch) for TAI64N; default Date.now. */
  wallClock?: () => number;
  /**
   * Whether handshake messages must carry a cookie now. Default: a HandshakeLoadMeter (more
   * than 64 handshake messages within a second, and for 1 s after).
   */
  underLoad?: (now: number) => boolean;
  /** Tunnel MTU for padding (default 1420). */
  mtu?: number;
}

/** Per-peer options a device fills in itself. */
export type DevicePeerOptions = Omit<PeerOptions, 'local' | 'indexTable' | 'cookieChecker' | 'random' | 'wallClock' | 'underLoad'>;

export interface DeviceReceiveResult extends ReceiveResult {
  /** The peer the datagram belonged to, when one was found. */
  peer: Peer | undefined;
}

/** Token bucket per source address: 20 per second, burst 5 (wireguard-go's ratelimiter). */
class SourceRateLimiter {
  private static readonly PER_SECOND = 20;
  private static readonly BURST = 5;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = 0;

  allow(address: string, now: number): boolean {
    if (now - this.lastSweep > 1000) this.sweep(now);
    let b = this.buckets.get(address);
    if (b === undefined) {
      b = { tokens: SourceRateLimiter.BURST, at: now };
      this.buckets.set(address, b);
    }
    b.tokens = Math.min(SourceRateLimiter.BURST, b.tokens + ((now - b.at) / 1000) * SourceRateLimiter.PER_SECOND);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [k, b] of this.buckets) if (now - b.at > 1000) this.buckets.delete(k);
  }
}

export class Device {
  readonly local: StaticIdentity;
  readonly dropped: Record<DeviceDropReason, number>;
  private readonly random: RandomSource;
  private readonly wallClock: () => number;
  private readonly underLoad: (now: number) => boolean;
  private readonly loadMeter: HandshakeLoadMeter | undefined;
  private readonly mtu: number | undefined;
  private readonly indexTable: IndexTable<Peer>;
  private readonly cookieChecker: CookieChecker;
  private readonly limiter = new SourceRateLimiter();
  private readonly peers = new Map<string, Peer>();

  constructor(opts: DeviceOptions) {
    this.local =
      opts.privateKey instanceof StaticIdentity ? opts.privateKey : new StaticIdentity(new PrivateKey(opts.privateKey));
    this.random = opts.random ?? systemRandom;
    this.wallClock = opts.wallClock ?? Date.now;
    if (opts.underLoad) this.underLoad = opts.underLoad;
    else {
      const meter = new HandshakeLoadMeter();
      this.loadMeter = meter;
      this.underLoad = (now) => meter.underLoad(now);
    }
    this.mtu = opts.mtu;
    this.indexTable = new IndexTable<Peer>(this.random);
    this.cookieChecker = new CookieChecker(this.local.publicKey);
    this.dropped = {} as Record<DeviceDropReason, number>;
    for (const r of DEVICE_DROP_REASONS) this.dropped[r] = 0;
  }

  get publicKey(): Uint8Array {
    return this.local.publicKey;
  }

  /** Add a peer (replacing one with the same public key). */
  addPeer(opts: DevicePeerOptions): Peer {
    this.removePeer(opts.publicKey);
    const peer = new Peer({
      mtu: this.mtu,
      ...opts,
      local: this.local,
      indexTable: this.indexTable,
      cookieChecker: this.cookieChecker,
      random: this.random,
      wallClock: this.wallClock,
      underLoad: this.underLoad,
    });
    this.peers.set(formatKey(opts.publicKey), peer);
    return peer;
  }

  /** Remove a peer and erase its keys; false when no such peer. */
  removePeer(publicKey: Uint8Array): boolean {
    const k = formatKey(publicKey);
    const peer = this.peers.get(k);
    if (peer === undefined) return false;
    peer.destroy();
    this.peers.delete(k);
    return true;
  }

  peer(publicKey: Uint8Array): Peer | undefined {
    return this.peers.get(formatKey(publicKey));
  }

  allPeers(): Peer[] {
    return [...this.peers.values()];
  }

  /** Take in one UDP datagram from `from`. */
  receive(now: number, data: Uint8Array, from: Endpoint): DeviceReceiveResult {
    const res: DeviceReceiveResult = { peer: undefined, packets: [], datagrams: [] };
    const t = messageType(data);
    if (typeof t === 'string') {
      this.dropped[t]++;
      return res;
    }
    let peer: Peer | undefined;
    if (t === MESSAGE_INITIATION) {
      this.loadMeter?.note(now);
      if (!this.admitHandshake(now, data, from, res)) return res;
      const opened = openInitiation(this.local, data);
      if (opened === undefined) {
        this.dropped.forged_handshake++;
        return res;
      }
      peer = this.peers.get(formatKey(opened.remoteStatic));
      if (peer === undefined) {
        this.dropped.unknown_peer++;
        return res;
      }
      res.peer = peer;
      peer.counters.rxDatagrams++;
      peer.counters.rxBytes += data.length;
      peer.receiveOpenedInitiation(now, opened, from, res);
      return res;
    }
    if (t === MESSAGE_RESPONSE) this.loadMeter?.note(now);
    if (t === MESSAGE_RESPONSE || t === MESSAGE_COOKIE_REPLY || t === MESSAGE_TRANSPORT) {
      peer = this.indexTable.get(readU32(data, t === MESSAGE_RESPONSE ? 8 : 4));
    }
    if (peer === undefined) {
      this.dropped.unknown_index++;
      return res;
    }
    if (t === MESSAGE_RESPONSE && this.underLoad(now) && !this.limiter.allow(from.address, now)) {
      this.dropped.rate_limited++;
      return res;
    }
    const r = peer.receive(now, data, from);
    res.peer = peer;
    res.packets = r.packets;
    res.datagrams = r.datagrams;
    return res;
  }

  /** mac1 always; under load mac2 (else a cookie reply) and the per-source rate limit. */
  private admitHandshake(now: number, data: Uint8Array, from: Endpoint, res: DeviceReceiveResult): boolean {
    if (!this.cookieChecker.checkMac1(data)) {
      this.dropped.bad_mac1++;
      return false;
    }
    if (!this.underLoad(now)) return true;
    const src = endpointBytes(from);
    if (!this.cookieChecker.checkMac2(data, src, now)) {
      res.datagrams.push({ data: this.cookieChecker.createReply(data, src, now, this.random), to: from });
      this.dropped.cookie_required++;
      return false;
    }
    if (!this.limiter.allow(from.address, now)) {
      this.dropped.rate_limited++;
      return false;
    }
    return true;
  }

  /** Run every peer's due timers. */
  poll(now: number): Datagram[] {
    const out: Datagram[] = [];
    for (const p of this.peers.values()) {
      if ((p.pollAt() ?? Infinity) <= now) out.push(...p.poll(now));
    }
    return out;
  }

  /** The earliest deadline over all peers. */
  pollAt(): number | undefined {
    let t: number | undefined;
    for (const p of this.peers.values()) {
      const a = p.pollAt();
      if (a !== undefined && (t === undefined || a < t)) t = a;
    }
    return t;
  }

  /** Erase every peer's keys and the cookie secret. */
  destroy(): void {
    for (const p of this.peers.values()) p.destroy();
    this.peers.clear();
    this.cookieChecker.destroy();
  }
}
