/**
 * Splices each TCP connection our stack terminates onto a stream from its outbound, with
 * backpressure both ways:
 *
 *   app → upstream: bytes the stack delivers are written to the socket; they count against the
 *   window we advertise until the socket has handed them to the kernel (write callback), so a
 *   slow upstream closes the app's window instead of growing our memory.
 *
 *   upstream → app: socket data goes into the connection's bounded send buffer; what does not
 *   fit is held (one chunk) and the socket is paused until the connection has room again.
 *
 * The SYN-ACK waits for the upstream: the app sees the connection succeed only if the
 * destination accepted, and gets RST (→ "connection refused") if it did not.
 */
import type { Socket } from 'node:net';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { u32ToIp } from '../net/ipv4.js';
import type { TcpConnection } from '../stack/tcp/connection.js';
import type { RecvSlab } from '../stack/tcp/recv-slabs.js';
import { setReadSink, type ReadSink } from '../outbound/pooled-reads.js';
import type { TcpSynRequest } from '../stack/tcp/table.js';
import type { CloseReason, TcpConnectionOptions, TcpListener } from '../stack/tcp/types.js';
import type { TcpStack } from '../stack/tcp-stack.js';
import {
  isUpstreamError,
  UPSTREAM_REASONS,
  type ConnectCancel,
  type Outbound,
  type PendingConnect,
  type UpstreamReason,
} from '../outbound/outbound.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { TrimAfterBurst } from './trim-after-burst.js';
import { BufferBudget, type BufferBudgetStats } from './buffer-budget.js';
import { isFdExhaustion, LimitLog } from './limit-log.js';
import { routeFlow, type FlowRouter } from './flow-route.js';
import type { ProbeBook } from './probes.js';
import type { FakeIpPool } from '../dns/fake-ip.js';

/**
 * From the relay's construction to the trim that gives back what start-up grew (the young
 * generation: ~10 MB of an idle `up`'s 23 MB heap): start-up is over well before, and V8 gives
 * it back only after ~5 s of little allocation (see trim-after-burst.ts).
 */
const STARTUP_SETTLE_MS = 15_000;


export interface TcpRelayOptions {
  stack: TcpStack;
  /** The outbound for each new flow (a Router, or the server's guard around one). */
  /** What picks an outbound: an address (route), and a name when it has domain rules (routeName). */
  router: FlowRouter;
  outbounds: ReadonlyMap<string, Outbound>;
  clock: Clock;
  logger: Logger;
  /** Deadline for reaching the destination through the outbound. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * Largest buffer of one flow, each direction; it is also the largest window advertised to
   * the app. Default 1 MiB: on a 2-core lab 256 KiB held a single upload to 2.7–4.4 Gbit/s
   * (any scheduling hiccup emptied the pipe), 1 MiB gave 5.3–6.0.
   */
  bufferBytes?: number;
  /**
   * What all flows' buffers may add up to (both directions), when no `budget` is given: a
   * budget of its own (buffer-budget.ts). Default 256 MiB.
   */
  memoryBytes?: number;
  /** The byte budget shared with the UDP relay (the engine's); it enforces memoryBytes. */
  budget?: BufferBudget;
  /**
   * Most flows one local user (the uid owning the app's socket) may hold at once; 0: no share.
   * Needs `socketOwner`.
   */
  perUidFlows?: number;
  /** The uid owning the app's socket of a SYN (sock_diag), or undefined when unknown. */
  socketOwner?: (srcIp: number, srcPort: number, dstIp: number, dstPort: number) => number | undefined;
  /** Most flows at once; beyond it SYNs get RST (each flow holds one socket). Default 16,000. */
  maxFlows?: number;
  /** Extra connection options (timestamps, keep-alive, maxSegmentPayload…). */
  connection?: Partial<TcpConnectionOptions>;
  /**
   * The fake-IP table (dns.mode fakeip): a flow to one of its addresses is routed by its name
   * (domain rules first) and carried to the name; the address stays the name's while the flow
   * lives. A pool address with no name (forgotten) gets RST.
   */
  names?: FakeIpPool;
  /** `tunroute verify`'s marked probes: a probe's SYN is counted and answered RST. */
  probes?: ProbeBook;
  /**
   * DNS over TCP while hijacking (relay/tcp-dns.ts): offered each SYN first; true when it took
   * the SYN (answered here, no upstream connection).
   */
  dnsTcp?: { take(req: TcpSynRequest): boolean };
}

export interface TcpFlowInfo {
  id: number;
  src: string;
  dst: string;
  outbound: string;
  /** The name a fake-IP destination stands for (dns.mode fakeip): `dst` shows it instead of the address. */
  host?: string;
  state: string;
  /** App → upstream bytes. */
  bytesUp: number;
  /** Upstream → app bytes. */
  bytesDown: number;
  ageMs: number;
}

export interface TcpRelayStats {
  flowsOpen: number;
  flowsTotal: number;
  refusedLimit: number;
  /** SYNs refused because the buffer budget could not promise a new flow its floors. */
  refusedMemory: number;
  /** Flows refused because a socket could not be opened: no file descriptor left (EMFILE/ENFILE). */
  refusedFds: number;
  /** SYNs refused because their user already held perUidFlows flows. */
  refusedUid: number;
  /** The buffer budget (filled in by the engine's stats()). */
  memory?: BufferBudgetStats;
  /** SYNs to a fake-IP address the table has no name for (RST). */
  refusedNoName: number;
  upstreamErrors: Record<UpstreamReason, number>;
  bytesUp: number;
  bytesDown: number;
}

function newUpstreamErrors(): Record<UpstreamReason, number> {
  const r = {} as Record<UpstreamReason, number>;
  for (const k of UPSTREAM_REASONS) r[k] = 0;
  return r;
}

export class TcpRelay {
  private readonly flows = new Set<TcpFlow>();
  private nextId = 1;
  /** Gives the allocator's free pages back once a burst of flows has closed. */
  private readonly trimmer = new TrimAfterBurst();
  readonly stats: TcpRelayStats = {
    flowsOpen: 0,
    flowsTotal: 0,
    refusedLimit: 0,
    refusedMemory: 0,
    refusedFds: 0,
    refusedUid: 0,
    refusedNoName: 0,
    upstreamErrors: newUpstreamErrors(),
    bytesUp: 0,
    bytesDown: 0,
  };
  readonly opts: Required<Omit<TcpRelayOptions, 'connection' | 'names' | 'budget' | 'socketOwner' | 'probes' | 'dnsTcp'>> & {
    connection: Partial<TcpConnectionOptions>;
    names: FakeIpPool | undefined;
    socketOwner: TcpRelayOptions['socketOwner'];
    probes: ProbeBook | undefined;
  };
  readonly budget: BufferBudget;
  /** Open flows by the uid that owns the app's socket (only with perUidFlows). */
  private readonly uidFlows = new Map<number, number>();
  private readonly limitLog: LimitLog;
  private readonly memoryLog: LimitLog;
  private readonly uidLog: LimitLog;
  /** @internal The fd-exhaustion warning (TcpFlow). */
  readonly fdLog: LimitLog;
  private readonly dnsTcp: TcpRelayOptions['dnsTcp'];

  constructor(opts: TcpRelayOptions) {
    this.dnsTcp = opts.dnsTcp;
    this.opts = {
      connectTimeoutMs: 10_000,
      bufferBytes: 1024 * 1024,
      memoryBytes: 256 * 1024 * 1024,
      maxFlows: 16_000,
      connection: {},
      ...opts,
      perUidFlows: opts.perUidFlows ?? 0,
      names: opts.names,
      socketOwner: opts.socketOwner,
      probes: opts.probes,
    };
    const o = this.opts;
    this.budget = opts.budget ?? new BufferBudget(o.memoryBytes, o.maxFlows);
    this.limitLog = new LimitLog(o.clock, o.logger, 'flow limit reached: new TCP connections get RST (each flow holds a socket; raise limits.tcp.maxFlows only with the open-file limit)');
    this.memoryLog = new LimitLog(o.clock, o.logger, 'buffer budget full: new TCP connections get RST until flows drain (raise limits.tcp.memoryBytes, or lower maxFlows)');
    this.uidLog = new LimitLog(o.clock, o.logger, "a user's share of TCP flows is used up: its new connections get RST (limits.tcp.perUidFlows)");
    this.fdLog = new LimitLog(o.clock, o.logger, 'no file descriptor left for an upstream socket: the flow gets RST (raise LimitNOFILE, or lower limits.tcp.maxFlows)');
    this.trimmer.settle(STARTUP_SETTLE_MS);
  }

  /** The stack's SYN hook. Synchronous: it must accept or reject before returning. */
  readonly onSyn = (req: TcpSynRequest): void => {
    const o = this.opts;
    if (o.probes?.claimSyn(req.srcPort) === true) {
      req.reject();
      return;
    }
    if (req.dstPort === 53 && this.dnsTcp?.take(req) === true) return;
    if (this.flows.size >= o.maxFlows) {
      this.stats.refusedLimit++;
      this.limitLog.hit(() => ({ maxFlows: o.maxFlows, refused: this.stats.refusedLimit }));
      req.reject();
      return;
    }
    let uid: number | undefined;
    if (o.perUidFlows > 0 && o.socketOwner !== undefined) {
      uid = o.socketOwner(req.srcIp, req.srcPort, req.dstIp, req.dstPort);
      if (uid !== undefined && (this.uidFlows.get(uid) ?? 0) >= o.perUidFlows) {
        this.stats.refusedUid++;
        this.uidLog.hit(() => ({ uid, perUidFlows: o.perUidFlows, refused: this.stats.refusedUid }));
        req.reject();
        return;
      }
    }
    const route = routeFlow(o.router, o.names, req.dstIp, IP_PROTO_TCP, req.dstPort, req.srcIp);
    if (route === undefined) {
      this.stats.refusedNoName++;
      req.reject();
      return;
    }
    const { host } = route;
    const outbound = o.outbounds.get(route.outbound);
    if (outbound === undefined) {
      req.reject();
      return;
    }
    if (!this.budget.openFlow()) {
      this.stats.refusedMemory++;
      this.memoryLog.hit(() => ({ memoryBytes: this.budget.totalBytes, flowsOpen: this.flows.size, refused: this.stats.refusedMemory }));
      req.reject();
      return;
    }
    if (host !== undefined) o.names?.pin(req.dstIp);
    const flow = new TcpFlow(this, this.nextId++, req, outbound, host);
    if (uid !== undefined) {
      flow.uid = uid;
      this.uidFlows.set(uid, (this.uidFlows.get(uid) ?? 0) + 1);
    }
    flow.conn = req.accept({
      ...o.connection,
      iss: o.stack.random32(),
      tsOffset: o.stack.random32(),
      mss: o.stack.mss,
      maxSegmentPayload: o.stack.maxSegmentPayload,
      output: o.stack.outputMode,
      rcvBufSize: o.bufferBytes,
      sndBufSize: o.bufferBytes,
      memory: this.budget,
      memoryFloor: this.budget.floorBytes,
      listener: flow,
    });
    this.flows.add(flow);
    this.trimmer.opened(this.flows.size);
    this.stats.flowsOpen++;
    this.stats.flowsTotal++;
    flow.start();
  };

  /** @internal */
  flowEnded(flow: TcpFlow): void {
    if (this.flows.delete(flow)) {
      this.budget.closeFlow();
      const uid = flow.uid;
      if (uid !== undefined) {
        const n = (this.uidFlows.get(uid) ?? 1) - 1;
        if (n > 0) this.uidFlows.set(uid, n);
        else this.uidFlows.delete(uid);
      }
      if (flow.host !== undefined) this.opts.names?.unpin(flow.dstIp);
      this.stats.flowsOpen--;
      this.trimmer.closed(this.flows.size);
    }
  }

  flowInfo(): TcpFlowInfo[] {
    const now = this.opts.clock.now();
    return [...this.flows].map((f) => f.info(now));
  }

  /**
   * Abort the flow with this id (RST to the app, its socket destroyed); false if none is open.
   * A scan of the open flows: asked by a person (the dashboard), never per packet.
   */
  close(id: number): boolean {
    for (const f of this.flows) {
      if (f.id === id) {
        f.abort();
        return true;
      }
    }
    return false;
  }

  /**
   * Abort the flows `dead` picks (RST to their apps; their sockets close): flows whose path
   * died in a network change, or whose outbound a reload removed or changed. Returns how many.
   */
  resetWhere(dead: (f: FlowFacts) => boolean): number {
    let n = 0;
    for (const f of [...this.flows]) {
      if (dead(f)) {
        f.abort();
        n++;
      }
    }
    return n;
  }

  /** Abort every flow (RST to the apps) and close their sockets. */
  closeAll(): void {
    for (const f of [...this.flows]) f.abort();
    this.trimmer.stop();
  }
}

/**
 * The flow a socket carries, as a property of the socket: its event handlers are then four
 * functions shared by all flows instead of four closures per flow (with their context, ~0.3 KB
 * of every idle flow).
 */
const FLOW = Symbol('tunroute.flow');
interface FlowSocket extends Socket {
  [FLOW]?: TcpFlow;
}

function onSocketData(this: FlowSocket, data: Buffer): void {
  this[FLOW]?.upstreamChunk(data, undefined);
}
function onSocketEnd(this: FlowSocket): void {
  this[FLOW]?.upstreamEnd();
}
function onSocketError(this: FlowSocket, e: Error): void {
  this[FLOW]?.upstreamError(e);
}
function onSocketClose(this: FlowSocket): void {
  this[FLOW]?.upstreamClose();
}
function uncorkFlow(flow: TcpFlow): void {
  flow.uncork();
}

/** What a caller may ask of a flow when picking which to reset (TCP and UDP alike). */
export interface FlowFacts {
  readonly outbound: Outbound;
  /** The app's destination (a fake address when `host` is set). */
  readonly dstIp: number;
  readonly dstPort: number;
  readonly host: string | undefined;
  /** IP protocol number (6 TCP, 17 UDP), for routing the flow again. */
  readonly protocol: number;
}

class TcpFlow implements TcpListener, ConnectCancel, FlowFacts, ReadSink {
  conn!: TcpConnection;
  private socket: Socket | undefined;
  /** The outbound's connect while it is in flight (ConnectCancel: no AbortController per flow). */
  pending: PendingConnect | undefined = undefined;
  private readonly startedAt: number;
  private readonly src: string;
  private readonly dst: string;
  /** The app's destination address (a fake one when `host` is set). */
  readonly dstIp: number;
  readonly dstPort: number;
  readonly protocol = IP_PROTO_TCP;
  /** Upstream bytes the connection's send buffer could not take yet. */
  private held: Uint8Array | undefined;
  /** The pooled slab `held` lies in (this flow's reference to it), or undefined. */
  private heldSlab: RecvSlab | undefined = undefined;
  /** Lengths of chunks written to the socket and not yet flushed to the kernel, in order. */
  private readonly inFlight: number[] = [];
  private inFlightHead = 0;
  private upstreamEnded = false;
  private done = false;
  /** The uid owning the app's socket, when the relay keeps per-uid shares. */
  uid: number | undefined = undefined;
  bytesUp = 0;
  bytesDown = 0;

  constructor(
    private readonly relay: TcpRelay,
    readonly id: number,
    req: TcpSynRequest,
    readonly outbound: Outbound,
    /** The name a fake-IP destination stands for; the flow goes to it. */
    readonly host: string | undefined,
  ) {
    this.startedAt = relay.opts.clock.now();
    this.src = `${u32ToIp(req.srcIp)}:${req.srcPort}`;
    this.dstPort = req.dstPort;
    this.dstIp = req.dstIp;
    this.dst = u32ToIp(req.dstIp);
  }

  private get now(): number {
    return this.relay.opts.clock.now();
  }

  private get log(): Logger {
    return this.relay.opts.logger;
  }

  start(): void {
    const o = this.relay.opts;
    this.outbound
      .connectTcp(this.host === undefined ? { ip: this.dst, port: this.dstPort } : { ip: this.dst, port: this.dstPort, name: this.host }, { timeoutMs: o.connectTimeoutMs, cancel: this })
      .then(
        (socket) => this.attach(socket),
        (e: unknown) => this.upstreamFailed(e),
      );
  }

  private attach(socket: Socket): void {
    if (this.done) {
      socket.destroy();
      return;
    }
    this.socket = socket;
    (socket as FlowSocket)[FLOW] = this;
    // A socket of ours reads into the shared buffer and hands this flow pooled copies
    // (pooled-reads.ts); 'data' still serves any other kind of socket.
    setReadSink(socket, this);
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    // The socket stays paused until the app's handshake completes (onEstablished).
    this.conn.completeAccept(this.now);
    this.relay.opts.stack.schedule();
  }

  private upstreamFailed(e: unknown): void {
    const reason: UpstreamReason = isUpstreamError(e) ? e.reason : 'protocol';
    if (reason !== 'aborted') this.relay.stats.upstreamErrors[reason]++;
    if (isFdExhaustion(e)) {
      const st = this.relay.stats;
      st.refusedFds++;
      this.relay.fdLog.hit(() => ({ flowsOpen: st.flowsOpen, refused: st.refusedFds }));
    }
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ flow: this.id, dst: `${this.host ?? this.dst}:${this.dstPort}`, reason, err: e instanceof Error ? e.message : String(e) }, 'upstream failed: RST to the app');
    }
    if (!this.done) {
      this.conn.reject(this.now);
      this.relay.opts.stack.schedule();
    }
  }

  // --- TcpListener (the app side) -------------------------------------------------------

  onEstablished(): void {
    this.socket?.resume();
  }

  onData(chunk: Uint8Array): void {
    const s = this.socket;
    if (s === undefined || s.destroyed || s.writableEnded) {
      // Nowhere to deliver: the app must learn its bytes were lost, not be ACKed into silence.
      this.abort();
      return;
    }
    this.bytesUp += chunk.length;
    this.relay.stats.bytesUp += chunk.length;
    this.inFlight.push(chunk.length);
    // Everything one batch of packets delivers to this flow leaves in one writev: cork now,
    // uncork once the batch's callback has returned (process.nextTick runs right after it).
    if (!this.corked) {
      this.corked = true;
      s.cork();
      process.nextTick(uncorkFlow, this);
    }
    // A write callback gets no `this`: the one closure a flow needs, made when it first sends.
    s.write(chunk, (this.onFlushed ??= (err?: Error | null): void => this.flushed(err)));
  }

  private corked = false;
  /** @internal The batch that corked the socket is over (uncorkFlow). */
  uncork(): void {
    this.corked = false;
    this.socket?.uncork();
  }

  private onFlushed: ((err?: Error | null) => void) | undefined = undefined;

  /** One chunk reached the kernel: its bytes no longer count against the app's window. */
  private flushed(err: Error | null | undefined): void {
    if (err) return; // 'error' handles it
    const inFlight = this.inFlight;
    const n = inFlight[this.inFlightHead++];
    if (this.inFlightHead === inFlight.length) {
      // All flushed: empty the list, which also lets its backing store go (an idle flow keeps none).
      inFlight.length = 0;
      this.inFlightHead = 0;
    } else if (this.inFlightHead > 1024 && this.inFlightHead * 2 > inFlight.length) {
      inFlight.splice(0, this.inFlightHead);
      this.inFlightHead = 0;
    }
    if (this.done) return;
    this.conn.consumed(n);
    this.relay.opts.stack.schedule();
  }

  onPeerFin(): void {
    // The app half-closed: pass it on once what it sent is written.
    this.socket?.end();
  }

  onWritable(): void {
    this.pushHeld();
  }

  onClosed(reason: CloseReason): void {
    if (this.done) return;
    this.done = true;
    if (this.held !== undefined) {
      this.relay.budget.unforce(this.held.length);
      this.held = undefined;
      this.releaseHeldSlab();
    }
    this.relay.flowEnded(this);
    const socket = this.socket;
    if (socket === undefined) {
      // Still connecting: let the outbound give up (it clears `pending` once the attempt settled).
      this.pending?.cancel();
    } else if (reason !== 'normal') {
      socket.destroy();
    } else if (!socket.writableEnded) {
      // end() on an ended stream builds an ERR_STREAM_ALREADY_FINISHED error (with its stack).
      socket.end();
    }
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ flow: this.id, src: this.src, dst: `${this.host ?? this.dst}:${this.dstPort}`, reason, up: this.bytesUp, down: this.bytesDown, tcp: this.conn.stats }, 'flow closed');
    }
  }

  // --- the upstream side ----------------------------------------------------------------

  /**
   * @internal Bytes from the upstream socket (ReadSink, or its 'data': onSocketData). `slab`:
   * the pooled slab they were copied into; this call owns one reference to it and lets it go
   * once the send buffer has taken the bytes (which then holds its own until the app
   * acknowledges them).
   */
  upstreamChunk(data: Uint8Array, slab: RecvSlab | undefined): void {
    if (this.done) {
      slab?.pool.release(slab); // a read that raced the close: nowhere to deliver
      return;
    }
    this.bytesDown += data.length;
    this.relay.stats.bytesDown += data.length;
    if (this.held !== undefined) {
      // Should not happen (paused), but never lose bytes. The concatenation is a copy.
      this.relay.budget.force(data.length);
      this.held = Buffer.concat([this.held, data]);
      this.releaseHeldSlab();
      slab?.pool.release(slab);
      return;
    }
    const n = this.conn.write(data, slab);
    if (n < data.length) {
      // Already in memory: charged to the budget, beyond it if it must (buffer-budget.ts).
      this.held = data.subarray(n);
      this.heldSlab = slab;
      this.relay.budget.force(this.held.length);
      this.socket?.pause();
    } else slab?.pool.release(slab);
    this.relay.opts.stack.schedule();
  }

  private pushHeld(): void {
    const h = this.held;
    if (h === undefined) return;
    const n = this.conn.write(h, this.heldSlab);
    this.relay.budget.unforce(n);
    if (n < h.length) {
      this.held = h.subarray(n);
    } else {
      this.held = undefined;
      this.releaseHeldSlab();
      if (this.upstreamEnded) this.conn.shutdownWrite();
      else this.socket?.resume();
    }
    this.relay.opts.stack.schedule();
  }

  private releaseHeldSlab(): void {
    const slab = this.heldSlab;
    if (slab === undefined) return;
    this.heldSlab = undefined;
    slab.pool.release(slab);
  }

  /** @internal The upstream socket's 'end' (onSocketEnd). */
  upstreamEnd(): void {
    this.upstreamEnded = true;
    if (this.held === undefined) {
      this.conn.shutdownWrite();
      this.relay.opts.stack.schedule();
    }
  }

  /** @internal The upstream socket's 'error' (onSocketError). */
  upstreamError(e: Error): void {
    if (this.log.isLevelEnabled('debug')) this.log.debug({ flow: this.id, err: e.message }, 'upstream socket error: RST to the app');
    this.abort();
  }

  /** @internal The upstream socket's 'close' (onSocketClose). */
  upstreamClose(): void {
    // A close after both ends finished is normal; a close before our FIN was queued means the
    // upstream vanished without FIN (destroyed): the app must not wait forever.
    if (!this.done && !this.upstreamEnded) this.abort();
  }

  abort(): void {
    if (this.done) return;
    this.conn.abort(this.now);
    this.socket?.destroy();
    this.relay.opts.stack.schedule();
  }

  info(now: number): TcpFlowInfo {
    return {
      id: this.id,
      src: this.src,
      dst: `${this.host ?? this.dst}:${this.dstPort}`,
      outbound: this.outbound.name,
      ...(this.host === undefined ? {} : { host: this.host }),
      state: this.conn.state,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      ageMs: Math.round(now - this.startedAt),
    };
  }
}
