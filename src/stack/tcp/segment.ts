/**
 * RFC 9293 §3.1 (header format) — a TCP segment as the state machine sees it.
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |          Source Port          |       Destination Port        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                        Sequence Number                        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Acknowledgment Number                      |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  Data |       |C|E|U|A|P|R|S|F|                               |
 *    | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
 *    |       |       |R|E|G|K|H|T|N|N|                               |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |           Checksum            |         Urgent Pointer        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                           [Options]                           |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * The machine never sees bytes: the wire layer parses a packet into this shape (its TcpRepr
 * maps 1:1) and emits it back. Checksum, data offset and urgent pointer belong to the wire.
 * `seq`/`ack` are raw 32-bit values; `window` is the raw 16-bit field, *unscaled*.
 */

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;
export const ECE = 0x40;
export const CWR = 0x80;

/** The options this stack understands (RFC 9293 §3.2, RFC 7323, RFC 2018). */
export interface TcpSegmentOptions {
  /** Maximum segment size (only in SYN segments). */
  mss?: number;
  /** Window scale shift count (only in SYN segments; RFC 7323 §2). */
  wscale?: number;
  /** SACK-permitted (only in SYN segments; RFC 2018 §2). */
  sackPermitted?: boolean;
  /** SACK blocks [left edge, right edge) as raw sequence numbers (RFC 2018 §3). */
  sack?: Array<[number, number]>;
  /** [TSval, TSecr] (RFC 7323 §3). */
  timestamp?: [number, number];
}

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  /** Raw 16-bit window field, unscaled. */
  window: number;
  options: TcpSegmentOptions;
  payload: Uint8Array;
  /**
   * The payload's second piece, right after `payload` in sequence space: only from a
   * connection whose output takes split payloads (TcpConnectionOptions.output 'split').
   */
  payloadTail?: Uint8Array;
}

/** Shared zero-length payload for control segments (never written to). */
export const EMPTY_PAYLOAD: Uint8Array = new Uint8Array(0);

/** SEG.LEN of RFC 9293 §3.4: payload octets plus one for SYN and one for FIN. */
export function segmentLength(seg: TcpSegment): number {
  return seg.payload.length + (seg.flags & SYN ? 1 : 0) + (seg.flags & FIN ? 1 : 0);
}

const FLAG_NAMES: ReadonlyArray<[number, string]> = [
  [SYN, 'SYN'],
  [FIN, 'FIN'],
  [RST, 'RST'],
  [PSH, 'PSH'],
  [ACK, 'ACK'],
  [URG, 'URG'],
  [ECE, 'ECE'],
  [CWR, 'CWR'],
];

/** "SYN|ACK" — for logs and test failure messages. */
export function flagsToString(flags: number): string {
  const names: string[] = [];
  for (const [bit, name] of FLAG_NAMES) if (flags & bit) names.push(name);
  return names.length > 0 ? names.join('|') : '0';
}

const NO_OPTIONS: TcpSegmentOptions = Object.freeze({});

/** A shared empty options object for segments without options (treat as read-only). */
export function noOptions(): TcpSegmentOptions {
  return NO_OPTIONS;
}

/**
 * RFC 9293 §3.10.7.1 (CLOSED state): the reset that answers `seg` when it belongs to no
 * connection. "If the ACK bit is off, sequence number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
 * <CTL=RST,ACK>; if the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>." A RST is never answered.
 */
export function resetFor(seg: TcpSegment): TcpSegment | undefined {
  if (seg.flags & RST) return undefined;
  const acked = (seg.flags & ACK) !== 0;
  return {
    srcPort: seg.dstPort,
    dstPort: seg.srcPort,
    seq: acked ? seg.ack : 0,
    ack: acked ? 0 : (seg.seq + segmentLength(seg)) >>> 0,
    flags: acked ? RST : RST | ACK,
    window: 0,
    options: NO_OPTIONS,
    payload: EMPTY_PAYLOAD,
  };
}
