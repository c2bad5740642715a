/**
 * The terminating engine: what turns the packets of a link into flows of outbounds, built the
 * same way for `tunroute up` (the link is tun0) and for `tunroute server` (the link is a pipe
 * into the WireGuard tunnel):
 *
 *   link ─► PacketDispatcher ─ forward hook (tunnels) ─► taken whole, nothing terminated
 *             │   │   └─ ICMP echo ─► reply or drop
 *             │   └─ fragments ─► Ipv4Reassembler ─► back into the dispatcher
 *          TcpStack ─► TcpRelay ─┐     (TCP to :53 while hijacking: DnsOverTcp, answered here)
 *          UdpStack ─► UdpRelay ─┴─ Router ─► outbounds (DNS hijack: the resolver)
 *
 * A 1 s sweep expires idle UDP flows and stale fragments even when no packet touches them.
 * The engine owns the outbounds and the resolver it is given: stop() closes them. It never
 * closes the link: the caller does, after what must still go out through it.
 */
import type { Clock } from '../clock.js';
import type { DnsAnswerer, DnsResolver, DnsResolverStats } from '../dns/index.js';
import type { FakeIpPool, FakeIpStats } from '../dns/fake-ip.js';
import type { FakeIpResolver, FakeIpResolverStats } from '../dns/fake-ip-resolver.js';
import type { Link } from '../link/link.js';
import type { Logger } from '../logger.js';
import type { Outbound, OutboundStats } from '../outbound/outbound.js';
import type { FlowRouter } from './flow-route.js';
import { PacketDispatcher, type DispatcherStats, type ForwardHandler } from '../stack/dispatcher.js';
import { Ipv4Reassembler, type ReassemblyOptions, type ReassemblyStats } from '../stack/ip-reassembly.js';
import { TcpStack } from '../stack/tcp-stack.js';
import { UdpStack, type UdpStackOptions, type UdpStackStats } from '../stack/udp/udp-stack.js';
import { ProbeBook } from './probes.js';
import { TcpRelay, type FlowFacts, type TcpFlowInfo, type TcpRelayOptions, type TcpRelayStats } from './tcp-relay.js';
import { BufferBudget } from './buffer-budget.js';
import { UdpRelay, type UdpFlowInfo, type UdpRelayStats } from './udp-relay.js';
import { DnsOverTcp, type DnsOverTcpStats } from './tcp-dns.js';

/** How often idle UDP flows and stale fragments are looked for. */
const SWEEP_INTERVAL_MS = 1000;
/** TIME-WAIT connections the TCP table holds beyond the live flows the relay counts. */
const TIME_WAIT_HEADROOM = 1024;
/** limits.tcp.memoryBytes's default (config/fields.ts). */
const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;

export interface EngineOptions {
  link: Link;
  /** The outbound for each new flow (a Router, or the server's guard around one). */
  router: FlowRouter;
  /** By name; every name the router can answer must be here. Closed by stop(). */
  outbounds: ReadonlyMap<string, Outbound>;
  clock: Clock;
  logger: Logger;
  /** Echo requests to any address: answered, or dropped silently. */
  icmp: 'reply' | 'drop';
  tcp: { maxFlows: number; bufferBytes?: number; memoryBytes?: number; perUidFlows?: number };
  /** The uid owning an app's socket (sock_diag), for limits.tcp.perUidFlows. */
  socketOwner?: TcpRelayOptions['socketOwner'];
  /** UDP flow table limits and timeouts. */
  udp?: UdpStackOptions['table'];
  /** Fragment reassembly limits (defaults: ip-reassembly.ts). */
  fragments?: Omit<ReassemblyOptions, 'clock' | 'onTimeout'>;
  /** DNS hijack: queries to port 53 answered by this resolver. Closed by stop(). */
  dns?: DnsResolver;
  /**
   * What answers caught queries when it is not `dns` alone: the outermost answerer (tunnels'
   * names, the fake-IP resolver, split DNS in front of `dns`); default the fake-IP resolver, else `dns`.
   */
  answerer?: DnsAnswerer;
  /** dns.mode fakeip: queries answered by this (in front of `dns`), flows to its pool carried by name. */
  fakeIp?: { resolver: FakeIpResolver; pool: FakeIpPool };
  /** Packets taken before anything is terminated (WireGuard tunnels of `up`). */
  forward?: ForwardHandler;
}

/** Everything the engine counts; copies, safe to keep. */
export interface EngineStats {
  packets: DispatcherStats;
  tcp: TcpRelayStats;
  udpStack: UdpStackStats;
  udp: UdpRelayStats;
  fragments: ReassemblyStats;
  dns?: DnsResolverStats;
  /** DNS over TCP caught while hijacking (tcp-dns.ts). */
  dnsTcp?: DnsOverTcpStats;
  fakeIp?: FakeIpResolverStats & { pool: FakeIpStats };
  outbounds: Record<string, OutboundStats>;
}

export class TerminatingEngine {
  readonly tcpStack: TcpStack;
  readonly tcp: TcpRelay;
  readonly budget: BufferBudget;
  readonly udpStack: UdpStack;
  readonly udp: UdpRelay;
  readonly reassembler: Ipv4Reassembler;
  readonly dispatcher: PacketDispatcher;
  /** `tunroute verify`'s marked probes (control command "probe"). */
  readonly probes: ProbeBook;
  /** DNS over TCP while hijacking; undefined with DNS off. */
  readonly dnsTcp: DnsOverTcp | undefined;
  private readonly outbounds: ReadonlyMap<string, Outbound>;
  private readonly dns: DnsResolver | undefined;
  private readonly fakeIp: EngineOptions['fakeIp'];
  private readonly sweeper: NodeJS.Timeout;
  private stopping: Promise<void> | undefined;

  constructor(o: EngineOptions) {
    const { link, router, outbounds, clock, logger } = o;
    this.outbounds = outbounds;
    this.dns = o.dns;
    this.fakeIp = o.fakeIp;
    this.probes = new ProbeBook(clock);
    this.tcpStack = new TcpStack({ link, clock, logger, maxConnections: o.tcp.maxFlows + TIME_WAIT_HEADROOM });
    // One budget for the buffers of every flow, TCP and UDP (buffer-budget.ts).
    this.budget = new BufferBudget(o.tcp.memoryBytes ?? DEFAULT_MEMORY_BYTES, o.tcp.maxFlows);
    // The answerer of caught queries, the same for UDP and TCP.
    const answerer = o.answerer ?? o.fakeIp?.resolver ?? o.dns;
    this.dnsTcp = answerer === undefined ? undefined : new DnsOverTcp({ stack: this.tcpStack, dns: answerer, clock, logger });
    this.tcp = new TcpRelay({
      stack: this.tcpStack,
      router,
      outbounds,
      clock,
      logger,
      maxFlows: o.tcp.maxFlows,
      bufferBytes: o.tcp.bufferBytes,
      budget: this.budget,
      perUidFlows: o.tcp.perUidFlows,
      socketOwner: o.socketOwner,
      names: o.fakeIp?.pool,
      probes: this.probes,
      dnsTcp: this.dnsTcp,
    });
    this.tcpStack.setSynHandler(this.tcp.onSyn);
    this.udpStack = new UdpStack({ link, clock, logger, table: o.udp });
    this.udp = new UdpRelay({ stack: this.udpStack, router, outbounds, clock, logger, dns: answerer, names: o.fakeIp?.pool, budget: this.budget, probes: this.probes });
    this.udpStack.setFlowHandler(this.udp.onFlow);
    this.reassembler = new Ipv4Reassembler({ clock, ...o.fragments });
    this.dispatcher = new PacketDispatcher({ link, icmp: o.icmp, logger, tcp: this.tcpStack.input, udp: this.udpStack.input, reassembler: this.reassembler, forward: o.forward });
    // Plain A queries for names that get a fake address are answered at the device, with no
    // packet handed up (native/fake_dns.c): the fake-IP answer of a sequential client's query
    // costs a read and a write. Not while verify's DNS probe is armed (it is answered here),
    // nor with WireGuard tunnels, which take packets before anything is answered.
    const front: DnsAnswerer | undefined = o.fakeIp === undefined ? undefined : (o.answerer ?? o.fakeIp.resolver);
    const addressNow = front?.addressNow?.bind(front);
    if (addressNow !== undefined && o.fakeIp !== undefined && o.forward === undefined && link.answerQueries !== undefined) {
      link.answerQueries((name, queryBytes, answerBytes) => {
        if (this.probes.dnsArmed) return 0;
        const ip = addressNow(name);
        if (ip === undefined) return 0;
        this.dispatcher.countAnsweredAtLink();
        this.udpStack.countAnsweredAtLink(queryBytes, answerBytes);
        this.udp.countAnsweredAtLink(queryBytes, answerBytes);
        return ip;
      }, o.fakeIp.resolver.ttl);
    }
    link.onReceive((batch) => {
      // UDP replies the batch produces at once (fake-IP DNS answers) leave right after it, in
      // one write, not a loop turn later: a sequential client waits for exactly this.
      this.udpStack.batchStart();
      try {
        this.dispatcher.onBatch(batch);
      } finally {
        this.udpStack.batchEnd();
      }
    });
    this.sweeper = setInterval(() => {
      this.udpStack.sweep();
      this.reassembler.sweep();
      this.dnsTcp?.sweep();
    }, SWEEP_INTERVAL_MS);
    // The link and the sockets keep the process alive, not the sweep.
    this.sweeper.unref();
  }

  stats(): EngineStats {
    return {
      packets: this.dispatcher.stats(),
      tcp: { ...this.tcp.stats, upstreamErrors: { ...this.tcp.stats.upstreamErrors }, memory: this.tcp.budget.stats() },
      udpStack: this.udpStack.stats(),
      udp: { ...this.udp.stats, upstreamErrors: { ...this.udp.stats.upstreamErrors } },
      fragments: { ...this.reassembler.stats },
      dns: this.dns && { ...this.dns.stats },
      dnsTcp: this.dnsTcp && { ...this.dnsTcp.stats },
      fakeIp: this.fakeIp && { ...this.fakeIp.resolver.stats, pool: this.fakeIp.pool.stats },
      outbounds: Object.fromEntries([...this.outbounds].map(([n, o]) => [n, structuredClone(o.stats)])),
    };
  }

  flows(): TcpFlowInfo[] {
    const flows = this.tcp.flowInfo();
    return this.dnsTcp === undefined ? flows : flows.concat(this.dnsTcp.flowInfo());
  }

  udpFlows(): UdpFlowInfo[] {
    return this.udp.flowInfo();
  }

  /** Close one flow by its id as `flows()` / `udpFlows()` list it: TCP gets RST, UDP ends. */
  closeFlow(proto: 'tcp' | 'udp', id: number): boolean {
    if (proto === 'udp') return this.udp.close(id);
    return this.tcp.close(id) || this.dnsTcp?.close(id) === true;
  }

  /**
   * Reset the TCP flows and end the UDP flows `dead` picks (a path that died, an outbound a
   * reload removed or changed); the others keep running.
   */
  resetFlows(dead: (f: FlowFacts) => boolean): { tcp: number; udp: number } {
    const tcp = this.tcp.resetWhere(dead);
    this.tcpStack.poll(); // the RSTs go out now, not at the next packet
    return { tcp, udp: this.udp.resetWhere(dead) };
  }

  /**
   * Reset every TCP flow and end every UDP flow, then close the outbounds. The RSTs are written
   * to the link before this returns: the caller closes the link (and erases tunnel keys) after.
   * Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.sweeper);
      this.tcp.closeAll();
      this.dnsTcp?.closeAll();
      this.tcpStack.poll();
      this.tcpStack.close();
      this.udp.closeAll();
      this.udpStack.close();
      this.dns?.close();
      await Promise.all([...this.outbounds.values()].map((o) => o.close()));
    })();
    return this.stopping;
  }
}
