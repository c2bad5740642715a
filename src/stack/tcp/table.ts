/**
 * RFC 9293 §3.10.7.1 (segments for no connection), §3.10.7.2 (LISTEN: a SYN creates a
 * connection) and §3.5 (the 4-tuple names a connection) — the demultiplexer for many
 * connections, still pure: time in, segments out, one timer for the whole table.
 *
 * Keys: a Map from the remote (ip, port) to the entry, or, when more than one connection shares
 * that remote end, to a Map from the local (ip, port) to the entry; each key is ip·65536 + port
 * (48 bits, an exact JS number), so a lookup allocates nothing. Apps' connections differ in
 * their source port, so nearly every remote end has one connection: no inner Map per
 * connection (~0.2 KB each), and nothing else per connection but its entry (no closures).
 *
 * A SYN for no connection goes to the owner's `onSyn(request)` hook (like gVisor's
 * forwarder): `request.accept(opts)` creates the connection — its SYN-ACK waits for
 * `completeAccept()` — and `request.reject()` answers RST. A hook that does neither also
 * answers RST. At `maxConnections` a new SYN is answered by RST and counted: never dropped
 * silently. Any other segment for no connection gets the RFC 9293 reset (none for a RST).
 * A SYN for a connection in TIME-WAIT replaces it when `reusableBy()` says so (RFC 6191-lite).
 *
 * Timers: a binary heap of (deadline, entry) with lazy invalidation. When a connection's
 * deadline changes, a new node is pushed and the entry remembers its deadline; older nodes of
 * the entry no longer match it and are discarded when they surface (or when the heap, grown
 * past twice the number of connections, is rebuilt). pollAt() is therefore exact. Segments
 * and application calls (through `TcpConnection.wake`) put a connection on a dirty list that
 * the next `poll()` serves first. Closed connections are removed once their last segment is out.
 */

import { TcpConnection, type TcpWaker } from './connection.js';
import { ACK, RST, SYN, resetFor, type TcpSegment } from './segment.js';
import type { ConnectOptions, TcpConnectionOptions } from './types.js';

/** One segment out, with its connection's send MSS (the segment size of a GSO super-segment; 0 for a connectionless RST). */
export type TableOutput = (srcIp: number, dstIp: number, seg: TcpSegment, sendMss: number) => void;

/** A SYN for no connection, offered to the owner. IPs are uint32, host order. */
export interface TcpSynRequest {
  readonly srcIp: number;
  readonly srcPort: number;
  readonly dstIp: number;
  readonly dstPort: number;
  readonly syn: TcpSegment;
  /** Create the connection (SYN-RECEIVED, accept pending) and register it in the table. */
  accept(opts: TcpConnectionOptions): TcpConnection;
  /** Refuse: the table answers RST|ACK. */
  reject(): void;
}

export interface TcpTableOptions {
  /** Called unbound, as a plain function: pass an arrow or a bound method. */
  onSyn: (request: TcpSynRequest) => void;
  /** Default 16384. */
  maxConnections?: number;
  /** Resets for unknown segments queued between polls; beyond it they are counted as dropped. Default 4096. */
  maxPendingResets?: number;
}

export interface TcpTableCounters {
  /** Connections accepted through onSyn. */
  accepted: number;
  /** Active opens through connect(). */
  connected: number;
  /** SYNs refused by the owner (reject(), or no decision). */
  rejected: number;
  /** SYNs refused because the table was full. */
  refusedLimit: number;
  /** Segments for no connection. */
  unknownSegments: number;
  /** Resets the table itself sent (refusals and unknown segments). */
  resetsSent: number;
  /** Resets not sent because too many were queued. */
  resetsDropped: number;
  /** TIME-WAIT connections replaced by a new SYN. */
  timeWaitReused: number;
  /** Connections removed after closing. */
  removed: number;
}

/** A connection in the table; it is also the connection's waker. */
class Entry implements TcpWaker {
  /** Deadline of this entry's live heap node, or Infinity. */
  heapAt = Infinity;
  dirty = false;
  removed = false;

  constructor(
    private readonly table: TcpTable,
    readonly conn: TcpConnection,
    readonly localIp: number,
    readonly remoteIp: number,
  ) {}

  get remoteKey(): number {
    return this.remoteIp * 65536 + this.conn.remotePort;
  }

  get localKey(): number {
    return this.localIp * 65536 + this.conn.localPort;
  }

  wake(): void {
    this.table.markDirty(this);
  }
}

/** What the table holds per remote end: its one entry, or a Map by local key when it has several. */
type Slot = Entry | Map<number, Entry>;

interface PendingReset {
  srcIp: number;
  dstIp: number;
  seg: TcpSegment;
}

export class TcpTable {
  readonly counters: TcpTableCounters = {
    accepted: 0,
    connected: 0,
    rejected: 0,
    refusedLimit: 0,
    unknownSegments: 0,
    resetsSent: 0,
    resetsDropped: 0,
    timeWaitReused: 0,
    removed: 0,
  };

  private readonly map = new Map<number, Slot>();
  private count = 0;
  private readonly heapAt: number[] = [];
  private readonly heapE: Entry[] = [];
  private dirtyList: Entry[] = [];
  private spare: Entry[] = [];
  private resets: PendingReset[] = [];
  private lastNow = 0;
  private out: TableOutput | undefined;
  /** The entry being polled: emitCurrent() sends on its behalf (one function for all entries). */
  private current: Entry | undefined;
  private readonly onSyn: (request: TcpSynRequest) => void;
  private readonly maxConnections: number;
  private readonly maxPendingResets: number;

  constructor(opts: TcpTableOptions) {
    this.onSyn = opts.onSyn;
    this.maxConnections = opts.maxConnections ?? 16384;
    this.maxPendingResets = opts.maxPendingResets ?? 4096;
  }

  /** Connections in the table (including TIME-WAIT). */
  get size(): number {
    return this.count;
  }

  /** Stored heap nodes (live and stale), for tests and metrics. */
  get timerNodes(): number {
    return this.heapAt.length;
  }

  get(remoteIp: number, remotePort: number, localIp: number, localPort: number): TcpConnection | undefined {
    return this.find(remoteIp * 65536 + remotePort, localIp * 65536 + localPort)?.conn;
  }

  *connections(): IterableIterator<{ conn: TcpConnection; localIp: number; remoteIp: number }> {
    for (const slot of this.map.values()) {
      if (slot instanceof Entry) yield { conn: slot.conn, localIp: slot.localIp, remoteIp: slot.remoteIp };
      else for (const e of slot.values()) yield { conn: e.conn, localIp: e.localIp, remoteIp: e.remoteIp };
    }
  }

  private find(remoteKey: number, localKey: number): Entry | undefined {
    const slot = this.map.get(remoteKey);
    if (slot === undefined) return undefined;
    if (slot instanceof Entry) return slot.localKey === localKey ? slot : undefined;
    return slot.get(localKey);
  }

  /** A segment from srcIp (the remote end) to dstIp (our end). */
  input(now: number, srcIp: number, dstIp: number, seg: TcpSegment): void {
    this.lastNow = now;
    const e = this.find(srcIp * 65536 + seg.srcPort, dstIp * 65536 + seg.dstPort);
    if (e !== undefined) {
      const c = e.conn;
      if (c.state === 'CLOSED') {
        this.flush(e, now);
        this.remove(e);
      } else if ((seg.flags & (SYN | ACK | RST)) === SYN && c.reusableBy(seg)) {
        this.remove(e);
        this.counters.timeWaitReused++;
      } else {
        c.input(now, seg);
        this.markDirty(e);
        return;
      }
    }
    if ((seg.flags & (SYN | ACK | RST)) === SYN) {
      this.handleSyn(now, srcIp, dstIp, seg);
      return;
    }
    this.counters.unknownSegments++;
    this.queueReset(dstIp, srcIp, resetFor(seg));
  }

  /** Active open from localIp:opts.localPort to remoteIp:opts.remotePort. */
  connect(now: number, localIp: number, remoteIp: number, opts: ConnectOptions): TcpConnection {
    this.lastNow = now;
    if (this.get(remoteIp, opts.remotePort, localIp, opts.localPort) !== undefined) {
      throw new RangeError('a connection with this 4-tuple already exists');
    }
    const c = TcpConnection.connect(now, opts);
    this.add(c, localIp, remoteIp);
    this.counters.connected++;
    return c;
  }

  /** Emit everything due at `now`, from every connection that needs it. */
  poll(now: number, out: TableOutput): void {
    this.lastNow = now;
    this.out = out;
    if (this.resets.length > 0) {
      const resets = this.resets;
      this.resets = [];
      for (const r of resets) {
        this.counters.resetsSent++;
        out(r.srcIp, r.dstIp, r.seg, 0); // a bare RST: no payload to segment
      }
    }
    // Connections touched by segments or application calls.
    const list = this.dirtyList;
    this.dirtyList = this.spare;
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      e.dirty = false;
      if (!e.removed) this.service(e, now);
    }
    list.length = 0;
    this.spare = list;
    // Timers due.
    const at = this.heapAt;
    while (at.length > 0 && at[0] <= now) {
      const t = at[0];
      const e = this.heapPop();
      if (e.removed || e.heapAt !== t) continue;
      e.heapAt = Infinity;
      this.service(e, now);
    }
    if (at.length > 2 * this.count + 1024) this.rebuildHeap();
    this.out = undefined;
  }

  /** When poll() must run next, or undefined. */
  pollAt(): number | undefined {
    if (this.resets.length > 0 || this.dirtyList.length > 0) return this.lastNow;
    const at = this.heapAt;
    while (at.length > 0) {
      const e = this.heapE[0];
      if (!e.removed && e.heapAt === at[0]) return at[0];
      this.heapPop();
    }
    return undefined;
  }

  private handleSyn(now: number, srcIp: number, dstIp: number, seg: TcpSegment): void {
    if (this.count >= this.maxConnections) {
      this.counters.refusedLimit++;
      this.queueReset(dstIp, srcIp, resetFor(seg));
      return;
    }
    let decided = false;
    const request: TcpSynRequest = {
      srcIp,
      srcPort: seg.srcPort,
      dstIp,
      dstPort: seg.dstPort,
      syn: seg,
      accept: (opts) => {
        if (decided) throw new RangeError('this SYN was already accepted or rejected');
        decided = true;
        const c = TcpConnection.accept(now, seg, opts);
        this.add(c, dstIp, srcIp);
        this.counters.accepted++;
        return c;
      },
      reject: () => {
        if (decided) return;
        decided = true;
        this.counters.rejected++;
        this.queueReset(dstIp, srcIp, resetFor(seg));
      },
    };
    this.onSyn(request);
    if (!decided) {
      decided = true;
      this.counters.rejected++;
      this.queueReset(dstIp, srcIp, resetFor(seg));
    }
  }

  private add(c: TcpConnection, localIp: number, remoteIp: number): void {
    const e = new Entry(this, c, localIp, remoteIp);
    const remoteKey = e.remoteKey;
    const slot = this.map.get(remoteKey);
    if (slot === undefined) this.map.set(remoteKey, e);
    else if (slot instanceof Entry) {
      this.map.set(
        remoteKey,
        new Map([
          [slot.localKey, slot],
          [e.localKey, e],
        ]),
      );
    } else slot.set(e.localKey, e);
    this.count++;
    c.waker = e;
    this.markDirty(e);
  }

  private remove(e: Entry): void {
    if (e.removed) return;
    e.removed = true;
    e.conn.waker = undefined;
    const remoteKey = e.remoteKey;
    const slot = this.map.get(remoteKey);
    if (slot === e) this.map.delete(remoteKey);
    else if (slot instanceof Map) {
      slot.delete(e.localKey);
      if (slot.size <= 1) {
        // Back to one connection (or none) at this remote end: no Map for it.
        const rest = slot.values().next();
        if (rest.done === true) this.map.delete(remoteKey);
        else this.map.set(remoteKey, rest.value);
      }
    }
    this.count--;
    this.counters.removed++;
  }

  /** @internal (Entry.wake) */
  markDirty(e: Entry): void {
    if (!e.dirty && !e.removed) {
      e.dirty = true;
      this.dirtyList.push(e);
    }
  }

  private service(e: Entry, now: number): void {
    const c = e.conn;
    const outer = this.current;
    this.current = e;
    try {
      c.poll(now, this.emitCurrent);
    } finally {
      this.current = outer;
    }
    if (c.finished) {
      this.remove(e);
      return;
    }
    const t = c.pollAt() ?? Infinity;
    if (t <= now) this.markDirty(e); // a callback asked for more: next poll
    else if (t !== e.heapAt) {
      // The old node (if any) is now stale and will be skipped when it surfaces.
      e.heapAt = t;
      if (t !== Infinity) this.heapPush(t, e);
    }
  }

  private readonly emitCurrent = (seg: TcpSegment): void => {
    const e = this.current as Entry;
    (this.out as TableOutput)(e.localIp, e.remoteIp, seg, e.conn.sendMss);
  };

  /** A closed connection's last segments (its RST) go out through the reset queue. */
  private flush(e: Entry, now: number): void {
    e.conn.poll(now, (seg) => this.queueReset(e.localIp, e.remoteIp, seg));
  }

  private queueReset(srcIp: number, dstIp: number, seg: TcpSegment | undefined): void {
    if (seg === undefined) return;
    if (this.resets.length >= this.maxPendingResets) {
      this.counters.resetsDropped++;
      return;
    }
    this.resets.push({ srcIp, dstIp, seg });
  }

  private heapPush(t: number, e: Entry): void {
    const at = this.heapAt;
    const es = this.heapE;
    let i = at.length;
    at.push(t);
    es.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (at[p] <= t) break;
      at[i] = at[p];
      es[i] = es[p];
      i = p;
    }
    at[i] = t;
    es[i] = e;
  }

  private heapPop(): Entry {
    const at = this.heapAt;
    const es = this.heapE;
    const top = es[0];
    const t = at.pop() as number;
    const e = es.pop() as Entry;
    const n = at.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const m = r < n && at[r] < at[l] ? r : l;
        if (at[m] >= t) break;
        at[i] = at[m];
        es[i] = es[m];
        i = m;
      }
      at[i] = t;
      es[i] = e;
    }
    return top;
  }

  /** Drop stale nodes: keep one node per live entry with a deadline. */
  private rebuildHeap(): void {
    const live = new Set<Entry>();
    for (const e of this.heapE) if (!e.removed && e.heapAt !== Infinity) live.add(e);
    this.heapAt.length = 0;
    this.heapE.length = 0;
    for (const e of live) this.heapPush(e.heapAt, e);
  }
}
