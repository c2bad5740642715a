/**
 * Timers — WireGuard whitepaper §6 (Timers & Stateless UX): §6.1 preliminaries (the
 * constants below), §6.2 transport message limits, §6.3 key rotation, §6.4 handshake
 * initiation retransmission, §6.5 passive keepalive, §6.6 interaction with cookie reply
 * system, and the persistent keepalive of the protocol page; behaviour as wireguard-go's
 * timers.go, which follows the kernel's timers.c.
 *
 * Nothing here owns a real timer. Each timer is a deadline in monotonic ms (or undefined);
 * the peer asks `takeDue(now)` for the expired ones and `pollAt()` for the next deadline, and
 * its owner keeps one host timer for all peers.
 *
 *   retransmitHandshake  REKEY_TIMEOUT + jitter after an initiation is sent, until a response
 *   sendKeepalive        KEEPALIVE_TIMEOUT after data is received and nothing was sent back
 *   newHandshake         KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter after data is sent and
 *                        nothing authenticated came back
 *   zeroKeyMaterial      REJECT_AFTER_TIME × 3 after a session was derived: erase everything
 *   persistentKeepalive  the configured interval after any authenticated packet in either direction
 */
import { REJECT_AFTER_TIME_MS } from './keypair.js';

export const REKEY_AFTER_TIME_MS = 120_000;
export const REKEY_ATTEMPT_TIME_MS = 90_000;
export const REKEY_TIMEOUT_MS = 5_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** Jitter added to the rekey timeouts, uniform in [0, 334) ms. */
export const REKEY_TIMEOUT_JITTER_MAX_MS = 334;
/** REKEY_ATTEMPT_TIME / REKEY_TIMEOUT: retransmissions before a handshake attempt is abandoned. */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS;
export { REJECT_AFTER_TIME_MS };

export const TIMER_NAMES = ['retransmitHandshake', 'sendKeepalive', 'newHandshake', 'zeroKeyMaterial', 'persistentKeepalive'] as const;
export type TimerName = (typeof TIMER_NAMES)[number];

/** The per-peer timer set and the events that arm and disarm it (wireguard-go's timers* hooks). */
export class PeerTimers {
  private readonly at: Record<TimerName, number | undefined> = {
    retransmitHandshake: undefined,
    sendKeepalive: undefined,
    newHandshake: undefined,
    zeroKeyMaterial: undefined,
    persistentKeepalive: undefined,
  };
  handshakeAttempts = 0;
  needAnotherKeepalive = false;
  sentLastMinuteHandshake = false;

  /**
   * @param jitter a uniform integer in [0, REKEY_TIMEOUT_JITTER_MAX_MS)
   * @param persistentKeepaliveMs 0 for off
   */
  constructor(
    private readonly jitter: () => number,
    public persistentKeepaliveMs = 0,
  ) {}

  deadline(name: TimerName): number | undefined {
    return this.at[name];
  }

  isPending(name: TimerName): boolean {
    return this.at[name] !== undefined;
  }

  set(name: TimerName, at: number): void {
    this.at[name] = at;
  }

  clear(name: TimerName): void {
    this.at[name] = undefined;
  }

  /** After an authenticated data packet (not a keepalive) was sent. */
  dataSent(now: number): void {
    if (this.at.newHandshake === undefined) this.at.newHandshake = now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + this.jitter();
  }

  /** After an authenticated data packet (not a keepalive) was received. */
  dataReceived(now: number): void {
    if (this.at.sendKeepalive === undefined) this.at.sendKeepalive = now + KEEPALIVE_TIMEOUT_MS;
    else this.needAnotherKeepalive = true;
  }

  /** After any authenticated packet (keepalive, data, handshake) was sent. */
  anyAuthenticatedPacketSent(): void {
    this.at.sendKeepalive = undefined;
  }

  /** After any authenticated packet was received. */
  anyAuthenticatedPacketReceived(): void {
    this.at.newHandshake = undefined;
  }

  /** Before an authenticated packet is sent or after one is received. */
  anyAuthenticatedPacketTraversal(now: number): void {
    if (this.persistentKeepaliveMs > 0) this.at.persistentKeepalive = now + this.persistentKeepaliveMs;
  }

  /** After an initiation was sent. */
  handshakeInitiated(now: number): void {
    this.at.retransmitHandshake = now + REKEY_TIMEOUT_MS + this.jitter();
  }

  /** After a response was consumed, or the first data arrived with a new keypair (confirmation). */
  handshakeComplete(): void {
    this.at.retransmitHandshake = undefined;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  /** After a session was derived (response sent or consumed). */
  sessionDerived(now: number): void {
    this.at.zeroKeyMaterial = now + REJECT_AFTER_TIME_MS * 3;
  }

  /** The earliest deadline, or undefined with no timer armed. */
  pollAt(): number | undefined {
    let t: number | undefined;
    for (const n of TIMER_NAMES) {
      const v = this.at[n];
      if (v !== undefined && (t === undefined || v < t)) t = v;
    }
    return t;
  }

  /** The earliest timer due at `now`, disarmed; undefined when none is due. */
  takeDue(now: number): TimerName | undefined {
    let best: TimerName | undefined;
    let bestAt = Infinity;
    for (const n of TIMER_NAMES) {
      const v = this.at[n];
      if (v !== undefined && v <= now && v < bestAt) {
        best = n;
        bestAt = v;
      }
    }
    if (best !== undefined) this.at[best] = undefined;
    return best;
  }

  stopAll(): void {
    for (const n of TIMER_NAMES) this.at[n] = undefined;
  }
}
