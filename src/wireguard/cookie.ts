/**
 * Cookies — WireGuard whitepaper §5.3 (Denial of Service Mitigation & Cookies), §5.4.4 (Cookie
 * MACs) and §5.4.7 (Under Load: Cookie Reply Message):
 *
 *   msg.mac1 := MAC(HASH(LABEL_MAC1 || Sm'_pub), msg_a)       msg_a = the message up to mac1
 *   if Lm = ε or Lm is older than 120 s: msg.mac2 := 0^16
 *   otherwise:                           msg.mac2 := MAC(Lm, msg_b)   msg_b = up to mac2
 *
 * Under load, a responder answers a handshake message whose mac2 is missing or wrong with a
 * cookie reply instead of doing any Curve25519 work:
 *
 *   τ := MAC(Rm, Am)          Rm: a random secret that changes every 2 minutes,
 *                             Am: the initiator's source address and port
 *   msg.receiver := Im'       the sender index of the message being answered
 *   msg.nonce := random 24 bytes
 *   msg.encrypted_cookie := XAEAD(HASH(LABEL_COOKIE || Sm_pub), msg.nonce, τ, M)
 *                             M: the mac1 of the message being answered
 *
 * `CookieChecker` is the responder's side (one per local static key), `CookieGenerator` the
 * initiator's (one per peer). Time is `now` (monotonic ms) passed in; nothing here keeps a timer.
 */
import { constantTimeEqual, wipe, type RandomSource } from './keys.js';
import { COOKIE_REPLY_LEN, CookieReplyMessage, readU32, type CookieReplyRepr } from './messages.js';
import { hash, LABEL_COOKIE, LABEL_MAC1, mac, MAC_LEN, xaeadOpen, xaeadSeal, XAEAD_NONCE_LEN } from './noise.js';

/** How long a cookie (and the responder's secret behind it) stays valid. */
export const COOKIE_REFRESH_TIME_MS = 120_000;
/** How long a device stays "under load" after load was last detected (wireguard-go). */
export const UNDER_LOAD_AFTER_TIME_MS = 1_000;

/** Offsets of mac1 and mac2 in a handshake message (the last 32 bytes). */
function macOffsets(msg: Uint8Array): [number, number] {
  const mac2 = msg.length - MAC_LEN;
  return [mac2 - MAC_LEN, mac2];
}

/** The responder's side: checks mac1/mac2 of arriving handshake messages and makes cookie replies. */
export class CookieChecker {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private readonly secret = new Uint8Array(32);
  private secretSetAt = -Infinity;

  constructor(localPublicKey: Uint8Array) {
    this.mac1Key = hash(LABEL_MAC1, localPublicKey);
    this.encryptionKey = hash(LABEL_COOKIE, localPublicKey);
  }

  /** Whether mac1 is right: the sender knows our public key. */
  checkMac1(msg: Uint8Array): boolean {
    if (msg.length < 2 * MAC_LEN) return false;
    const [m1, m2] = macOffsets(msg);
    return constantTimeEqual(mac(this.mac1Key, msg.subarray(0, m1)), msg.subarray(m1, m2));
  }

  /** Whether mac2 carries a valid cookie for `source` (false once the secret is older than 2 min). */
  checkMac2(msg: Uint8Array, source: Uint8Array, now: number): boolean {
    if (msg.length < 2 * MAC_LEN) return false;
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME_MS) return false;
    const cookie = mac(this.secret, source);
    const [, m2] = macOffsets(msg);
    const ok = constantTimeEqual(mac(cookie, msg.subarray(0, m2)), msg.subarray(m2));
    wipe(cookie);
    return ok;
  }

  /**
   * A 64-byte cookie reply to handshake message `msg` (initiation or response) from `source`.
   * The secret is renewed first when it is older than 2 minutes.
   */
  createReply(msg: Uint8Array, source: Uint8Array, now: number, random: RandomSource): Uint8Array {
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME_MS) {
      this.secret.set(random(32).subarray(0, 32));
      this.secretSetAt = now;
    }
    const cookie = mac(this.secret, source);
    const [m1, m2] = macOffsets(msg);
    const nonce = new Uint8Array(XAEAD_NONCE_LEN);
    nonce.set(random(XAEAD_NONCE_LEN).subarray(0, XAEAD_NONCE_LEN));
    const repr: CookieReplyRepr = {
      receiver: readU32(msg, 4),
      nonce,
      encryptedCookie: xaeadSeal(this.encryptionKey, nonce, cookie, msg.subarray(m1, m2)),
    };
    wipe(cookie);
    const out = new Uint8Array(COOKIE_REPLY_LEN);
    CookieReplyMessage.emit(repr, out);
    return out;
  }

  /** Forget the secret (the interface is going down). */
  destroy(): void {
    wipe(this.secret);
    this.secretSetAt = -Infinity;
  }
}

/** The initiator's side, one per peer: fills mac1/mac2 and takes in cookie replies. */
export class CookieGenerator {
  private readonly mac1Key: Uint8Array;
  private readonly encryptionKey: Uint8Array;
  private readonly cookie = new Uint8Array(MAC_LEN);
  private cookieSetAt = -Infinity;
  private readonly lastMac1 = new Uint8Array(MAC_LEN);
  private hasLastMac1 = false;

  constructor(remotePublicKey: Uint8Array) {
    this.mac1Key = hash(LABEL_MAC1, remotePublicKey);
    this.encryptionKey = hash(LABEL_COOKIE, remotePublicKey);
  }

  /** Whether a cookie younger than 2 minutes is held (mac2 will be set). */
  hasCookie(now: number): boolean {
    return now - this.cookieSetAt <= COOKIE_REFRESH_TIME_MS;
  }

  /** Write mac1 (and mac2 when a fresh cookie is held) into the last 32 bytes of `msg`, in place. */
  addMacs(msg: Uint8Array, now: number): void {
    const [m1, m2] = macOffsets(msg);
    const mac1 = mac(this.mac1Key, msg.subarray(0, m1));
    msg.set(mac1, m1);
    this.lastMac1.set(mac1);
    this.hasLastMac1 = true;
    if (!this.hasCookie(now)) {
      msg.fill(0, m2);
      return;
    }
    msg.set(mac(this.cookie, msg.subarray(0, m2)), m2);
  }

  /**
   * Take in a cookie reply (already matched to this peer by its receiver index). False when it
   * does not decrypt against the mac1 of the last message we sent (forged, stale, or nothing sent).
   */
  consumeReply(reply: Uint8Array, now: number): boolean {
    if (!this.hasLastMac1) return false;
    const r = CookieReplyMessage.parse(reply);
    if (r === undefined) return false;
    const cookie = xaeadOpen(this.encryptionKey, r.nonce, r.encryptedCookie, this.lastMac1);
    if (cookie === undefined || cookie.length !== MAC_LEN) return false;
    this.cookie.set(cookie);
    wipe(cookie);
    this.cookieSetAt = now;
    return true;
  }

  destroy(): void {
    wipe(this.cookie, this.lastMac1);
    this.cookieSetAt = -Infinity;
    this.hasLastMac1 = false;
  }
}

/**
 * The default under-load decision: more than `threshold` handshake messages within one second
 * turns load on; it stays on for 1 s after the last time the rate was exceeded. A device may
 * use anything else (queue depth, CPU) through its `underLoad` hook.
 */
export class HandshakeLoadMeter {
  private windowStart = -Infinity;
  private count = 0;
  private loadedUntil = -Infinity;

  constructor(readonly threshold = 64) {}

  /** Count one arriving handshake message. */
  note(now: number): void {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.count = 0;
    }
    this.count++;
    if (this.count > this.threshold) this.loadedUntil = now + UNDER_LOAD_AFTER_TIME_MS;
  }

  underLoad(now: number): boolean {
    return now < this.loadedUntil;
  }
}
