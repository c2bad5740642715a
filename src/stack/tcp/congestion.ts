/**
 * RFC 5681 (TCP Congestion Control) with RFC 6582 (NewReno) and RFC 6675 (SACK-based loss
 * recovery); initial window per RFC 6928 (10 segments).
 *
 *   slow start (cwnd < ssthresh):   cwnd += bytes acked              (byte counting, RFC 3465)
 *   congestion avoidance:           cwnd += SMSS once per cwnd acked (≈ SMSS per RTT)
 *   3 duplicate ACKs (or SACK shows ≥ 3·SMSS above SND.UNA):
 *                                   ssthresh = max(FlightSize/2, 2·SMSS), recover = highest sent
 *     NewReno (no SACK):            cwnd = ssthresh + 3·SMSS, +SMSS per further dup ACK,
 *                                   partial ACK: retransmit next, deflate by the amount acked
 *     SACK:                         cwnd = ssthresh, the sender keeps pipe < cwnd, filling
 *                                   holes first (the pipe is computed by the sender)
 *   ACK ≥ recover:                  cwnd = ssthresh, recovery ends
 *   RTO:                            ssthresh = max(FlightSize/2, 2·SMSS) (only on the first
 *                                   expiry of a series, RFC 5681 §3.1 eq. 4 note), cwnd = 1·SMSS
 *   idle > RTO:                     cwnd = min(cwnd, IW)                 (RFC 5681 §4.1)
 *
 * Choices: slow start counts all acknowledged bytes (as Linux does) rather than RFC 3465's
 * L = 2·SMSS cap, so one stretch ACK from a GRO receiver opens the window as much as the
 * ACKs it replaces. The window only grows while the sender is actually using it (roughly
 * RFC 7661): an application-limited connection does not inflate cwnd without bound.
 */

export class Congestion {
  cwnd: number;
  ssthresh = Number.MAX_SAFE_INTEGER;
  inRecovery = false;
  /** RFC 6582 "recover": the highest position sent when recovery (or the last RTO) began. */
  recover = 0;
  private smss: number;
  private readonly iwSegments: number;
  private caAcked = 0;

  constructor(smss: number, iwSegments = 10) {
    this.smss = smss;
    this.iwSegments = iwSegments;
    this.cwnd = iwSegments * smss;
  }

  get initialWindow(): number {
    return this.iwSegments * this.smss;
  }

  /** The send MSS became known (SYN exchange); resets the initial window to match. */
  setMss(smss: number): void {
    this.smss = smss;
    this.cwnd = this.iwSegments * smss;
  }

  /** New data acknowledged outside recovery. `flightBefore`: bytes outstanding before it. */
  onAck(acked: number, flightBefore: number): void {
    // Grow only when the window was (nearly) in use.
    if (flightBefore + this.smss < this.cwnd && flightBefore * 2 < this.cwnd) return;
    if (this.cwnd < this.ssthresh) {
      const room = this.ssthresh - this.cwnd;
      const grow = acked < room ? acked : room;
      this.cwnd += grow;
      acked -= grow;
      if (acked <= 0) return;
    }
    this.caAcked += acked;
    if (this.caAcked >= this.cwnd) {
      this.caAcked -= this.cwnd;
      this.cwnd += this.smss;
    }
  }

  /** Fast retransmit: enter loss recovery (RFC 5681 §3.2 steps 2-3, RFC 6675 §5). */
  enterRecovery(flight: number, highestSent: number, sack: boolean): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.smss);
    this.cwnd = sack ? this.ssthresh : this.ssthresh + 3 * this.smss;
    this.inRecovery = true;
    this.recover = highestSent;
    this.caAcked = 0;
  }

  /** A further duplicate ACK during NewReno recovery: inflate (RFC 5681 §3.2 step 4). */
  onDupAckInRecovery(sack: boolean): void {
    if (!sack) this.cwnd += this.smss;
  }

  /** RFC 6582 §3.2 step 5: partial ACK during NewReno recovery — deflate. */
  onPartialAck(acked: number, sack: boolean): void {
    if (sack) return;
    const c = this.cwnd - acked + this.smss;
    this.cwnd = c > this.smss ? c : this.smss;
  }

  /** The ACK covers `recover`: recovery is over (RFC 6582 §3.2 step 5, full ACK). */
  exitRecovery(): void {
    this.inRecovery = false;
    this.cwnd = this.ssthresh;
    this.caAcked = 0;
  }

  /** Retransmission timeout (RFC 5681 §3.1, eq. 4 and the loss window). */
  onRto(flight: number, highestSent: number, firstExpiry: boolean): void {
    if (firstExpiry) this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.smss);
    this.cwnd = this.smss;
    this.inRecovery = false;
    this.recover = highestSent;
    this.caAcked = 0;
  }

  /** RFC 5681 §4.1: restart after an idle period longer than the RTO. */
  restartAfterIdle(): void {
    const iw = this.initialWindow;
    if (this.cwnd > iw) this.cwnd = iw;
  }
}
