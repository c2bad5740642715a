/**
 * RFC 6675 §3/§4 (the SACK scoreboard) and RFC 2018 §8 (data sender behaviour).
 *
 * What the peer reported holding above SND.UNA, as sorted disjoint ranges of unwrapped send
 * positions. The sender skips these when retransmitting and counts them out of the pipe. SACK
 * information is advisory (RFC 2018 §8: the receiver may renege), so nothing is released from
 * the send buffer until it is cumulatively acknowledged, and the whole board is cleared after a
 * retransmission timeout. The board holds at most MAX_RANGES ranges: a peer that reports more
 * fragments than that only loses the benefit of the extra ones.
 */

const MAX_RANGES = 256;

export class SackScoreboard {
  private starts: number[] = [];
  private ends: number[] = [];
  /** Bytes currently marked as SACKed. */
  sackedBytes = 0;
  /** End of the highest SACKed range, or -1 when empty. */
  highest = -1;
  /** End of the hole found by the last `nextHole()`. */
  holeEnd = 0;

  get isEmpty(): boolean {
    return this.starts.length === 0;
  }

  get rangeCount(): number {
    return this.starts.length;
  }

  /** Mark [start, end) as SACKed; returns the number of newly marked bytes. */
  add(start: number, end: number): number {
    if (end <= start) return 0;
    const s = this.starts;
    const e = this.ends;
    const n = s.length;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (e[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    const i = lo;
    let j = i;
    while (j < n && s[j] <= end) j++;
    if (i === j) {
      if (n >= MAX_RANGES) return 0;
      s.splice(i, 0, start);
      e.splice(i, 0, end);
      this.sackedBytes += end - start;
      if (end > this.highest) this.highest = end;
      return end - start;
    }
    const newStart = s[i] < start ? s[i] : start;
    const newEnd = e[j - 1] > end ? e[j - 1] : end;
    let old = 0;
    for (let k = i; k < j; k++) old += e[k] - s[k];
    s.splice(i, j - i, newStart);
    e.splice(i, j - i, newEnd);
    const added = newEnd - newStart - old;
    this.sackedBytes += added;
    if (newEnd > this.highest) this.highest = newEnd;
    return added;
  }

  /** SND.UNA moved to `una`: forget what lies below it. */
  ackTo(una: number): void {
    const s = this.starts;
    const e = this.ends;
    let k = 0;
    while (k < s.length && e[k] <= una) {
      this.sackedBytes -= e[k] - s[k];
      k++;
    }
    if (k > 0) {
      s.splice(0, k);
      e.splice(0, k);
    }
    if (s.length > 0 && s[0] < una) {
      this.sackedBytes -= una - s[0];
      s[0] = una;
    }
    if (s.length === 0) this.highest = -1;
  }

  /**
   * The first byte at or after `from` and below `limit` that is not SACKed, or -1. The hole
   * extends to `holeEnd` (capped at `limit`).
   */
  nextHole(from: number, limit: number): number {
    const s = this.starts;
    const e = this.ends;
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (e[mid] <= from) lo = mid + 1;
      else hi = mid;
    }
    let k = lo;
    if (k < s.length && s[k] <= from) {
      from = e[k];
      k++;
    }
    if (from >= limit) return -1;
    this.holeEnd = k < s.length && s[k] < limit ? s[k] : limit;
    return from;
  }

  /** Bytes in [from, to) that are not SACKed. */
  holeBytes(from: number, to: number): number {
    if (to <= from) return 0;
    let n = to - from;
    const s = this.starts;
    const e = this.ends;
    for (let k = 0; k < s.length && s[k] < to; k++) {
      const a = s[k] > from ? s[k] : from;
      const b = e[k] < to ? e[k] : to;
      if (b > a) n -= b - a;
    }
    return n;
  }

  clear(): void {
    this.starts.length = 0;
    this.ends.length = 0;
    this.sackedBytes = 0;
    this.highest = -1;
  }
}
