/**
 * Carries each UDP flow the stack sees to its upstream, and answers DNS when hijacking.
 *
 *   new flow (app A:a → D:d)
 *     ├─ d = 53 and DNS hijack on ─► DnsHijackFlow: each query → the DNS answerer → answer from D:53
 *     ├─ router → outbound without UDP (block, a proxy refusing UDP ASSOCIATE)
 *     │                              ─► ICMP administratively prohibited to the app
 *     └─ router → outbound.openUdp ─► ProxiedUdpFlow: one association for this flow; datagrams
 *                                     sent while it opens wait in a small bounded queue
 *
 * Replies from any remote reach the app through its flow (full cone, see UdpStack). What an
 * upstream reports becomes the ICMP error the app would have got without us:
 *   refused (SOCKS 0x05, dante relaying port unreachable, DNS-over-TCP connect refused)
 *                                     → port unreachable (3)
 *   unreachable, proxy_down           → host unreachable (1)
 *   not_allowed, protocol, auth_failed → administratively prohibited (13)
 *   timeout                           → nothing for ordinary flows (UDP is silent about loss);
 *                                       SERVFAIL for a hijacked DNS query
 * ICMP errors are sent at most once per second per flow. A flow whose association could not be
 * opened drops datagrams for `retryAfterMs` before trying again, so a dead proxy is not hit by
 * one connection attempt per datagram.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { DNS_RCODE_NXDOMAIN, DNS_RCODE_SERVFAIL, DNS_UDP_DEFAULT_SIZE, DnsMessage, errorResponse } from '../dns/message.js';
import type { ProbeBook } from './probes.js';
import type { DnsAnswerer } from '../dns/resolver.js';
import { destinationText, isUpstreamError, UPSTREAM_REASONS, type Destination, type Outbound, type UdpUpstream, type UpstreamReason } from '../outbound/outbound.js';
import type { FakeIpPool } from '../dns/fake-ip.js';
import { routeFlow, type FlowRouter } from './flow-route.js';
import type { BufferBudget } from './buffer-budget.js';
import { isFdExhaustion, LimitLog } from './limit-log.js';
import type { UdpCloseReason, UdpFlow, UdpFlowListener } from '../stack/udp/flow-table.js';
import type { UdpStack } from '../stack/udp/udp-stack.js';
import type { FlowFacts, TcpFlowInfo } from './tcp-relay.js';
import {
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_PORT,
} from '../wire/icmp.js';
import { IP_PROTO_UDP } from '../wire/ipv4.js';
import { ipToU32, u32ToIp } from '../net/ipv4.js';

export interface UdpRelayOptions {
  stack: UdpStack;
  /** Picks the outbound by name for a destination (the Router). */
  router: FlowRouter;
  outbounds: ReadonlyMap<string, Outbound>;
  clock: Clock;
  logger: Logger;
  /** DNS hijack: every datagram to port 53, whatever its address, is answered by this. */
  dns?: DnsAnswerer;
  /**
   * The fake-IP table (dns.mode fakeip): a flow to one of its addresses goes to its name
   * (routed by the domain rules first); a pool address with no name is refused by ICMP.
   */
  names?: FakeIpPool;
  /** `tunroute verify`'s marked probes: its DNS probe is answered NXDOMAIN here. */
  probes?: ProbeBook;
  /** Deadline for opening a flow's association. Default 10 s. */
  openTimeoutMs?: number;
  /** Datagrams a flow holds while its association opens. Default 64. */
  maxPendingDatagrams?: number;
  /** …and bytes. Default 256 KiB. */
  maxPendingBytes?: number;
  /** The byte budget shared with the TCP relay: datagrams queued while opening are charged to it. */
  budget?: BufferBudget;
  /** After a failed open, datagrams are dropped this long before the next try. Default 5 s. */
  retryAfterMs?: number;
}

export interface UdpRelayStats {
  flowsOpen: number;
  flowsTotal: number;
  /** Associations open now (two sockets each). */
  associations: number;
  datagramsUp: number;
  bytesUp: number;
  datagramsDown: number;
  bytesDown: number;
  /** Datagrams dropped: queue full while opening, after a failed open, association refused. */
  dropped: number;
  /** Flows whose upstream socket could not be opened: no file descriptor left (ICMP to the app). */
  refusedFds?: number;
  icmpSent: number;
  dnsQueries: number;
  dnsAnswered: number;
  dnsFailed: number;
  upstreamErrors: Record<UpstreamReason, number>;
}

/**
 * One UDP flow (the app's 5-tuple) as `status` lists it (control/protocol.ts re-exports it): the
 * fields of a TCP flow (`outbound` is 'dns' for hijacked DNS) and how long it has been idle.
 */
export interface UdpFlowInfo extends TcpFlowInfo {
  idleMs: number;
}

/** The ICMP destination-unreachable code for an upstream failure; undefined: send nothing. */
export function icmpCodeFor(reason: UpstreamReason): number | undefined {
  switch (reason) {
    case 'refused':
      return ICMP_UNREACH_PORT;
    case 'unreachable':
    case 'proxy_down':
      return ICMP_UNREACH_HOST;
    case 'not_allowed':
    case 'protocol':
    case 'auth_failed':
      return ICMP_UNREACH_ADMIN_PROHIBITED;
    case 'timeout':
    case 'aborted':
      return undefined;
  }
}

const ICMP_INTERVAL_MS = 1000;

export class UdpRelay {
  readonly stats: UdpRelayStats;
  /** @internal */ readonly o: Required<Omit<UdpRelayOptions, 'dns' | 'names' | 'budget' | 'probes'>> & {
    dns: DnsAnswerer | undefined;
    names: FakeIpPool | undefined;
    budget: BufferBudget | undefined;
    probes: ProbeBook | undefined;
  };
  /** @internal The fd-exhaustion warning (ProxiedUdpFlow). */
  readonly fdLog: LimitLog;
  /** @internal Where DnsAnswerer.answerNow writes an answer given at once (copied out by the stack before the next). */
  readonly answerBuf = new Uint8Array(DNS_UDP_DEFAULT_SIZE);
  private readonly flows = new Set<RelayFlow>();

  constructor(opts: UdpRelayOptions) {
    this.o = {
      openTimeoutMs: 10_000,
      maxPendingDatagrams: 64,
      maxPendingBytes: 256 * 1024,
      retryAfterMs: 5000,
      ...opts,
      dns: opts.dns,
      names: opts.names,
      budget: opts.budget,
      probes: opts.probes,
    };
    this.fdLog = new LimitLog(opts.clock, opts.logger, 'no file descriptor left for an upstream UDP socket: the app gets ICMP unreachable (raise LimitNOFILE, or lower limits.udp.maxFlows)');
    const errors = {} as Record<UpstreamReason, number>;
    for (const r of UPSTREAM_REASONS) errors[r] = 0;
    this.stats = {
      flowsOpen: 0,
      flowsTotal: 0,
      associations: 0,
      datagramsUp: 0,
      bytesUp: 0,
      datagramsDown: 0,
      bytesDown: 0,
      dropped: 0,
      icmpSent: 0,
      dnsQueries: 0,
      dnsAnswered: 0,
      dnsFailed: 0,
      upstreamErrors: errors,
    };
  }

  /** The stack's flow handler (UdpStack.setFlowHandler). */
  readonly onFlow = (flow: UdpFlow): UdpFlowListener | undefined => {
    const o = this.o;
    if (o.dns !== undefined && flow.dstPort === 53) return this.track(new DnsHijackFlow(this, flow, o.dns));
    const route = routeFlow(o.router, o.names, flow.dstIp, IP_PROTO_UDP, flow.dstPort, flow.srcIp);
    const outbound = route === undefined ? undefined : o.outbounds.get(route.outbound);
    if (route === undefined || outbound?.openUdp === undefined) {
      // A pool address with no name, blocked, or an upstream that never carries UDP.
      this.unreachable(flow, ICMP_UNREACH_ADMIN_PROHIBITED);
      this.stats.dropped++;
      return undefined;
    }
    const f = new ProxiedUdpFlow(this, flow, outbound, route.host);
    if (route.host !== undefined) o.names?.pin(flow.dstIp);
    this.track(f);
    f.open();
    return f;
  };

  /** A DNS query the link answered itself (Link.answerQueries), with its answer: counted as a hijacked one. */
  countAnsweredAtLink(queryBytes: number, answerBytes: number): void {
    const stats = this.stats;
    stats.dnsQueries++;
    stats.datagramsUp++;
    stats.bytesUp += queryBytes;
    stats.dnsAnswered++;
    stats.datagramsDown++;
    stats.bytesDown += answerBytes;
  }

  /**
   * A query for `tunroute verify`'s probe name, whichever way this flow goes (hijacked or to the
   * resolver through an outbound): counted and answered NXDOMAIN here, never sent on.
   * @internal
   */
  answeredProbe(flow: UdpFlow, payload: Uint8Array): boolean {
    const probes = this.o.probes;
    if (probes === undefined || !probes.dnsArmed) return false;
    const query = DnsMessage.parse(payload);
    if (query === undefined || !probes.claimDns(query)) return false;
    this.o.stack.sendDatagram(flow.dstIp, flow.dstPort, flow.srcIp, flow.srcPort, errorResponse(query, DNS_RCODE_NXDOMAIN));
    return true;
  }

  private track<F extends RelayFlow>(f: F): F {
    this.flows.add(f);
    this.stats.flowsOpen++;
    this.stats.flowsTotal++;
    return f;
  }

  /** @internal */
  ended(f: RelayFlow): void {
    if (this.flows.delete(f)) {
      this.stats.flowsOpen--;
      if (f instanceof ProxiedUdpFlow && f.host !== undefined) this.o.names?.unpin(f.flow.dstIp);
    }
  }

  /** @internal ICMP unreachable to the app of `flow`. */
  unreachable(flow: UdpFlow, code: number, quote?: Uint8Array): void {
    if (this.o.stack.sendUnreachable(flow, code, quote)) this.stats.icmpSent++;
  }

  flowInfo(): UdpFlowInfo[] {
    const now = this.o.clock.now();
    return [...this.flows].map((f) => f.info(now));
  }

  /** End the flow with this id (its association closes); false if none is open. A scan, as TcpRelay.close. */
  close(id: number): boolean {
    for (const f of this.flows) {
      if (f.flow.id === id) {
        this.o.stack.closeFlow(f.flow);
        return true;
      }
    }
    return false;
  }

  /** End the proxied flows `dead` picks (their associations close; the app's next datagram opens a new flow). */
  resetWhere(dead: (f: FlowFacts) => boolean): number {
    let n = 0;
    for (const f of [...this.flows]) {
      if (f instanceof ProxiedUdpFlow && dead(f)) {
        this.o.stack.closeFlow(f.flow);
        n++;
      }
    }
    return n;
  }

  /** End every flow (their associations close). */
  closeAll(): void {
    for (const f of [...this.flows]) this.o.stack.closeFlow(f.flow);
  }
}

interface RelayFlow extends UdpFlowListener {
  readonly flow: UdpFlow;
  info(now: number): UdpFlowInfo;
}

function describe(flow: UdpFlow, outbound: string, state: string, now: number, host?: string): UdpFlowInfo {
  return {
    id: flow.id,
    src: `${u32ToIp(flow.srcIp)}:${flow.srcPort}`,
    dst: `${host ?? u32ToIp(flow.dstIp)}:${flow.dstPort}`,
    outbound,
    ...(host === undefined ? {} : { host }),
    state,
    bytesUp: flow.bytesUp,
    bytesDown: flow.bytesDown,
    ageMs: Math.round(now - flow.createdAt),
    idleMs: Math.round(now - flow.lastActiveAt),
  };
}

/** An ordinary flow through one association of its outbound. */
class ProxiedUdpFlow implements RelayFlow, FlowFacts {
  private state: 'opening' | 'open' | 'failed' | 'closed' = 'opening';
  private assoc: UdpUpstream | undefined;
  private abort: AbortController | undefined;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private failedAt = 0;
  private lastIcmpAt = -Infinity;
  private readonly dst: Destination;

  readonly protocol = IP_PROTO_UDP;

  get dstIp(): number {
    return this.flow.dstIp;
  }

  get dstPort(): number {
    return this.flow.dstPort;
  }

  constructor(
    private readonly relay: UdpRelay,
    readonly flow: UdpFlow,
    readonly outbound: Outbound,
    /** The name a fake-IP destination stands for: datagrams go to it. */
    readonly host: string | undefined,
  ) {
    this.dst = host === undefined ? { ip: u32ToIp(flow.dstIp), port: flow.dstPort } : { ip: u32ToIp(flow.dstIp), port: flow.dstPort, name: host };
  }

  private get now(): number {
    return this.relay.o.clock.now();
  }

  open(): void {
    const o = this.relay.o;
    this.state = 'opening';
    const ctl = new AbortController();
    this.abort = ctl;
    this.outbound.openUdp!({ signal: ctl.signal, timeoutMs: o.openTimeoutMs }).then(
      (a) => this.opened(a, ctl),
      (e: unknown) => this.failed(e, ctl),
    );
  }

  private opened(a: UdpUpstream, ctl: AbortController): void {
    if (this.state === 'closed' || this.abort !== ctl) {
      a.close();
      return;
    }
    this.abort = undefined;
    this.assoc = a;
    this.state = 'open';
    this.relay.stats.associations++;
    const stack = this.relay.o.stack;
    const stats = this.relay.stats;
    a.setHandlers({
      message: (payload, from) => {
        // A flow by name: the answer comes from the name's real address, which the app never
        // saw; from the destination's port it is the name answering, so it comes from the fake one.
        const ip = this.host !== undefined && from.port === this.dst.port ? this.flow.dstIp : ipToU32(from.ip);
        if (ip === undefined) {
          stats.dropped++;
          return;
        }
        if (stack.sendToApp(this.flow, ip, from.port, payload)) {
          stats.datagramsDown++;
          stats.bytesDown += payload.length;
        }
      },
      closed: (err) => {
        // The proxy ended the association: end the flow; the app's next datagram opens anew.
        stats.upstreamErrors[err.reason]++;
        this.log('association lost', err.message);
        stack.closeFlow(this.flow);
      },
      // What the proxy relayed as ICMP (dante: port unreachable from the destination).
      unreachable: (reason) => {
        stats.upstreamErrors[reason]++;
        const code = icmpCodeFor(reason);
        if (code !== undefined) this.icmp(code);
      },
    });
    const queued = this.pending;
    this.dropPending();
    for (const d of queued) this.forward(d);
  }

  private failed(e: unknown, ctl: AbortController): void {
    if (this.state === 'closed' || this.abort !== ctl) return;
    this.abort = undefined;
    const reason: UpstreamReason = isUpstreamError(e) ? e.reason : 'protocol';
    if (reason === 'aborted') return;
    this.relay.stats.upstreamErrors[reason]++;
    this.relay.stats.dropped += this.pending.length;
    this.dropPending();
    this.state = 'failed';
    this.failedAt = this.now;
    if (isFdExhaustion(e)) {
      const st = this.relay.stats;
      st.refusedFds = (st.refusedFds ?? 0) + 1;
      this.relay.fdLog.hit(() => ({ flowsOpen: st.flowsOpen, refused: st.refusedFds }));
      this.icmp(ICMP_UNREACH_HOST);
      return;
    }
    this.log('association failed', e instanceof Error ? e.message : String(e));
    const code = icmpCodeFor(reason);
    if (code !== undefined) this.icmp(code);
  }

  /** Empty the queue of datagrams waiting for the association; its bytes go back to the budget. */
  private dropPending(): void {
    const b = this.relay.o.budget;
    if (b !== undefined && this.pendingBytes > 0) {
      b.give(this.pendingBytes);
      b.held(-this.pendingBytes);
    }
    this.pending = [];
    this.pendingBytes = 0;
  }

  private icmp(code: number): void {
    const now = this.now;
    if (now - this.lastIcmpAt < ICMP_INTERVAL_MS) return;
    this.lastIcmpAt = now;
    this.relay.unreachable(this.flow, code);
  }

  private log(msg: string, detail: string): void {
    const l = this.relay.o.logger;
    if (l.isLevelEnabled('debug')) l.debug({ flow: this.flow.id, dst: destinationText(this.dst), outbound: this.outbound.name, detail }, msg);
  }

  onDatagram(payload: Uint8Array): void {
    if (this.flow.dstPort === 53 && this.relay.answeredProbe(this.flow, payload)) return;
    const s = this.relay.stats;
    switch (this.state) {
      case 'open':
        this.forward(payload);
        return;
      case 'opening': {
        const o = this.relay.o;
        if (this.pending.length >= o.maxPendingDatagrams || this.pendingBytes + payload.length > o.maxPendingBytes) {
          s.dropped++;
          return;
        }
        const b = o.budget;
        if (b !== undefined) {
          // Queued bytes come out of the shared budget; a datagram it cannot cover is dropped.
          const got = b.take(payload.length);
          if (got < payload.length) {
            b.give(got);
            s.dropped++;
            return;
          }
          b.held(payload.length);
        }
        this.pending.push(payload.slice());
        this.pendingBytes += payload.length;
        return;
      }
      case 'failed':
        if (this.now - this.failedAt >= this.relay.o.retryAfterMs) {
          this.open();
          this.onDatagram(payload);
          return;
        }
        s.dropped++;
        return;
      case 'closed':
        return;
    }
  }

  private forward(payload: Uint8Array): void {
    const s = this.relay.stats;
    if (this.assoc!.send(this.dst, payload)) {
      s.datagramsUp++;
      s.bytesUp += payload.length;
    } else {
      s.dropped++;
    }
  }

  onClosed(_reason: UdpCloseReason): void {
    if (this.state === 'closed') return;
    if (this.assoc !== undefined) this.relay.stats.associations--;
    this.state = 'closed';
    this.abort?.abort();
    this.abort = undefined;
    this.assoc?.close();
    this.assoc = undefined;
    this.dropPending();
    this.relay.ended(this);
  }

  info(now: number): UdpFlowInfo {
    return describe(this.flow, this.outbound.name, this.state, now, this.host);
  }
}

/** A flow to port 53 while hijacking: each datagram is a query for the resolver. */
class DnsHijackFlow implements RelayFlow {
  private inFlight = 0;
  private closed = false;

  constructor(
    private readonly relay: UdpRelay,
    readonly flow: UdpFlow,
    private readonly dns: DnsAnswerer,
  ) {}

  onDatagram(payload: Uint8Array): void {
    if (this.relay.answeredProbe(this.flow, payload)) return;
    const stats = this.relay.stats;
    stats.dnsQueries++;
    stats.datagramsUp++;
    stats.bytesUp += payload.length;
    // An answer known at once (a fake address) is staged now, in this read batch: no promise, no
    // copies. The flow was marked active by this very datagram.
    const buf = this.relay.answerBuf;
    const n = this.dns.answerNow?.(payload, buf) ?? 0;
    if (n > 0) {
      stats.dnsAnswered++;
      stats.datagramsDown++;
      stats.bytesDown += n;
      const f = this.flow;
      this.relay.o.stack.sendDatagram(f.dstIp, f.dstPort, f.srcIp, f.srcPort, buf.subarray(0, n));
      return;
    }
    const query = payload.slice();
    const quote = this.flow.copyQuote();
    this.inFlight++;
    void this.dns.resolve(query).then((r) => {
      this.inFlight--;
      const f = this.flow;
      const stack = this.relay.o.stack;
      if (r.kind === 'answer') {
        stats.dnsAnswered++;
        stats.datagramsDown++;
        stats.bytesDown += r.answer.length;
        // Owed even if the flow expired while we asked: the app is waiting for it.
        if (!this.closed) stack.table.touch(f);
        stack.sendDatagram(f.dstIp, f.dstPort, f.srcIp, f.srcPort, r.answer);
        return;
      }
      if (r.kind === 'drop') return;
      stats.dnsFailed++;
      stats.upstreamErrors[r.reason]++;
      const code = icmpCodeFor(r.reason);
      if (code !== undefined) {
        this.relay.unreachable(f, code, quote);
      } else if (r.reason === 'timeout') {
        // The upstream said nothing in time: tell the stub now instead of letting it wait.
        const q = DnsMessage.parse(query);
        if (q !== undefined) stack.sendDatagram(f.dstIp, f.dstPort, f.srcIp, f.srcPort, errorResponse(q, DNS_RCODE_SERVFAIL));
      }
    });
  }

  onClosed(): void {
    this.closed = true;
    this.relay.ended(this);
  }

  info(now: number): UdpFlowInfo {
    return describe(this.flow, 'dns', this.inFlight > 0 ? 'resolving' : 'idle', now);
  }
}
