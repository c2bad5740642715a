/**
 * The handshake — WireGuard whitepaper §5.4.2 (First Message: Initiator to Responder),
 * §5.4.3 (Second Message: Responder to Initiator) and §5.4.5 (Transport Data Key Derivation):
 * Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s.
 *
 * Initiator, first message:
 *   Ci := HASH(CONSTRUCTION); Hi := HASH(Ci || IDENTIFIER); Hi := HASH(Hi || Sr_pub)
 *   (Ei_priv, Ei_pub) := DH-GENERATE(); msg.unencrypted_ephemeral := Ei_pub
 *   Ci := KDF1(Ci, Ei_pub); Hi := HASH(Hi || msg.unencrypted_ephemeral)
 *   (Ci, κ) := KDF2(Ci, DH(Ei_priv, Sr_pub))
 *   msg.encrypted_static := AEAD(κ, 0, Si_pub, Hi); Hi := HASH(Hi || msg.encrypted_static)
 *   (Ci, κ) := KDF2(Ci, DH(Si_priv, Sr_pub))
 *   msg.encrypted_timestamp := AEAD(κ, 0, TAI64N(), Hi); Hi := HASH(Hi || msg.encrypted_timestamp)
 *
 * Responder, second message:
 *   (Er_priv, Er_pub) := DH-GENERATE(); msg.unencrypted_ephemeral := Er_pub
 *   Cr := KDF1(Cr, Er_pub); Hr := HASH(Hr || msg.unencrypted_ephemeral)
 *   Cr := KDF1(Cr, DH(Er_priv, Ei_pub)); Cr := KDF1(Cr, DH(Er_priv, Si_pub))
 *   (Cr, τ, κ) := KDF3(Cr, Q); Hr := HASH(Hr || τ)
 *   msg.encrypted_nothing := AEAD(κ, 0, ε, Hr); Hr := HASH(Hr || msg.encrypted_nothing)
 *
 * Transport keys: (T_send_i = T_recv_r, T_recv_i = T_send_r) := KDF2(C, ε); then C, H and the
 * ephemeral keys are erased.
 *
 * The responder checks the decrypted timestamp is strictly later than the last one accepted from
 * that peer (replay of an old initiation is refused) and accepts at most one initiation per
 * 20 ms per peer (flood). mac1/mac2 are checked before any of this (cookie.ts). The functions
 * return `undefined` or a reason; they never throw on what arrives from the network.
 */
import { constantTimeEqual, isZero, PrivateKey, wipe, type RandomSource } from './keys.js';
import {
  ENCRYPTED_NOTHING_LEN,
  InitiationMessage,
  INITIATION_LEN,
  ResponseMessage,
  RESPONSE_LEN,
} from './messages.js';
import {
  aeadOpen,
  aeadSeal,
  hash,
  INITIAL_CHAIN_KEY,
  INITIAL_HASH,
  kdf1,
  kdf2,
  kdf3,
  tai64n,
  timestampAfter,
  TIMESTAMP_LEN,
} from './noise.js';

/** wireguard-go's HandshakeInitationRate: at most one initiation per peer per 20 ms. */
export const HANDSHAKE_INITIATION_RATE_MS = 1000 / 50;

export type HandshakeState = 'zeroed' | 'initiation_created' | 'initiation_consumed' | 'response_created' | 'response_consumed';

const EMPTY = new Uint8Array(0);

/** Our static key pair (the interface's private key). */
export class StaticIdentity {
  readonly privateKey: PrivateKey;
  constructor(privateKey: Uint8Array | PrivateKey) {
    this.privateKey = privateKey instanceof PrivateKey ? privateKey : new PrivateKey(privateKey);
  }
  get publicKey(): Uint8Array {
    return this.privateKey.publicKey;
  }
}

/** The Noise state shared with one peer (wireguard-go's `Handshake`). */
export class Handshake {
  state: HandshakeState = 'zeroed';
  readonly remoteStatic: Uint8Array;
  readonly presharedKey: Uint8Array;
  /** DH(S_priv, S_pub_remote), computed once; undefined when the remote key is low-order. */
  readonly precomputedStaticStatic: Uint8Array | undefined;
  hash: Uint8Array = new Uint8Array(32);
  chainKey: Uint8Array = new Uint8Array(32);
  localEphemeral: PrivateKey | undefined;
  remoteEphemeral: Uint8Array = new Uint8Array(32);
  localIndex = 0;
  remoteIndex = 0;
  /** The latest TAI64N accepted from this peer; an initiation must carry a later one. */
  lastTimestamp: Uint8Array = new Uint8Array(TIMESTAMP_LEN);
  /** Monotonic ms of the last accepted initiation (flood limit). */
  lastInitiationConsumption = -Infinity;
  /** Monotonic ms of the last initiation or response we sent (initiation rate limit). */
  lastSentHandshake = -Infinity;

  constructor(local: StaticIdentity, remoteStatic: Uint8Array, presharedKey?: Uint8Array) {
    if (remoteStatic.length !== 32) throw new RangeError('the peer public key must be 32 bytes');
    if (presharedKey !== undefined && presharedKey.length !== 32) throw new RangeError('the preshared key must be 32 bytes');
    this.remoteStatic = new Uint8Array(remoteStatic);
    this.presharedKey = presharedKey ? new Uint8Array(presharedKey) : new Uint8Array(32);
    this.precomputedStaticStatic = local.privateKey.dh(remoteStatic);
  }

  /** Erase the in-progress state (chaining key, hash, ephemeral keys); keeps replay/flood memory. */
  clear(): void {
    wipe(this.hash, this.chainKey, this.remoteEphemeral);
    this.localEphemeral?.wipe();
    this.localEphemeral = undefined;
    this.state = 'zeroed';
    this.localIndex = 0;
    this.remoteIndex = 0;
  }

  /** Erase everything secret, including the preshared key (the peer is being removed). */
  destroy(): void {
    this.clear();
    wipe(this.presharedKey, this.precomputedStaticStatic);
  }
}

export interface CreateInitiationOptions {
  /** Wall-clock ms since the Unix epoch, for the TAI64N timestamp. */
  wallMs: number;
  random: RandomSource;
  /** Our index for this handshake (the message's sender field). */
  localIndex: number;
}

/**
 * First message, initiator side: a 148-byte initiation with mac1/mac2 left zero (cookie.ts
 * fills them). `undefined` when the peer's public key is unusable (low-order point).
 */
export function createInitiation(local: StaticIdentity, hs: Handshake, opts: CreateInitiationOptions): Uint8Array | undefined {
  if (hs.precomputedStaticStatic === undefined || isZero(hs.precomputedStaticStatic)) return undefined;
  const e = PrivateKey.generate(opts.random);
  let h = hash(INITIAL_HASH, hs.remoteStatic);
  let c = kdf1(INITIAL_CHAIN_KEY, e.publicKey);
  h = hash(h, e.publicKey);
  const ss1 = e.dh(hs.remoteStatic);
  if (ss1 === undefined) {
    e.wipe();
    return undefined;
  }
  let [c2, k] = kdf2(c, ss1);
  wipe(c, ss1);
  c = c2;
  const encryptedStatic = aeadSeal(k, 0n, local.publicKey, h);
  wipe(k);
  h = hash(h, encryptedStatic);
  [c2, k] = kdf2(c, hs.precomputedStaticStatic);
  wipe(c);
  c = c2;
  const ts = tai64n(opts.wallMs);
  const encryptedTimestamp = aeadSeal(k, 0n, ts, h);
  wipe(k);
  h = hash(h, encryptedTimestamp);

  hs.clear();
  hs.hash = h;
  hs.chainKey = c;
  hs.localEphemeral = e;
  hs.localIndex = opts.localIndex >>> 0;
  hs.state = 'initiation_created';

  const msg = new Uint8Array(INITIATION_LEN);
  InitiationMessage.emit(
    {
      sender: hs.localIndex,
      ephemeral: e.publicKey,
      encryptedStatic,
      encryptedTimestamp,
      mac1: new Uint8Array(16),
      mac2: new Uint8Array(16),
    },
    msg,
  );
  return msg;
}

/** What the responder learns from an initiation before it knows which peer sent it. */
export interface OpenedInitiation {
  readonly sender: number;
  /** The initiator's static public key (decrypted): who claims to be talking. */
  readonly remoteStatic: Uint8Array;
  readonly ephemeral: Uint8Array;
  readonly encryptedTimestamp: Uint8Array;
  hash: Uint8Array;
  chainKey: Uint8Array;
}

/**
 * First message, responder side, step 1: decrypt the initiator's static key with our static
 * key. A device looks the result up among its peers; `undefined` when the message does not
 * decrypt (forged, or not for us).
 */
export function openInitiation(local: StaticIdentity, msg: Uint8Array): OpenedInitiation | undefined {
  const m = InitiationMessage.parse(msg);
  if (m === undefined) return undefined;
  let h = hash(INITIAL_HASH, local.publicKey);
  let c = kdf1(INITIAL_CHAIN_KEY, m.ephemeral);
  h = hash(h, m.ephemeral);
  const ss = local.privateKey.dh(m.ephemeral);
  if (ss === undefined) {
    wipe(c);
    return undefined;
  }
  const [c2, k] = kdf2(c, ss);
  wipe(c, ss);
  c = c2;
  const remoteStatic = aeadOpen(k, 0n, m.encryptedStatic, h);
  wipe(k);
  if (remoteStatic === undefined) {
    wipe(c);
    return undefined;
  }
  h = hash(h, m.encryptedStatic);
  return {
    sender: m.sender,
    remoteStatic: new Uint8Array(remoteStatic),
    ephemeral: new Uint8Array(m.ephemeral),
    encryptedTimestamp: new Uint8Array(m.encryptedTimestamp),
    hash: h,
    chainKey: c,
  };
}

export type InitiationRejection = 'wrong_peer' | 'bad_timestamp' | 'replayed_timestamp' | 'flood';

/**
 * First message, responder side, step 2, with the handshake of the peer whose static key the
 * initiation carries: decrypt and check the timestamp, then keep the state for the response.
 * Returns `undefined` on success, else why the initiation is refused (the state is unchanged).
 */
export function acceptInitiation(hs: Handshake, opened: OpenedInitiation, now: number): InitiationRejection | undefined {
  if (!constantTimeEqual(opened.remoteStatic, hs.remoteStatic)) return 'wrong_peer';
  const ss = hs.precomputedStaticStatic;
  if (ss === undefined || isZero(ss)) return 'wrong_peer';
  const [c, k] = kdf2(opened.chainKey, ss);
  const ts = aeadOpen(k, 0n, opened.encryptedTimestamp, opened.hash);
  wipe(k);
  if (ts === undefined || ts.length !== TIMESTAMP_LEN) {
    wipe(c);
    return 'bad_timestamp';
  }
  if (!timestampAfter(ts, hs.lastTimestamp)) {
    wipe(c);
    return 'replayed_timestamp';
  }
  if (now - hs.lastInitiationConsumption <= HANDSHAKE_INITIATION_RATE_MS) {
    wipe(c);
    return 'flood';
  }
  const h = hash(opened.hash, opened.encryptedTimestamp);
  hs.clear();
  hs.hash = h;
  hs.chainKey = c;
  hs.remoteEphemeral = new Uint8Array(opened.ephemeral);
  hs.remoteIndex = opened.sender;
  hs.lastTimestamp = new Uint8Array(ts);
  hs.lastInitiationConsumption = Math.max(hs.lastInitiationConsumption, now);
  hs.state = 'initiation_consumed';
  wipe(opened.chainKey, opened.hash);
  return undefined;
}

export interface CreateResponseOptions {
  random: RandomSource;
  localIndex: number;
}

/**
 * Second message, responder side: a 92-byte response (macs zero). `undefined` unless an
 * initiation was just accepted, or when the initiator's ephemeral key is unusable.
 */
export function createResponse(hs: Handshake, opts: CreateResponseOptions): Uint8Array | undefined {
  if (hs.state !== 'initiation_consumed') return undefined;
  const e = PrivateKey.generate(opts.random);
  let c = kdf1(hs.chainKey, e.publicKey);
  let h = hash(hs.hash, e.publicKey);
  const ee = e.dh(hs.remoteEphemeral);
  const es = e.dh(hs.remoteStatic);
  if (ee === undefined || es === undefined) {
    e.wipe();
    wipe(c, ee, es);
    return undefined;
  }
  const c2 = kdf1(c, ee);
  wipe(c, ee);
  c = kdf1(c2, es);
  wipe(c2, es);
  const [c3, tau, k] = kdf3(c, hs.presharedKey);
  wipe(c);
  c = c3;
  h = hash(h, tau);
  wipe(tau);
  const encryptedNothing = aeadSeal(k, 0n, EMPTY, h);
  wipe(k);
  h = hash(h, encryptedNothing);

  const remoteIndex = hs.remoteIndex;
  wipe(hs.hash, hs.chainKey);
  hs.hash = h;
  hs.chainKey = c;
  hs.localEphemeral?.wipe();
  hs.localEphemeral = e;
  hs.localIndex = opts.localIndex >>> 0;
  hs.state = 'response_created';

  const msg = new Uint8Array(RESPONSE_LEN);
  ResponseMessage.emit(
    {
      sender: hs.localIndex,
      receiver: remoteIndex,
      ephemeral: e.publicKey,
      encryptedNothing,
      mac1: new Uint8Array(16),
      mac2: new Uint8Array(16),
    },
    msg,
  );
  return msg;
}

export type ResponseRejection = 'unexpected' | 'wrong_index' | 'bad_key' | 'forged';

/**
 * Second message, initiator side. Returns `undefined` when the response completes our
 * initiation (state `response_consumed`), else why not (the state is unchanged).
 */
export function consumeResponse(local: StaticIdentity, hs: Handshake, msg: Uint8Array): ResponseRejection | undefined {
  const m = ResponseMessage.parse(msg);
  if (m === undefined) return 'forged';
  if (hs.state !== 'initiation_created' || hs.localEphemeral === undefined) return 'unexpected';
  if (m.receiver !== hs.localIndex) return 'wrong_index';
  let h = hash(hs.hash, m.ephemeral);
  let c = kdf1(hs.chainKey, m.ephemeral);
  const ee = hs.localEphemeral.dh(m.ephemeral);
  const se = local.privateKey.dh(m.ephemeral);
  if (ee === undefined || se === undefined) {
    wipe(c, ee, se);
    return 'bad_key';
  }
  const c2 = kdf1(c, ee);
  wipe(c, ee);
  c = kdf1(c2, se);
  wipe(c2, se);
  const [c3, tau, k] = kdf3(c, hs.presharedKey);
  wipe(c);
  c = c3;
  h = hash(h, tau);
  wipe(tau);
  const nothing = aeadOpen(k, 0n, m.encryptedNothing, h);
  wipe(k);
  if (nothing === undefined || m.encryptedNothing.length !== ENCRYPTED_NOTHING_LEN) {
    wipe(c);
    return 'forged';
  }
  h = hash(h, m.encryptedNothing);
  wipe(hs.hash, hs.chainKey);
  hs.hash = h;
  hs.chainKey = c;
  hs.remoteIndex = m.sender;
  hs.state = 'response_consumed';
  return undefined;
}

export interface TransportKeys {
  readonly sendKey: Uint8Array;
  readonly recvKey: Uint8Array;
  readonly isInitiator: boolean;
  readonly localIndex: number;
  readonly remoteIndex: number;
}

/**
 * §5.4.5: derive the transport keys from the final chaining key and erase the handshake state
 * (state `zeroed`). `undefined` unless a response was just created or consumed.
 */
export function deriveTransportKeys(hs: Handshake): TransportKeys | undefined {
  let isInitiator: boolean;
  if (hs.state === 'response_consumed') isInitiator = true;
  else if (hs.state === 'response_created') isInitiator = false;
  else return undefined;
  const [t1, t2] = kdf2(hs.chainKey, EMPTY);
  const keys: TransportKeys = {
    sendKey: isInitiator ? t1 : t2,
    recvKey: isInitiator ? t2 : t1,
    isInitiator,
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
  };
  hs.clear();
  return keys;
}
