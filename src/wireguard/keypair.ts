/**
 * Transport keypairs — WireGuard whitepaper §5.4.6 (Subsequent Messages: Transport Data
 * Messages) and §6.2-§6.4 (key rotation):
 *
 *   msg.counter := Nm_send; Nm_send := Nm_send + 1
 *   msg.encrypted_encapsulated_packet := AEAD(Tm_send, msg.counter, P, ε)
 *   P is zero-padded to a multiple of 16 bytes (the inner IP header says where it ends).
 *
 * Each peer holds up to three keypairs (wireguard-go's `Keypairs`): `current` (used to send),
 * `previous` (still accepted while the other side switches), and on the responder `next`: a
 * responder may not send with a new keypair until the initiator has used it (key confirmation),
 * so the first transport message received with `next` promotes it to `current`.
 *
 * Keys are wiped when a keypair is dropped: pushed out by rotation, older than
 * REJECT_AFTER_TIME (expired), or when the peer zeroes all key material.
 */
import type { TransportKeys } from './handshake.js';
import { wipe } from './keys.js';
import { TRANSPORT_HEADER_LEN, transportCounter } from './messages.js';
import { AEAD_TAG_LEN } from './noise.js';
import { ReplayFilter } from './replay.js';
import { transportAead, type TransportAead } from './transport-aead.js';

/** §6.2: after this many messages the initiator starts a new handshake. */
export const REKEY_AFTER_MESSAGES = 1n << 60n;
/** §6.2: no message is sent or accepted with a counter at or above this. */
export const REJECT_AFTER_MESSAGES = (1n << 64n) - (1n << 13n) - 1n;
/** §6.2: a keypair older than this is neither used nor accepted (ms). */
export const REJECT_AFTER_TIME_MS = 180_000;
/** §5.4.6: padding multiple of the encapsulated packet. */
export const PADDING_MULTIPLE = 16;

/** The length `len` is padded to: the next multiple of 16, but not above the MTU (wireguard-go). */
export function paddedLength(len: number, mtu: number): number {
  if (mtu <= 0) return (len + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1);
  let last = len;
  if (last > mtu) last %= mtu;
  let padded = (last + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1);
  if (padded > mtu) padded = mtu;
  return len + (padded - last);
}

export class Keypair {
  readonly isInitiator: boolean;
  readonly localIndex: number;
  readonly remoteIndex: number;
  /** Monotonic ms when the keypair was derived. */
  readonly createdAt: number;
  /** The next counter to send with. */
  sendCounter = 0n;
  readonly replay = new ReplayFilter();
  /** The raw keys; undefined once wiped. */
  private sendKey: Uint8Array | undefined;
  private recvKey: Uint8Array | undefined;
  private readonly aead: TransportAead;

  /** `aead`: the cipher (default: native when the addon is built); tests pass either one. */
  constructor(keys: TransportKeys, createdAt: number, aead: TransportAead = transportAead()) {
    this.isInitiator = keys.isInitiator;
    this.localIndex = keys.localIndex;
    this.remoteIndex = keys.remoteIndex;
    this.createdAt = createdAt;
    this.sendKey = new Uint8Array(keys.sendKey);
    this.recvKey = new Uint8Array(keys.recvKey);
    wipe(keys.sendKey, keys.recvKey);
    this.aead = aead;
  }

  get wiped(): boolean {
    return this.sendKey === undefined;
  }

  /** Whether this keypair may still send at `now` (not expired, counter not exhausted). */
  canSend(now: number): boolean {
    return this.sendKey !== undefined && this.sendCounter < REJECT_AFTER_MESSAGES && now - this.createdAt < REJECT_AFTER_TIME_MS;
  }

  /** Whether messages for this keypair may still be accepted at `now`. */
  canReceive(now: number): boolean {
    return this.recvKey !== undefined && now - this.createdAt < REJECT_AFTER_TIME_MS;
  }

  /**
   * Seal one IP packet (empty for a keepalive) into a whole transport message, padding it to
   * `paddedLen` bytes (≥ packet length). Takes the next counter. `undefined` when the keypair is
   * wiped or its counter is exhausted.
   */
  seal(packet: Uint8Array, paddedLen: number = packet.length): Uint8Array | undefined {
    const key = this.sendKey;
    if (key === undefined || this.sendCounter >= REJECT_AFTER_MESSAGES) return undefined;
    const counter = this.sendCounter++;
    const n = Math.max(paddedLen, packet.length);
    // Every byte is written by seal (padding included), so the buffer need not be zero-filled;
    // messages under 4 KiB come from Node's shared pool, not an allocation each.
    const out: Uint8Array = Buffer.allocUnsafe(TRANSPORT_HEADER_LEN + n + AEAD_TAG_LEN);
    this.aead.seal(key, this.remoteIndex, counter, packet, n, out, 0);
    return out;
  }

  /**
   * Open a transport message addressed to this keypair (type and length already checked):
   * the padded plaintext and its counter, or `undefined` when it does not authenticate.
   * The replay window is not touched: the caller validates the counter afterwards.
   */
  open(msg: Uint8Array): { plain: Uint8Array; counter: bigint } | undefined {
    const key = this.recvKey;
    if (key === undefined || msg.length < TRANSPORT_HEADER_LEN + AEAD_TAG_LEN) return undefined;
    // The plaintext gets a buffer of its own: `msg` may be a view the transport reuses.
    const plain: Uint8Array = Buffer.allocUnsafe(msg.length - TRANSPORT_HEADER_LEN - AEAD_TAG_LEN);
    if (this.aead.open(key, msg, plain, 0) < 0) return undefined;
    return { plain, counter: transportCounter(msg) };
  }

  /** Zero the key bytes (and the cipher's copy); the keypair can no longer seal or open. */
  wipe(): void {
    if (this.sendKey !== undefined && this.recvKey !== undefined) wipe(this.sendKey, this.recvKey);
    this.sendKey = undefined;
    this.recvKey = undefined;
    this.aead.wipe();
  }
}

/** previous / current / next, rotated as wireguard-go's BeginSymmetricSession and ReceivedWithKeypair. */
export class Keypairs {
  previous: Keypair | undefined;
  current: Keypair | undefined;
  next: Keypair | undefined;

  /**
   * Install a freshly derived keypair. Initiator: it becomes `current` at once (the old current,
   * or an unconfirmed `next`, becomes `previous`). Responder: it waits in `next` for
   * confirmation. Returns the keypairs dropped (already wiped) so their indices can be freed.
   */
  install(kp: Keypair): Keypair[] {
    const dropped: Keypair[] = [];
    if (kp.isInitiator) {
      if (this.next !== undefined) {
        if (this.previous) dropped.push(this.previous);
        this.previous = this.next;
        this.next = undefined;
        if (this.current) dropped.push(this.current);
      } else {
        if (this.previous) dropped.push(this.previous);
        this.previous = this.current;
      }
      this.current = kp;
    } else {
      if (this.next) dropped.push(this.next);
      if (this.previous) dropped.push(this.previous);
      this.next = kp;
      this.previous = undefined;
    }
    for (const d of dropped) d.wipe();
    return dropped;
  }

  /**
   * A transport message authenticated with `kp`. When `kp` is the unconfirmed `next`, it becomes
   * `current` (and the old current `previous`); returns the dropped keypair list, or undefined
   * when nothing rotated.
   */
  confirm(kp: Keypair): Keypair[] | undefined {
    if (kp !== this.next) return undefined;
    const dropped: Keypair[] = [];
    if (this.previous) dropped.push(this.previous);
    this.previous = this.current;
    this.current = kp;
    this.next = undefined;
    for (const d of dropped) d.wipe();
    return dropped;
  }

  /** The keypair whose local index is `index`. */
  find(index: number): Keypair | undefined {
    if (this.current?.localIndex === index) return this.current;
    if (this.next?.localIndex === index) return this.next;
    if (this.previous?.localIndex === index) return this.previous;
    return undefined;
  }

  /** Drop (and wipe) every keypair at or past REJECT_AFTER_TIME. */
  expire(now: number): Keypair[] {
    const dropped: Keypair[] = [];
    const old = (k: Keypair | undefined): boolean => k !== undefined && now - k.createdAt >= REJECT_AFTER_TIME_MS;
    if (old(this.previous)) {
      dropped.push(this.previous as Keypair);
      this.previous = undefined;
    }
    if (old(this.current)) {
      dropped.push(this.current as Keypair);
      this.current = undefined;
    }
    if (old(this.next)) {
      dropped.push(this.next as Keypair);
      this.next = undefined;
    }
    for (const d of dropped) d.wipe();
    return dropped;
  }

  /** When the next keypair expires (for pollAt), or undefined with none held. */
  nextExpiry(): number | undefined {
    let t: number | undefined;
    for (const k of [this.previous, this.current, this.next]) {
      if (k !== undefined) t = Math.min(t ?? Infinity, k.createdAt + REJECT_AFTER_TIME_MS);
    }
    return t;
  }

  /** Drop and wipe all keypairs. */
  clear(): Keypair[] {
    const dropped = [this.previous, this.current, this.next].filter((k): k is Keypair => k !== undefined);
    this.previous = this.current = this.next = undefined;
    for (const d of dropped) d.wipe();
    return dropped;
  }
}
