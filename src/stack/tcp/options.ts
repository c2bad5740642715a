/**
 * RFC 9293 §3.7.1 (MSS), RFC 7323 §2-3 (window scale, timestamps), RFC 2018 §2-3 (SACK) —
 * what the SYN exchange settles, and the option bytes that segments carry.
 *
 *   MSS        ours is configured; the peer's (536 if absent) caps what we send, less the
 *              12 bytes of timestamp option when timestamps are on; never below 48 bytes
 *              (Linux's tcp_min_snd_mss: a tiny MSS would multiply our per-packet work)
 *   wscale     only when both SYNs carry it; ours is the smallest shift that lets the receive
 *              buffer be advertised, at most 14; the peer's is capped at 14
 *   SACK       only when both SYNs carry SACK-permitted; blocks take 8 bytes each plus 2 (and
 *              2 NOPs), at most 4 blocks, 3 beside timestamps (40 option bytes in all)
 *   timestamps only when both SYNs carry them
 *
 * A SYN-ACK answers only what the peer's SYN offered (RFC 7323 §1.3, RFC 2018 §2).
 */

import type { SharedTcpConfig } from './config.js';
import type { TcpSegment, TcpSegmentOptions } from './segment.js';

/** Timestamp option (10 bytes) with its two NOPs. */
export const TS_OPTION_LEN = 12;
/** The smallest send MSS we agree to. */
export const MIN_SEND_MSS = 48;
/** RFC 9293 §3.7.1: the MSS assumed when the peer sends none (IPv4). */
export const DEFAULT_PEER_MSS = 536;

/** RFC 7323 §2.3: the smallest shift that lets `bufSize` be advertised, at most 14. */
export function chooseWindowScale(bufSize: number): number {
  let s = 0;
  while (s < 14 && bufSize > 65535 * 2 ** s) s++;
  return s;
}

export interface Negotiated {
  /** Both sides scale windows. */
  wscaleOk: boolean;
  /** The peer's shift (0 without scaling). */
  sndShift: number;
  sackOk: boolean;
  tsOk: boolean;
  /** The peer's TSval in its SYN (TS.Recent), when tsOk. */
  tsRecent: number;
  /** Payload bytes per full-sized segment we send. */
  sendMss: number;
  /** Payload bytes per full-sized segment the peer sends (at most). */
  rcvMss: number;
}

/** What the peer's SYN (or SYN-ACK) and our configuration agree on. */
export function negotiate(cfg: SharedTcpConfig, syn: TcpSegment): Negotiated {
  const o = syn.options;
  const wscaleOk = cfg.windowScaling && o.wscale !== undefined;
  const tsOk = cfg.timestamps && o.timestamp !== undefined;
  const tsLen = tsOk ? TS_OPTION_LEN : 0;
  const peerMss = o.mss !== undefined && o.mss > 0 ? o.mss : DEFAULT_PEER_MSS;
  let sendMss = (peerMss < cfg.mss ? peerMss : cfg.mss) - tsLen;
  if (sendMss < MIN_SEND_MSS) sendMss = MIN_SEND_MSS;
  return {
    wscaleOk,
    sndShift: wscaleOk && o.wscale !== undefined ? (o.wscale > 14 ? 14 : o.wscale) : 0,
    sackOk: cfg.sack && o.sackPermitted === true,
    tsOk,
    tsRecent: tsOk && o.timestamp !== undefined ? o.timestamp[0] : 0,
    sendMss,
    rcvMss: cfg.mss - tsLen,
  };
}

/**
 * The options of our SYN (`agreed` undefined: offer everything configured) or SYN-ACK (answer
 * what was agreed). `tsVal`: our timestamp now.
 */
export function synOptions(cfg: SharedTcpConfig, ourShift: number, agreed: Negotiated | undefined, tsVal: number, tsEcr: number): TcpSegmentOptions {
  const o: TcpSegmentOptions = { mss: cfg.mss };
  if (agreed !== undefined) {
    if (agreed.wscaleOk) o.wscale = ourShift;
    if (agreed.sackOk) o.sackPermitted = true;
    if (agreed.tsOk) o.timestamp = [tsVal, tsEcr];
  } else {
    if (cfg.windowScaling) o.wscale = ourShift;
    if (cfg.sack) o.sackPermitted = true;
    if (cfg.timestamps) o.timestamp = [tsVal, 0];
  }
  return o;
}

/** RFC 2018 §3: at most 4 blocks, 3 when the timestamp option shares the 40 bytes. */
export function maxSackBlocks(tsOk: boolean): number {
  return tsOk ? 3 : 4;
}

/** Bytes of a SACK option with `n` blocks, padded with two NOPs. */
export function sackOptionLen(n: number): number {
  return n > 0 ? 4 + 8 * n : 0;
}
