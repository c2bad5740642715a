/**
 * The UDP flow table: one entry per app 5-tuple (app address and port → destination address
 * and port; the protocol is UDP), with idle expiry and a cap.
 *
 * UDP has no handshake and no close, so a flow exists from its first datagram until it has
 * been idle for its timeout: 60 s by default (RFC 4787 REQ-5 asks at least 2 minutes of NATs
 * for arbitrary ports, but a tun2socks flow holds an upstream association — two sockets — and
 * Linux's conntrack uses 30 s for unreplied UDP), 10 s for DNS (port 53: one query, one answer).
 * Activity in either direction (a datagram from the app, a reply to it) keeps it alive.
 *
 * Storage is an lru-cache keyed by the 5-tuple, with the injected clock as its time source:
 *   - no timers (`ttlAutopurge` off, `ttlResolution` 0): expiry is checked on access — a
 *     lookup of an idle-expired flow finds nothing and closes it — and in `sweep()`, which the
 *     owner calls periodically so that flows nobody touches release their sockets;
 *   - `max` caps the table; a new flow beyond it evicts the least recently active one, so a
 *     flood of short flows (20,000 DNS queries from random ports) keeps memory bounded.
 * Every way a flow ends (idle, evicted, deleted, cleared) runs its listener's `onClosed` once.
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../../clock.js';

export const UDP_FLOW_DEFAULTS = {
  maxFlows: 4096,
  idleTimeoutMs: 60_000,
  dnsIdleTimeoutMs: 10_000,
} as const;

/** Why a flow ended. */
export type UdpCloseReason =
  /** No datagram either way for its idle timeout. */
  | 'idle'
  /** The table was full and this flow was the least recently active. */
  | 'evicted'
  /** The relay ended it (its upstream died, it refused the flow). */
  | 'closed'
  /** The stack was shut down. */
  | 'shutdown';

/** What the relay attaches to a flow: the other end of the app's datagrams. */
export interface UdpFlowListener {
  /**
   * A datagram from the app on this flow. `payload` is a view into a reused receive buffer,
   * valid only during the call: copy what you keep.
   */
  onDatagram(payload: Uint8Array, flow: UdpFlow): void;
  /** The flow ended; release what it holds. Called once; no datagram follows. */
  onClosed(reason: UdpCloseReason, flow: UdpFlow): void;
}

/** Largest quote an ICMP error carries: a 60-byte header plus 8 data bytes (RFC 792). */
export const UDP_QUOTE_MAX = 60 + 8;

/** One app 5-tuple. Addresses are uint32, as on the wire. */
export class UdpFlow {
  readonly key: string;
  listener: UdpFlowListener | undefined;
  /** The last app datagram's IP header and first 8 bytes, for ICMP errors about this flow. */
  readonly quote = new Uint8Array(UDP_QUOTE_MAX);
  quoteLen = 0;
  lastActiveAt: number;
  packetsUp = 0;
  bytesUp = 0;
  packetsDown = 0;
  bytesDown = 0;
  closeReason: UdpCloseReason | undefined;

  constructor(
    readonly id: number,
    readonly srcIp: number,
    readonly srcPort: number,
    readonly dstIp: number,
    readonly dstPort: number,
    readonly idleTimeoutMs: number,
    readonly createdAt: number,
  ) {
    this.key = udpFlowKey(srcIp, srcPort, dstIp, dstPort);
    this.lastActiveAt = createdAt;
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  /** A copy of the current quote (for an error reported later, about this datagram). */
  copyQuote(): Uint8Array {
    return this.quote.slice(0, this.quoteLen);
  }
}

/** The table key of a 5-tuple (UDP implied). */
export function udpFlowKey(srcIp: number, srcPort: number, dstIp: number, dstPort: number): string {
  return `${srcIp}:${srcPort}>${dstIp}:${dstPort}`;
}

export interface UdpFlowTableOptions {
  clock: Clock;
  /** Most flows at once; the least recently active is evicted beyond it. Default 4096. */
  maxFlows?: number;
  /** Idle timeout of ordinary flows. Default 60 s. */
  idleTimeoutMs?: number;
  /** Idle timeout of flows to port 53. Default 10 s. */
  dnsIdleTimeoutMs?: number;
}

export interface UdpFlowTableStats {
  /** Flows open now. */
  open: number;
  created: number;
  expired: number;
  evicted: number;
  closed: number;
}

export class UdpFlowTable {
  readonly maxFlows: number;
  readonly idleTimeoutMs: number;
  readonly dnsIdleTimeoutMs: number;
  private readonly clock: Clock;
  private readonly cache: LRUCache<string, UdpFlow>;
  private nextId = 1;
  /** The reason delete() passes to the dispose hook (lru-cache only says 'delete'). */
  private deleting: UdpCloseReason = 'closed';
  private readonly s: Omit<UdpFlowTableStats, 'open'> = { created: 0, expired: 0, evicted: 0, closed: 0 };
  // The key of the 5-tuple asked for last: consecutive datagrams mostly belong to one flow (a
  // sequential client, a burst), and the key is four numbers turned into text and then hashed
  // by the Map, per datagram. Reusing the string reuses its hash too.
  private memoSrcIp = -1;
  private memoSrcPort = -1;
  private memoDstIp = -1;
  private memoDstPort = -1;
  private memoKey = '';

  constructor(opts: UdpFlowTableOptions) {
    this.clock = opts.clock;
    this.maxFlows = opts.maxFlows ?? UDP_FLOW_DEFAULTS.maxFlows;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? UDP_FLOW_DEFAULTS.idleTimeoutMs;
    this.dnsIdleTimeoutMs = opts.dnsIdleTimeoutMs ?? UDP_FLOW_DEFAULTS.dnsIdleTimeoutMs;
    for (const [k, v] of Object.entries({ maxFlows: this.maxFlows, idleTimeoutMs: this.idleTimeoutMs, dnsIdleTimeoutMs: this.dnsIdleTimeoutMs })) {
      if (!(v > 0)) throw new RangeError(`${k} must be > 0, got ${v}`);
    }
    const clock = this.clock;
    this.cache = new LRUCache<string, UdpFlow>({
      max: this.maxFlows,
      ttl: this.idleTimeoutMs,
      ttlAutopurge: false,
      // No cached "now" (it would arm a timer per lookup), and a clock that never reads 0:
      // lru-cache takes a start time of 0 to mean "no TTL".
      ttlResolution: 0,
      perf: { now: () => clock.now() + 1 },
      updateAgeOnGet: true,
      dispose: (flow, _key, reason) => this.disposed(flow, reason),
    });
  }

  get size(): number {
    return this.cache.size;
  }

  get stats(): UdpFlowTableStats {
    return { open: this.cache.size, ...this.s };
  }

  /**
   * The live flow of this 5-tuple, marked active (its idle timer restarts, it becomes the most
   * recently used). An idle-expired flow is closed here and not returned.
   */
  get(srcIp: number, srcPort: number, dstIp: number, dstPort: number): UdpFlow | undefined {
    const f = this.cache.get(this.keyOf(srcIp, srcPort, dstIp, dstPort));
    if (f !== undefined) f.lastActiveAt = this.clock.now();
    return f;
  }

  private keyOf(srcIp: number, srcPort: number, dstIp: number, dstPort: number): string {
    if (srcIp !== this.memoSrcIp || srcPort !== this.memoSrcPort || dstIp !== this.memoDstIp || dstPort !== this.memoDstPort) {
      this.memoKey = udpFlowKey(srcIp, srcPort, dstIp, dstPort);
      this.memoSrcIp = srcIp;
      this.memoSrcPort = srcPort;
      this.memoDstIp = dstIp;
      this.memoDstPort = dstPort;
    }
    return this.memoKey;
  }

  /** Without marking it active (for status and tests). */
  peek(srcIp: number, srcPort: number, dstIp: number, dstPort: number): UdpFlow | undefined {
    return this.cache.peek(this.keyOf(srcIp, srcPort, dstIp, dstPort));
  }

  /**
   * A new flow for a 5-tuple that has none (the caller checked with get()). When the table is
   * full, the least recently active flow is evicted (its listener's onClosed runs first).
   * The listener is attached by the caller.
   */
  create(srcIp: number, srcPort: number, dstIp: number, dstPort: number): UdpFlow {
    const now = this.clock.now();
    const idle = dstPort === 53 ? this.dnsIdleTimeoutMs : this.idleTimeoutMs;
    const flow = new UdpFlow(this.nextId++, srcIp, srcPort, dstIp, dstPort, idle, now);
    this.cache.set(flow.key, flow, { ttl: idle });
    this.s.created++;
    return flow;
  }

  /** Mark a flow active (a reply went to the app). False when it has expired meanwhile. */
  touch(flow: UdpFlow): boolean {
    if (flow.closed) return false;
    const f = this.cache.get(flow.key);
    if (f !== flow) return false;
    flow.lastActiveAt = this.clock.now();
    return true;
  }

  /** End a flow now (its listener's onClosed runs). */
  delete(flow: UdpFlow, reason: UdpCloseReason = 'closed'): void {
    if (flow.closed || this.cache.peek(flow.key) !== flow) return;
    this.deleting = reason;
    try {
      this.cache.delete(flow.key);
    } finally {
      this.deleting = 'closed';
    }
  }

  /** Close every idle-expired flow; returns how many. The owner calls it periodically (e.g. 1 s). */
  sweep(): number {
    const before = this.s.expired;
    this.cache.purgeStale();
    return this.s.expired - before;
  }

  /** End every flow (shutdown). */
  clear(reason: UdpCloseReason = 'shutdown'): void {
    this.deleting = reason;
    try {
      this.cache.clear();
    } finally {
      this.deleting = 'closed';
    }
  }

  /** The live flows, most recently active first (expired ones not yet swept are skipped). */
  *flows(): IterableIterator<UdpFlow> {
    yield* this.cache.values();
  }

  private disposed(flow: UdpFlow, reason: LRUCache.DisposeReason): void {
    if (flow.closed) return;
    let why: UdpCloseReason;
    switch (reason) {
      case 'expire':
        why = 'idle';
        this.s.expired++;
        break;
      case 'evict':
        why = 'evicted';
        this.s.evicted++;
        break;
      default:
        why = this.deleting;
        this.s.closed++;
    }
    flow.closeReason = why;
    const l = flow.listener;
    flow.listener = undefined;
    l?.onClosed(why, flow);
  }
}
