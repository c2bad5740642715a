/**
 * A peer — WireGuard whitepaper §5.4 (the messages, sent and received), §6 (timers: rekeying,
 * retransmission, keepalive) and §2.1 (built-in roaming), organised as wireguard-go's
 * peer.go + send.go + receive.go for one peer.
 *
 * A pure state machine driven by `now` (monotonic ms):
 *   send(now, ipPacket)          → datagrams to send (a handshake first if no session)
 *   receive(now, datagram, from) → decrypted IP packets + datagrams to send
 *   poll(now)                    → datagrams due to timers (retransmit, keepalive, rekey)
 *   pollAt()                     → when poll() must run next
 * It owns no socket and no timer; wall-clock time is read only for the TAI64N timestamp, from
 * an injected function. Malformed, forged, replayed or unexpected datagrams are counted under
 * `counters.dropped` and never thrown.
 *
 * A Peer answers initiations from its own remote static key; a device with several peers
 * opens the initiation first (`openInitiation`) and hands it to the right peer
 * (`receiveOpenedInitiation`).
 */
import { CookieChecker, CookieGenerator } from './cookie.js';
import { endpointBytes, type Datagram, type Endpoint } from './endpoint.js';
import {
  acceptInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveTransportKeys,
  Handshake,
  openInitiation,
  StaticIdentity,
  type OpenedInitiation,
} from './handshake.js';
import { IndexTable } from './index-table.js';
import { systemRandom, type RandomSource } from './keys.js';
import { Keypair, Keypairs, paddedLength, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES } from './keypair.js';
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  messageType,
  readU32,
  TRANSPORT_HEADER_LEN,
  transportReceiver,
} from './messages.js';
import {
  KEEPALIVE_TIMEOUT_MS,
  MAX_TIMER_HANDSHAKES,
  PeerTimers,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS,
  REKEY_TIMEOUT_MS,
} from './timers.js';

/** Default MTU of the tunnel interface (wg-quick's default for IPv4 + IPv6 outer headers). */
export const DEFAULT_TUNNEL_MTU = 1420;
/** Packets held while a handshake is pending (wireguard-go's QueueStagedSize). */
export const DEFAULT_MAX_STAGED_PACKETS = 128;
/** The largest inner packet that still fits one UDP datagram with our 32 bytes of overhead. */
export const MAX_CONTENT_LEN = 65535 - 8 - 20 - TRANSPORT_HEADER_LEN - 16;

/**
 * Why a datagram or packet was dropped:
 * - truncated / bad_length / unknown_type: not a WireGuard message (messages.ts)
 * - bad_mac1: a handshake message not made for our public key
 * - cookie_required: under load, a handshake message without a valid mac2 (a cookie reply was sent)
 * - forged_handshake: an initiation that does not decrypt with our static key
 * - wrong_peer: an initiation from a static key that is not this peer's
 * - bad_timestamp / replayed_timestamp / handshake_flood: initiation refused (§5.1, 20 ms rate)
 * - unexpected_response / bad_response: a response with no initiation pending, for another
 *   index, or not authenticating
 * - forged_cookie: a cookie reply that does not decrypt against our last mac1
 * - wrong_key: a transport message whose receiver index names no keypair of ours
 * - expired_key: a transport message for a keypair past REJECT_AFTER_TIME
 * - forged: a transport message that does not authenticate
 * - replayed: an authenticated transport message whose counter was seen or is too old
 * - bad_inner_packet: decrypted data that is not a whole IPv4/IPv6 packet
 * - disallowed_source: the inner source address is not allowed for this peer
 * - queue_overflow: a packet pushed out of the queue while a handshake was pending
 * - handshake_failed: packets dropped because the handshake was abandoned after 90 s
 * - too_large: a packet larger than a datagram can carry
 */
export const PEER_DROP_REASONS = [
  'truncated',
  'bad_length',
  'unknown_type',
  'bad_mac1',
  'cookie_required',
  'forged_handshake',
  'wrong_peer',
  'bad_timestamp',
  'replayed_timestamp',
  'handshake_flood',
  'unexpected_response',
  'bad_response',
  'forged_cookie',
  'wrong_key',
  'expired_key',
  'forged',
  'replayed',
  'bad_inner_packet',
  'disallowed_source',
  'queue_overflow',
  'handshake_failed',
  'too_large',
] as const;
export type PeerDropReason = (typeof PEER_DROP_REASONS)[number];

export interface PeerCounters {
  txDatagrams: number;
  txBytes: number;
  rxDatagrams: number;
  rxBytes: number;
  /** IP packets sealed and sent / opened and delivered. */
  txPackets: number;
  rxPackets: number;
  keepalivesSent: number;
  keepalivesReceived: number;
  initiationsSent: number;
  initiationsReceived: number;
  responsesSent: number;
  responsesReceived: number;
  cookieRepliesSent: number;
  cookieRepliesReceived: number;
  /** Sessions established (response consumed, or first data with a new keypair). */
  handshakesCompleted: number;
  /** Initiations not sent because one went out less than REKEY_TIMEOUT ago. */
  initiationsRateLimited: number;
  /** Initiations wanted while no endpoint is known (nothing could be sent). */
  noEndpoint: number;
  dropped: Record<PeerDropReason, number>;
}

function newCounters(): PeerCounters {
  const dropped = {} as Record<PeerDropReason, number>;
  for (const r of PEER_DROP_REASONS) dropped[r] = 0;
  return {
    txDatagrams: 0,
    txBytes: 0,
    rxDatagrams: 0,
    rxBytes: 0,
    txPackets: 0,
    rxPackets: 0,
    keepalivesSent: 0,
    keepalivesReceived: 0,
    initiationsSent: 0,
    initiationsReceived: 0,
    responsesSent: 0,
    responsesReceived: 0,
    cookieRepliesSent: 0,
    cookieRepliesReceived: 0,
    handshakesCompleted: 0,
    initiationsRateLimited: 0,
    noEndpoint: 0,
    dropped,
  };
}

export interface PeerOptions {
  /** Our static identity (the interface private key). */
  local: StaticIdentity;
  /** The peer's static public key. */
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** Where to send; learnt from authenticated packets when absent (a server's peers). */
  endpoint?: Endpoint;
  /** Persistent keepalive interval in seconds; 0 or absent for off. */
  persistentKeepaliveSec?: number;
  /** Tunnel MTU: transport payloads are padded to a multiple of 16 but not beyond it. */
  mtu?: number;
  /** Randomness for ephemeral keys, indices, jitter and cookie nonces; default crypto.randomBytes. */
  random?: RandomSource;
  /** Wall clock in ms since the Unix epoch, for TAI64N; default Date.now. */
  wallClock?: () => number;
  /** A device's shared index table; default one of the peer's own. */
  indexTable?: IndexTable<Peer>;
  /** A device's shared cookie checker (keyed by our public key); default one of the peer's own. */
  cookieChecker?: CookieChecker;
  /** Whether handshake messages must carry a valid cookie (mac2) now; default never. */
  underLoad?: (now: number) => boolean;
  /** Packets held while waiting for a session; the oldest are dropped past this. Default 128. */
  maxStagedPackets?: number;
  /** Cryptokey routing, inbound: whether a decrypted packet's source may come from this peer. */
  allowedSource?: (packet: Uint8Array) => boolean;
}

/** What one received datagram produced. */
export interface ReceiveResult {
  /** Decrypted IP packets, trimmed to their own length. */
  packets: Uint8Array[];
  /** Datagrams to send (handshake response, keepalive, queued data, cookie reply). */
  datagrams: Datagram[];
}

export class Peer {
  readonly publicKey: Uint8Array;
  readonly counters: PeerCounters = newCounters();
  /** The current endpoint: configured, then the source of the last authenticated datagram. */
  endpoint: Endpoint | undefined;
  /** Monotonic ms of the last completed handshake. */
  lastHandshakeAt: number | undefined;

  private readonly local: StaticIdentity;
  private readonly handshake: Handshake;
  private readonly keypairs = new Keypairs();
  private readonly timers: PeerTimers;
  private readonly cookieGenerator: CookieGenerator;
  private readonly cookieChecker: CookieChecker;
  private readonly indexTable: IndexTable<Peer>;
  private readonly random: RandomSource;
  private readonly wallClock: () => number;
  private readonly underLoad: (now: number) => boolean;
  private readonly allowedSource: ((packet: Uint8Array) => boolean) | undefined;
  private readonly mtu: number;
  private readonly maxStaged: number;
  private staged: Uint8Array[] = [];
  /** The index given to the handshake in progress (0: none); it passes to the keypair derived. */
  private handshakeIndex = 0;
  private destroyed = false;

  constructor(opts: PeerOptions) {
    this.local = opts.local;
    this.publicKey = new Uint8Array(opts.publicKey);
    this.handshake = new Handshake(opts.local, opts.publicKey, opts.presharedKey);
    this.endpoint = opts.endpoint;
    this.random = opts.random ?? systemRandom;
    this.wallClock = opts.wallClock ?? Date.now;
    this.indexTable = opts.indexTable ?? new IndexTable<Peer>(this.random);
    this.cookieChecker = opts.cookieChecker ?? new CookieChecker(opts.local.publicKey);
    this.cookieGenerator = new CookieGenerator(opts.publicKey);
    this.underLoad = opts.underLoad ?? (() => false);
    this.allowedSource = opts.allowedSource;
    this.mtu = opts.mtu ?? DEFAULT_TUNNEL_MTU;
    this.maxStaged = Math.max(1, opts.maxStagedPackets ?? DEFAULT_MAX_STAGED_PACKETS);
    const jitter = (): number => {
      const b = this.random(2);
      return ((b[0] << 8) | b[1]) % REKEY_TIMEOUT_JITTER_MAX_MS;
    };
    this.timers = new PeerTimers(jitter, Math.max(0, opts.persistentKeepaliveSec ?? 0) * 1000);
  }

  // -------------------------------------------------------------------------------------------
  // Public API

  /** Whether a keypair that may send exists now. */
  hasSession(now: number): boolean {
    return this.keypairs.current?.canSend(now) ?? false;
  }

  /** Packets waiting for a session. */
  get stagedCount(): number {
    return this.staged.length;
  }

  /** Persistent keepalive interval in seconds (0: off). Setting it re-arms the timer at the next packet. */
  get persistentKeepaliveSec(): number {
    return this.timers.persistentKeepaliveMs / 1000;
  }
  set persistentKeepaliveSec(sec: number) {
    this.timers.persistentKeepaliveMs = Math.max(0, sec) * 1000;
    if (sec <= 0) this.timers.clear('persistentKeepalive');
  }

  /**
   * The interface came up: with persistent keepalive on, send a keepalive at once (which starts
   * a handshake), as wireguard-go does; otherwise nothing.
   */
  up(now: number): Datagram[] {
    const out: Datagram[] = [];
    if (this.timers.persistentKeepaliveMs > 0) this.sendKeepalive(now, out);
    return out;
  }

  /** Start a handshake now (subject to the REKEY_TIMEOUT rate limit). */
  initiate(now: number): Datagram[] {
    const out: Datagram[] = [];
    this.sendHandshakeInitiation(now, false, out);
    return out;
  }

  /**
   * Send one IP packet: sealed at once when a session exists, else queued (bounded) while a
   * handshake is started.
   */
  send(now: number, packet: Uint8Array): Datagram[] {
    const out: Datagram[] = [];
    if (this.destroyed) return out;
    if (packet.length > MAX_CONTENT_LEN) {
      this.counters.dropped.too_large++;
      return out;
    }
    this.stage(packet);
    this.sendStagedPackets(now, out);
    return out;
  }

  /** Take in one UDP datagram that arrived from `from`. */
  receive(now: number, data: Uint8Array, from: Endpoint): ReceiveResult {
    const res: ReceiveResult = { packets: [], datagrams: [] };
    if (this.destroyed) return res;
    this.counters.rxDatagrams++;
    this.counters.rxBytes += data.length;
    const t = messageType(data);
    if (typeof t === 'string') {
      this.counters.dropped[t]++;
      return res;
    }
    switch (t) {
      case MESSAGE_INITIATION:
      case MESSAGE_RESPONSE: {
        if (!this.admitHandshakeMessage(now, data, from, res)) return res;
        if (t === MESSAGE_INITIATION) {
          const opened = openInitiation(this.local, data);
          if (opened === undefined) {
            this.counters.dropped.forged_handshake++;
            return res;
          }
          this.receiveOpenedInitiation(now, opened, from, res);
        } else {
          this.receiveResponse(now, data, from, res);
        }
        return res;
      }
      case MESSAGE_COOKIE_REPLY:
        this.receiveCookieReply(now, data);
        return res;
      case MESSAGE_TRANSPORT:
        this.receiveTransport(now, data, from, res);
        return res;
    }
    this.counters.dropped.unknown_type++;
    return res;
  }

  /**
   * mac1 always, mac2 under load (§5.3): false when the message must be dropped (a cookie
   * reply may have been queued). Public for a device that checks before choosing a peer.
   */
  admitHandshakeMessage(now: number, data: Uint8Array, from: Endpoint, res: ReceiveResult): boolean {
    if (!this.cookieChecker.checkMac1(data)) {
      this.counters.dropped.bad_mac1++;
      return false;
    }
    if (this.underLoad(now) && !this.cookieChecker.checkMac2(data, endpointBytes(from), now)) {
      const reply = this.cookieChecker.createReply(data, endpointBytes(from), now, this.random);
      this.push(res.datagrams, reply, from);
      this.counters.cookieRepliesSent++;
      this.counters.dropped.cookie_required++;
      return false;
    }
    return true;
  }

  /** An initiation already opened (by us or a device) that claims to be from this peer. */
  receiveOpenedInitiation(now: number, opened: OpenedInitiation, from: Endpoint, res: ReceiveResult): void {
    const why = acceptInitiation(this.handshake, opened, now);
    if (why !== undefined) {
      this.counters.dropped[why === 'flood' ? 'handshake_flood' : why]++;
      return;
    }
    this.counters.initiationsReceived++;
    this.timers.anyAuthenticatedPacketTraversal(now);
    this.timers.anyAuthenticatedPacketReceived();
    this.endpoint = from;
    this.sendHandshakeResponse(now, res.datagrams);
  }

  /** Run every timer due at `now`; returns what they send. Also drops expired keypairs. */
  poll(now: number): Datagram[] {
    const out: Datagram[] = [];
    if (this.destroyed) return out;
    this.releaseAll(this.keypairs.expire(now));
    for (let guard = 0; guard < 16; guard++) {
      const t = this.timers.takeDue(now);
      if (t === undefined) break;
      switch (t) {
        case 'retransmitHandshake':
          this.expiredRetransmitHandshake(now, out);
          break;
        case 'sendKeepalive':
          this.sendKeepalive(now, out);
          if (this.timers.needAnotherKeepalive) {
            this.timers.needAnotherKeepalive = false;
            this.timers.set('sendKeepalive', now + KEEPALIVE_TIMEOUT_MS);
          }
          break;
        case 'newHandshake':
          this.sendHandshakeInitiation(now, false, out);
          break;
        case 'zeroKeyMaterial':
          this.zeroKeyMaterial();
          break;
        case 'persistentKeepalive':
          if (this.timers.persistentKeepaliveMs > 0) this.sendKeepalive(now, out);
          break;
      }
    }
    return out;
  }

  /** When `poll` must run next (a timer or a keypair expiry), or undefined when nothing is pending. */
  pollAt(): number | undefined {
    if (this.destroyed) return undefined;
    const a = this.timers.pollAt();
    const b = this.keypairs.nextExpiry();
    if (a === undefined) return b;
    if (b === undefined) return a;
    return Math.min(a, b);
  }

  /** Erase all keys and queued packets; the peer sends and accepts nothing afterwards. */
  destroy(): void {
    this.zeroKeyMaterial();
    this.handshake.destroy();
    this.cookieGenerator.destroy();
    this.timers.stopAll();
    this.destroyed = true;
  }

  /** For tests and status: the keypairs' ages and indices (no key material). */
  sessionInfo(): { current?: number; previous?: number; next?: number } {
    return {
      current: this.keypairs.current?.createdAt,
      previous: this.keypairs.previous?.createdAt,
      next: this.keypairs.next?.createdAt,
    };
  }

  /** For tests: the timer deadlines. */
  timerDeadline(name: Parameters<PeerTimers['deadline']>[0]): number | undefined {
    return this.timers.deadline(name);
  }

  // -------------------------------------------------------------------------------------------
  // Sending (send.go)

  private push(out: Datagram[], data: Uint8Array, to: Endpoint): void {
    out.push({ data, to });
    this.counters.txDatagrams++;
    this.counters.txBytes += data.length;
  }

  private stage(packet: Uint8Array): void {
    if (this.staged.length >= this.maxStaged) {
      this.staged.shift();
      this.counters.dropped.queue_overflow++;
    }
    this.staged.push(packet);
  }

  private sendKeepalive(now: number, out: Datagram[]): void {
    if (this.staged.length === 0) this.staged.push(new Uint8Array(0));
    this.sendStagedPackets(now, out);
  }

  private sendStagedPackets(now: number, out: Datagram[]): void {
    if (this.staged.length === 0) return;
    const kp = this.keypairs.current;
    if (kp === undefined || !kp.canSend(now)) {
      this.sendHandshakeInitiation(now, false, out);
      return;
    }
    const to = this.endpoint;
    if (to === undefined) return; // a responder always has one; kept until it does
    let i = 0;
    for (; i < this.staged.length; i++) {
      const p = this.staged[i];
      const msg = kp.seal(p, p.length === 0 ? 0 : paddedLength(p.length, this.mtu));
      if (msg === undefined) break; // counter exhausted: keep the rest for the next session
      this.timers.anyAuthenticatedPacketTraversal(now);
      this.timers.anyAuthenticatedPacketSent();
      this.push(out, msg, to);
      if (p.length === 0) this.counters.keepalivesSent++;
      else {
        this.counters.txPackets++;
        this.timers.dataSent(now);
      }
    }
    this.staged = i === this.staged.length ? [] : this.staged.slice(i);
    if (this.staged.length > 0) this.sendHandshakeInitiation(now, false, out);
    else this.keepKeyFreshSending(now, out);
  }

  /** §6.2: the initiator rekeys after REKEY_AFTER_TIME, anyone after REKEY_AFTER_MESSAGES. */
  private keepKeyFreshSending(now: number, out: Datagram[]): void {
    const kp = this.keypairs.current;
    if (kp === undefined) return;
    if (kp.sendCounter > REKEY_AFTER_MESSAGES || (kp.isInitiator && now - kp.createdAt > REKEY_AFTER_TIME_MS)) {
      this.sendHandshakeInitiation(now, false, out);
    }
  }

  /**
   * §6.2: an initiator that receives with a keypair older than REJECT_AFTER_TIME -
   * KEEPALIVE_TIMEOUT - REKEY_TIMEOUT rekeys once ("last minute"), so a session that only
   * receives is renewed before it is rejected.
   */
  private keepKeyFreshReceiving(now: number, out: Datagram[]): void {
    if (this.timers.sentLastMinuteHandshake) return;
    const kp = this.keypairs.current;
    if (kp !== undefined && kp.isInitiator && now - kp.createdAt > REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS) {
      this.timers.sentLastMinuteHandshake = true;
      this.sendHandshakeInitiation(now, false, out);
    }
  }

  private sendHandshakeInitiation(now: number, isRetry: boolean, out: Datagram[]): void {
    if (!isRetry) this.timers.handshakeAttempts = 0;
    if (now - this.handshake.lastSentHandshake < REKEY_TIMEOUT_MS) {
      this.counters.initiationsRateLimited++;
      return;
    }
    const to = this.endpoint;
    if (to === undefined) {
      this.counters.noEndpoint++;
      return;
    }
    this.handshake.lastSentHandshake = now;
    this.indexTable.release(this.handshakeIndex);
    this.handshakeIndex = this.indexTable.allocate(this);
    const msg = createInitiation(this.local, this.handshake, {
      wallMs: this.wallClock(),
      random: this.random,
      localIndex: this.handshakeIndex,
    });
    if (msg === undefined) {
      this.counters.dropped.wrong_peer++; // the peer's public key is unusable (low order)
      return;
    }
    this.cookieGenerator.addMacs(msg, now);
    this.timers.anyAuthenticatedPacketTraversal(now);
    this.timers.anyAuthenticatedPacketSent();
    this.push(out, msg, to);
    this.counters.initiationsSent++;
    this.timers.handshakeInitiated(now);
  }

  private sendHandshakeResponse(now: number, out: Datagram[]): void {
    const to = this.endpoint;
    if (to === undefined) return;
    this.handshake.lastSentHandshake = now;
    this.indexTable.release(this.handshakeIndex);
    this.handshakeIndex = this.indexTable.allocate(this);
    const msg = createResponse(this.handshake, { random: this.random, localIndex: this.handshakeIndex });
    if (msg === undefined) {
      this.counters.dropped.bad_response++;
      return;
    }
    this.cookieGenerator.addMacs(msg, now);
    this.beginSymmetricSession(now);
    this.timers.sessionDerived(now);
    this.timers.anyAuthenticatedPacketTraversal(now);
    this.timers.anyAuthenticatedPacketSent();
    this.push(out, msg, to);
    this.counters.responsesSent++;
  }

  /** Derive the keypair from the finished handshake and rotate it in (wireguard-go's BeginSymmetricSession). */
  private beginSymmetricSession(now: number): boolean {
    const keys = deriveTransportKeys(this.handshake);
    if (keys === undefined) return false;
    const kp = new Keypair(keys, now);
    this.handshakeIndex = 0; // the index now belongs to the keypair
    this.releaseAll(this.keypairs.install(kp));
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Receiving (receive.go)

  private receiveResponse(now: number, data: Uint8Array, from: Endpoint, res: ReceiveResult): void {
    const why = consumeResponse(this.local, this.handshake, data);
    if (why !== undefined) {
      if (why === 'forged' || why === 'bad_key') this.counters.dropped.bad_response++;
      else this.counters.dropped.unexpected_response++;
      return;
    }
    this.counters.responsesReceived++;
    this.endpoint = from;
    this.timers.anyAuthenticatedPacketTraversal(now);
    this.timers.anyAuthenticatedPacketReceived();
    if (!this.beginSymmetricSession(now)) return;
    this.timers.sessionDerived(now);
    this.timers.handshakeComplete();
    this.counters.handshakesCompleted++;
    this.lastHandshakeAt = now;
    // Confirm the session to the responder: queued packets, or a keepalive.
    this.sendKeepalive(now, res.datagrams);
  }

  private receiveCookieReply(now: number, data: Uint8Array): void {
    const receiver = readU32(data, 4);
    const ours = (receiver !== 0 && receiver === this.handshakeIndex) || this.keypairs.find(receiver) !== undefined;
    if (!ours || !this.cookieGenerator.consumeReply(data, now)) {
      this.counters.dropped.forged_cookie++;
      return;
    }
    this.counters.cookieRepliesReceived++;
    // §6.6: no new initiation now; the retransmission timer sends the next one with mac2.
  }

  private receiveTransport(now: number, data: Uint8Array, from: Endpoint, res: ReceiveResult): void {
    const kp = this.keypairs.find(transportReceiver(data));
    if (kp === undefined) {
      this.counters.dropped.wrong_key++;
      return;
    }
    if (!kp.canReceive(now)) {
      this.counters.dropped.expired_key++;
      return;
    }
    const opened = kp.open(data);
    if (opened === undefined) {
      this.counters.dropped.forged++;
      return;
    }
    if (!kp.replay.validate(opened.counter, REJECT_AFTER_MESSAGES)) {
      this.counters.dropped.replayed++;
      return;
    }
    this.endpoint = from; // roaming: the source of the last authenticated packet
    const rotated = this.keypairs.confirm(kp);
    if (rotated !== undefined) {
      this.releaseAll(rotated);
      this.timers.handshakeComplete();
      this.counters.handshakesCompleted++;
      this.lastHandshakeAt = now;
      this.sendStagedPackets(now, res.datagrams);
    }
    this.keepKeyFreshReceiving(now, res.datagrams);
    this.timers.anyAuthenticatedPacketTraversal(now);
    this.timers.anyAuthenticatedPacketReceived();
    const plain = opened.plain;
    if (plain.length === 0) {
      this.counters.keepalivesReceived++;
      return;
    }
    this.timers.dataReceived(now);
    const packet = innerPacket(plain);
    if (packet === undefined) {
      this.counters.dropped.bad_inner_packet++;
      return;
    }
    if (this.allowedSource !== undefined && !this.allowedSource(packet)) {
      this.counters.dropped.disallowed_source++;
      return;
    }
    this.counters.rxPackets++;
    res.packets.push(packet);
  }

  // -------------------------------------------------------------------------------------------
  // Timers (timers.go)

  private expiredRetransmitHandshake(now: number, out: Datagram[]): void {
    if (this.timers.handshakeAttempts > MAX_TIMER_HANDSHAKES) {
      // Gave up after REKEY_ATTEMPT_TIME: drop what waited for this session; erase the
      // remains of the partial exchange later unless a new session comes first.
      this.timers.clear('sendKeepalive');
      this.counters.dropped.handshake_failed += this.staged.filter((p) => p.length > 0).length;
      this.staged = [];
      if (!this.timers.isPending('zeroKeyMaterial')) this.timers.set('zeroKeyMaterial', now + REJECT_AFTER_TIME_MS * 3);
      return;
    }
    this.timers.handshakeAttempts++;
    this.sendHandshakeInitiation(now, true, out);
  }

  private zeroKeyMaterial(): void {
    this.releaseAll(this.keypairs.clear());
    this.indexTable.release(this.handshakeIndex);
    this.handshakeIndex = 0;
    this.handshake.clear();
    this.staged = [];
  }

  private releaseAll(dropped: Keypair[]): void {
    for (const k of dropped) this.indexTable.release(k.localIndex);
  }
}

/**
 * The decrypted, padded payload trimmed to the IP packet it carries (IPv4: Total Length;
 * IPv6: 40 + Payload Length), or undefined when it is not one (wireguard-go's receive checks).
 */
export function innerPacket(plain: Uint8Array): Uint8Array | undefined {
  const v = plain[0] >>> 4;
  if (v === 4) {
    if (plain.length < 20) return undefined;
    const total = (plain[2] << 8) | plain[3];
    if (total < 20 || total > plain.length) return undefined;
    return plain.subarray(0, total);
  }
  if (v === 6) {
    if (plain.length < 40) return undefined;
    const total = 40 + ((plain[4] << 8) | plain[5]);
    if (total > plain.length) return undefined;
    return plain.subarray(0, total);
  }
  return undefined;
}
