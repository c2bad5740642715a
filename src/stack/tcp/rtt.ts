/**
 * RFC 6298 (Computing TCP's Retransmission Timer), with RFC 7323 §4 (RTTM) samples.
 *
 *   first sample R:      SRTT = R, RTTVAR = R/2
 *   later samples R':    RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|,  SRTT = 7/8 SRTT + 1/8 R'
 *   RTO = SRTT + max(G, 4 * RTTVAR), clamped to [minRto, maxRto]
 *   on expiry:           RTO = min(2 * RTO, maxRto)              (§5.5, exponential back-off)
 *
 * Choices:
 * - Minimum RTO 200 ms, not the RFC's 1 s (§2.4 "SHOULD be rounded up to 1 second"). Linux uses
 *   TCP_RTO_MIN = 200 ms (it puts the floor on the variance term: SRTT + max(4·RTTVAR, 200 ms),
 *   which is the same for the sub-millisecond RTTs of a TUN device). A 1 s floor would stall
 *   every lost segment on a local path for a full second.
 * - Maximum 60 s (the RFC's "at least 60 seconds"; Linux uses 120 s).
 * - Initial RTO 1 s (§2.1).
 * - G, the clock granularity, is 1 ms: time is passed in as milliseconds.
 * - Karn's rule (§3): without timestamps, one segment at a time is timed and the measurement is
 *   discarded when anything is retransmitted; the backed-off RTO is kept until a valid sample
 *   arrives (§5.7 note). With timestamps every ACK of new data gives an unambiguous sample,
 *   because the echoed TSval names the transmission that triggered it.
 */

export interface RttConfig {
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
}

export const DEFAULT_RTT_CONFIG: RttConfig = {
  initialRtoMs: 1000,
  minRtoMs: 200,
  maxRtoMs: 60_000,
};

const GRANULARITY_MS = 1;

export class RttEstimator {
  /** Smoothed RTT in ms (0 until the first sample). */
  srtt = 0;
  /** RTT variation in ms. */
  rttvar = 0;
  /** Number of samples taken. */
  samples = 0;
  /** How many times the current RTO has been doubled. */
  backoffs = 0;

  private baseRto: number;
  private readonly cfg: RttConfig;
  // Karn timing: the one segment being timed (end position, unwrapped) and when it was sent.
  private timedEnd = -1;
  private timedAt = 0;

  constructor(cfg: RttConfig = DEFAULT_RTT_CONFIG) {
    this.cfg = cfg;
    this.baseRto = cfg.initialRtoMs;
  }

  /** The current retransmission timeout in ms, back-off included. */
  get rto(): number {
    let rto = this.baseRto;
    for (let i = 0; i < this.backoffs && rto < this.cfg.maxRtoMs; i++) rto *= 2;
    return rto < this.cfg.maxRtoMs ? rto : this.cfg.maxRtoMs;
  }

  /** RFC 6298 §2.2/§2.3: feed one RTT measurement (ms). Clears the back-off. */
  sample(r: number): void {
    if (!(r >= 0)) return;
    if (this.samples === 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      const delta = this.srtt - r;
      this.rttvar = 0.75 * this.rttvar + 0.25 * (delta < 0 ? -delta : delta);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.samples++;
    const v = 4 * this.rttvar;
    let rto = this.srtt + (v > GRANULARITY_MS ? v : GRANULARITY_MS);
    if (rto < this.cfg.minRtoMs) rto = this.cfg.minRtoMs;
    if (rto > this.cfg.maxRtoMs) rto = this.cfg.maxRtoMs;
    this.baseRto = rto;
    this.backoffs = 0;
  }

  /** RFC 6298 §5.5: the timer expired — double the RTO (up to the maximum). */
  backoff(): void {
    if (this.rto < this.cfg.maxRtoMs) this.backoffs++;
  }

  /** Karn: start timing the segment ending at `end` unless one is already being timed. */
  startTiming(end: number, now: number): void {
    if (this.timedEnd < 0) {
      this.timedEnd = end;
      this.timedAt = now;
    }
  }

  /** Karn: something was retransmitted, so the pending measurement is ambiguous. */
  invalidateTiming(): void {
    this.timedEnd = -1;
  }

  /** Karn: the cumulative ACK reached `ack`; take the sample if it covers the timed segment. */
  ackTiming(ack: number, now: number): boolean {
    if (this.timedEnd >= 0 && ack >= this.timedEnd) {
      this.timedEnd = -1;
      this.sample(now - this.timedAt);
      return true;
    }
    return false;
  }
}
