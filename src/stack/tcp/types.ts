/**
 * RFC 9293 §3.3.2 (states) and §3.9.1 (user/TCP interface) — what the application sees of a
 * connection: its states, the events it receives, the knobs it sets, the counters it reads.
 */

export type TcpState =
  | 'SYN-SENT'
  | 'SYN-RECEIVED'
  | 'ESTABLISHED'
  | 'FIN-WAIT-1'
  | 'FIN-WAIT-2'
  | 'CLOSING'
  | 'TIME-WAIT'
  | 'CLOSE-WAIT'
  | 'LAST-ACK'
  | 'CLOSED';

/**
 * Why a connection ended, reported once by `onClosed`:
 * - `normal`: both FINs exchanged and ours acknowledged (reported on entering TIME-WAIT, or on
 *   the ACK of our FIN in LAST-ACK; a TIME-WAIT connection lingers silently afterwards);
 * - `reset`: the peer sent an acceptable RST;
 * - `timeout`: retransmissions, zero-window probes or keep-alives went unanswered;
 * - `aborted`: the application called `abort()`;
 * - `refused`: an active open was answered by RST, or a deferred accept was rejected.
 */
export type CloseReason = 'normal' | 'reset' | 'timeout' | 'aborted' | 'refused';

/**
 * Events of one connection. Callbacks run synchronously inside `input()`/`poll()`; they may
 * call `write()`, `consumed()`, `shutdownWrite()` and `abort()`.
 */
export interface TcpListener {
  /** The three-way handshake completed. */
  onEstablished?(): void;
  /**
   * In-order payload. The chunk is the caller's until it calls `consumed()` for all of its
   * bytes (in stream order): until then the stack does not reuse its memory, afterwards it
   * may (recv-slabs.ts), so consume only what nothing reads any more, or copy it first. The
   * bytes count against the receive window until then.
   */
  onData?(chunk: Uint8Array): void;
  /** The peer sent FIN: no more data will arrive (we may keep sending). */
  onPeerFin?(): void;
  /** A `write()` was cut short earlier and at least a quarter of the send buffer is free now. */
  onWritable?(freeBytes: number): void;
  /** The connection ended; reported exactly once. */
  onClosed?(reason: CloseReason): void;
}

export interface KeepAliveOptions {
  /** Idle time before the first probe (ms). Linux default: 2 h. */
  idleMs: number;
  /** Time between unanswered probes (ms). Linux default: 75 s. */
  intervalMs: number;
  /** Unanswered probes before the connection is dropped. Linux default: 9. */
  count: number;
}

/** A byte budget shared by many buffers: the part of each buffer above its floor comes from it. */
export interface MemoryPool {
  /** Bytes a buffer could take now (take() grants at least this much of a request). */
  readonly available: number;
  /** Take up to `n` bytes; returns how many were granted (0..n). */
  take(n: number): number;
  /** Give back `n` bytes taken before. */
  give(n: number): void;
  /** The bytes buffers actually hold (floor parts included) changed by `delta`: the usage figure. */
  held(delta: number): void;
}

export interface TcpConnectionOptions {
  /** Initial send sequence number; the caller draws it from its random source. */
  iss: number;
  listener?: TcpListener;
  /** The MSS we advertise (and the most we send per segment): link MTU - 40. Default 1460. */
  mss?: number;
  /**
   * Largest payload per emitted segment. Defaults to the negotiated send MSS; a link with
   * segmentation offload (GSO/TSO) may allow up to 65535 - 40. Segments larger than the MSS
   * are whole multiples of it (the kernel cuts them into `sendMss` pieces).
   */
  maxSegmentPayload?: number;
  /** Receive buffer: the most we advertise and hold (delivered-unconsumed + out of order). Default 256 KiB. */
  rcvBufSize?: number;
  /** Send buffer: unacknowledged + unsent bytes. Default 256 KiB. */
  sndBufSize?: number;
  /**
   * A byte budget shared by many connections (relay/buffer-budget.ts). With it, the buffers
   * above are ceilings, not promises: each direction holds up to `memoryFloor` bytes on its
   * own and takes anything beyond from the pool as data arrives (giving it back as the data
   * leaves); what the pool cannot give is not taken (a smaller window, a shorter write).
   */
  memory?: MemoryPool;
  /** Bytes each direction may hold without asking `memory` (default 4 KiB). */
  memoryFloor?: number;
  /** RFC 7323 window scaling. Default on. */
  windowScaling?: boolean;
  /** RFC 2018 SACK. Default on. */
  sack?: boolean;
  /** RFC 7323 timestamps. Default on. */
  timestamps?: boolean;
  /** Random offset added to TSval (RFC 7323 §7.1), from the caller's random source. Default 0. */
  tsOffset?: number;
  /** Delayed-ACK timeout (ms); 0 acknowledges every segment at once. Default 40. */
  delayedAckMs?: number;
  /** Keep-alive probing; off unless given. */
  keepAlive?: KeepAliveOptions;
  /** TIME-WAIT duration (2·MSL) in ms. Default 60 000. */
  timeWaitMs?: number;
  initialRtoMs?: number;
  /** Default 200 (as Linux; see rtt.ts). */
  minRtoMs?: number;
  maxRtoMs?: number;
  /** SYN / SYN-ACK retransmissions before giving up. Default 6. */
  synRetries?: number;
  /** Data retransmissions (and unanswered zero-window probes) before giving up. Default 15. */
  maxRetries?: number;
  /** Initial congestion window in segments. Default 10 (RFC 6928). */
  initialWindow?: number;
  /**
   * Whether input payloads must be copied. Default true: the link reuses its receive buffer,
   * so bytes that outlive `input()` (delivered chunks, out-of-order data) are copied once.
   * Set false only when every input payload is a buffer the stack may keep.
   */
  copyInput?: boolean;
  /**
   * How the output callback takes payloads. 'keep' (default): each payload stays valid (tests
   * keep the segments they see). 'scratch': the callback is done with a payload when it
   * returns (TcpStack writes it out at once), so payloads may be views into a reused scratch.
   * 'split': as 'scratch', and a payload spanning two written chunks comes as `payload` plus
   * `payloadTail`, never copied.
   */
  output?: 'keep' | 'scratch' | 'split';
  /** Challenge ACKs (RFC 5961 §7) allowed per second. Default 10. */
  challengeAckLimit?: number;
}

export interface ConnectOptions extends TcpConnectionOptions {
  localPort: number;
  remotePort: number;
}

/** A snapshot of a connection's counters and estimators. */
export interface TcpStats {
  state: TcpState;
  /** Payload bytes delivered in order to the application. */
  bytesIn: number;
  /** Payload bytes sent for the first time. */
  bytesOut: number;
  segmentsIn: number;
  segmentsOut: number;
  /** Segments retransmitted (any cause). */
  retransmits: number;
  /** Loss recoveries entered through duplicate ACKs / SACK. */
  fastRetransmits: number;
  /** Retransmission timeouts. */
  timeouts: number;
  dupAcksIn: number;
  outOfOrderIn: number;
  /** Segments wholly duplicate or outside the window. */
  duplicateIn: number;
  challengeAcks: number;
  pawsDropped: number;
  srtt: number;
  rttvar: number;
  rto: number;
  cwnd: number;
  ssthresh: number;
  /** The peer's window (scaled). */
  sndWnd: number;
  /** The window we advertise now. */
  rcvWnd: number;
  sendMss: number;
  /** Bytes written but not yet acknowledged. */
  sndBuffered: number;
  /** Bytes delivered but not yet consumed. */
  rcvUnconsumed: number;
  /** Bytes held out of order. */
  rcvOutOfOrder: number;
}
