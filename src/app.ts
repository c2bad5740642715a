/**
 * The composition root: the only place that builds the real TUN link, the route runner, the
 * logger and the clock. Everything below receives them, so tests pass fakes. `startTunroute`
 * is also the embedding API for other Node programs.
 */
import { writeFileSync } from 'node:fs';
import type { Config } from './config/schema.js';
import { appSources } from './routes/apps.js';
import { createLogger, type Logger } from './logger.js';
import type { Link } from './link/link.js';
import type { RoutePlan } from './routes/plan.js';
import { ipBatchRunner, type IpRunner } from './routes/apply.js';
import { RouteManager, type RouteWatcher, type RunAs } from './routes/manager.js';
import type { HostProbe } from './routes/host.js';
import type { DispatcherStats } from './stack/dispatcher.js';
import type { TcpFlowInfo, TcpRelayOptions, TcpRelayStats } from './relay/tcp-relay.js';
import type { UdpStackStats } from './stack/udp/index.js';
import type { UdpFlowInfo, UdpRelayStats } from './relay/udp-relay.js';
import type { DnsOverTcpStats } from './relay/tcp-dns.js';
import type { ReassemblyStats } from './stack/ip-reassembly.js';
import { TerminatingEngine } from './relay/engine.js';
import type { ProbeBook } from './relay/probes.js';
import { Router } from './router/router.js';
import { BlockOutbound } from './outbound/block.js';
import { Socks5UdpOutbound } from './outbound/socks5-udp.js';
import { HttpOutbound } from './outbound/http.js';
import type { ProxyUrl } from './outbound/proxy-url.js';
import type { DnsResolverStats, FakeIpPool } from './dns/index.js';
import { canonicalDomain } from './net/domain.js';
import type { FakeIpReply } from './control/protocol.js';
import { buildDns, tunnelDnsServers } from './dns-setup.js';
import { cidrToString, ipToU32, u32ToIp } from './net/ipv4.js';
import type { Outbound } from './outbound/outbound.js';
import { BLOCK_OUTBOUND, PROXY_OUTBOUND } from './config/schema.js';
import { monotonicClock, type Clock } from './clock.js';
import { TUNROUTE_VERSION } from './version.js';
import { type TunnelStatus } from './control/index.js';
import { nonZeroCounts, peerInfoOf } from './control/peer-info.js';
import { expandTunnels, tunnelSpecsOf } from './config/tunnels.js';
import { openWireguardTunnels, tunnelForwardHook } from './outbound/wireguard.js';
import type { TunnelStats, WireguardTunnel } from './wireguard/client-tunnel.js';
import { raiseNofile, socketOwnerLookup, type NofileLimits } from './native/limits.js';
import { deriveFlowLimits, flowLimitsFields, flowLimitsMessage } from './relay/flow-limits.js';
import { explainDestination, parseDestination, type WhyAnswer } from './routes/why.js';
import type { NetEventRecord } from './routes/net-change.js';
import { LiveRouter, Reconfigurer, type ReloadSummary } from './reconfigure.js';

export { TUNROUTE_VERSION };

export interface TunrouteDeps {
  logger?: Logger;
  /** Opens the device; the default opens the real TUN through the native addon. */
  openLink?: (config: Config, logger: Logger) => Promise<Link>;
  ipRunner?: IpRunner;
  /** Reads the default route, LAN, upstream addresses and CIDR files; default: this host. */
  routeHost?: HostProbe;
  /** Start the route watchdog process (default config.routes.watchdog). */
  watchdog?: boolean;
  /** Follow default-route changes (default `ip monitor`; false: do not). */
  watchRoutes?: RouteWatcher | false;
  clock?: Clock;
  /**
   * The user this process will become once started (src/privileges.ts): its watchdog and route
   * monitor run as that user, and the device's dir of the state dir is handed to it. Becoming
   * it is the caller's step (`runUp`): an embedding program decides about its own process.
   */
  runAs?: RunAs;
  /** Raises the open-file limit and reports it (default: the addon's; undefined: unknown). */
  raiseNofile?: () => NofileLimits | undefined;
  /** The uid owning an app's socket (default: the addon's sock_diag lookup). */
  socketOwner?: TcpRelayOptions['socketOwner'];
}

/** Everything a running instance counts, for logs and `status`. */
export interface TunrouteStats {
  packets: DispatcherStats;
  tcp: TcpRelayStats;
  udp: { stack: UdpStackStats; relay: UdpRelayStats; fragments: ReassemblyStats; dns?: DnsResolverStats };
  /** DNS over TCP caught while hijacking (relay/tcp-dns.ts). */
  dnsTcp?: DnsOverTcpStats;
  outbounds: Record<string, Outbound['stats']>;
  /** WireGuard tunnels by name (packets forwarded, peers, handshakes, drops). */
  tunnels: Record<string, TunnelStats>;
}

export interface RunningTunroute {
  readonly link: Link;
  /** The config as it runs: tunnels expanded into outbounds and rules, the fake-IP range routed. */
  readonly config: Config;
  readonly plan: RoutePlan;
  stats(): TunrouteStats;
  flows(): TcpFlowInfo[];
  udpFlows(): UdpFlowInfo[];
  /** The WireGuard tunnels as `status` lists them. */
  tunnels(): TunnelStatus[];
  /** `tunroute verify`'s marked probes (the control socket's `probe`). */
  readonly probes: ProbeBook;
  /** What the fake-IP table holds for a name or an address (`tunroute why`); dns.mode fakeip only. */
  fakeIpEntry(nameOrAddress: string): FakeIpReply;
  /** Close a flow by the id `flows()` / `udpFlows()` give it: TCP gets RST, UDP ends. False: none open. */
  closeFlow(proto: 'tcp' | 'udp', id: number): boolean;
  /** The outbounds by name and kind (WireGuard tunnels included), and whether they carry UDP. */
  outbounds(): Array<{ name: string; kind: string; udp: boolean }>;
  /** Route plans re-applied since start (a new default route) and the route changes they made. */
  routeFollows(): { replans: number; added: number; removed: number };
  /** `tunroute why` against the running plan and rules. */
  why(addr: string, proto: 'tcp' | 'udp' | 'icmp'): WhyAnswer;
  /** The fake-IP table: [name, address], least recently used first (empty without dns.mode fakeip). */
  dnsAnswers(): Array<[string, string]>;
  /** The last network events (links, addresses, routes, resumes, upstreams, reloads), oldest first. */
  networkEvents(): NetEventRecord[];
  /**
   * Apply a new config without a restart: only the difference (routes through the journal,
   * outbounds and rules in place); flows whose outbound stays keep running, the others are
   * reset. Throws a TunrouteError with one sentence, and changes nothing, when the config is
   * refused. `files`: CIDR files the caller read (`tunroute reload` reads them as root).
   */
  reload(next: Config, files?: ReadonlyMap<string, string>): Promise<ReloadSummary>;
  /** Removes the routes this instance added, then closes the device. Idempotent. */
  stop(): Promise<void>;
}

async function openTunLink(config: Config, logger: Logger): Promise<Link> {
  const { TunLink } = await import('./link/tun.js');
  return TunLink.open({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, logger });
}

/** The outbounds a config names, keyed by name; `block` always exists. */
export function buildOutbounds(config: Config, log: Logger, clock: Clock): Map<string, Outbound> {
  const out = new Map<string, Outbound>([[BLOCK_OUTBOUND, new BlockOutbound(BLOCK_OUTBOUND)]]);
  const proxy = (name: string, url: ProxyUrl, connectTimeoutMs?: number): Outbound => {
    const t = connectTimeoutMs === undefined ? {} : { connectTimeoutMs };
    return url.scheme === 'http' ? new HttpOutbound({ name, proxy: url, ...t, logger: log, clock }) : new Socks5UdpOutbound({ name, proxy: url, ...t, logger: log, clock });
  };
  if (config.proxy !== undefined) out.set(PROXY_OUTBOUND, proxy(PROXY_OUTBOUND, config.proxy));
  for (const o of config.outbounds) {
    if (o.type === 'block') out.set(o.name, new BlockOutbound(o.name));
    // (wireguard outbounds forward packets instead of flows: see openWireguardTunnels below)
    else if (o.type === 'socks5' || o.type === 'http') out.set(o.name, proxy(o.name, o.url, o.connectTimeoutMs));
  }
  return out;
}

export function buildRouter(config: Config): Router {
  const defaultOutbound = config.defaultOutbound ?? (config.proxy !== undefined ? PROXY_OUTBOUND : BLOCK_OUTBOUND);
  return new Router({ rules: config.rules, defaultOutbound, source: 'rules' });
}

export async function startTunroute(config: Config, deps: TunrouteDeps = {}): Promise<RunningTunroute> {
  const log = deps.logger ?? createLogger(config.log.level, config.log.format);
  const runner = deps.ipRunner ?? ipBatchRunner;
  const clock = deps.clock ?? monotonicClock;
  // Tunnels first: their AllowedIPs become routes and rules, their endpoints stay out of the
  // device (resolved and pinned now), before anything is planned (see config/tunnels.ts).
  const original = config;
  const expanded = await expandTunnels(config, deps.routeHost?.resolve);
  config = expanded.config;
  for (const note of expanded.notes) log.warn(note);
  // Everything that can fail on a bad config is built before the device exists. The route
  // manager reads the host, plans, and undoes a stale journal of a dead tunroute; the outbounds
  // then connect to the upstream addresses the plan keeps out of the tunnel (names pinned).
  // (The engine, and so the reconfigurer, exist only later; a network change before them is
  // followed by the routes alone.)
  const later: { reconf?: Reconfigurer } = {};
  const routes = await RouteManager.prepare({
    config,
    log,
    runner,
    host: deps.routeHost,
    watchdog: deps.watchdog,
    watchRoutes: deps.watchRoutes,
    runAs: deps.runAs,
    onUpstreams: (changes, pinned) => later.reconf?.upstreamsMoved(changes, pinned),
    onResolveAgain: () => later.reconf?.resolveAgain() ?? Promise.resolve(),
  });
  // Both are replaced in place by a reload (and the outbounds by an upstream's new address):
  // the relays look them up per new flow.
  const build = { outbounds: (c: Config) => buildOutbounds(c, log, clock), router: buildRouter };
  const outbounds = build.outbounds(routes.config);
  const live = new LiveRouter(buildRouter(config));
  // Per-app routing's source addresses (routes/apps.ts): never handed out as fake addresses, and
  // flows from them go to their outbound before any rule.
  const apps = routes.plan.apps;
  const sources = apps === undefined ? undefined : appSources(apps);
  const routing = {
    route: live.route,
    routeName: live.routeName,
    ...(sources === undefined ? {} : { routeSource: (src: number): string | undefined => sources.get(src) }),
  };
  const dnsSetup = buildDns({ reserved: apps?.outbounds.map((o) => o.addr) ?? [], config, dnsPlan: routes.plan.dns, router: routing, outbounds, defaultDevice: () => routes.defaultDevice, clock, log });
  const fakeIp = dnsSetup?.fakeIp;
  for (const r of routes.plan.dns.resolvers) if (r.routed) log.info({ resolver: r.ip }, 'system resolver routed into the device: its queries are answered by tunroute');
  if (dnsSetup?.direct !== undefined) log.info({ resolver: dnsSetup.direct.upstream }, 'split tunnel by domain: names that go direct are asked of the system resolver, out of the default route\'s device');
  // A start that fails from here on must not leave the table's save timer behind (an embedder's process lives on).
  const link = await (deps.openLink ?? openTunLink)(config, log).catch((e: unknown) => {
    dnsSetup?.close();
    throw e;
  });
  // Descriptors before the flows open any: the flow limits follow from them. (After the device:
  // its errors — not root, no /dev/net/tun — are the ones a user needs to see first.)
  const nofile = (deps.raiseNofile ?? raiseNofile)();
  const limits = deriveFlowLimits({ nofile: nofile?.soft, tcpMaxFlows: config.tcp.maxFlows, udpMaxFlows: config.udp.maxFlows, perUidFlows: config.tcp.perUidFlows });
  log.info(flowLimitsFields(limits, nofile, config.tcp.memoryBytes), flowLimitsMessage(limits, nofile, config.tcp.maxFlows, config.udp.maxFlows, config.tcp.memoryBytes));
  let tunnels = new Map<string, WireguardTunnel>();
  try {
    tunnels = await openWireguardTunnels(tunnelSpecsOf(config), { link, clock, logger: log, deviceAddress: config.tun.address.addr });
    if (apps !== undefined && apps.outbounds.length > 0) looseReversePath(link.name, log);
    await routes.apply();
  } catch (e) {
    for (const t of tunnels.values()) t.close();
    link.close();
    dnsSetup?.close();
    throw e;
  }
  const engine = new TerminatingEngine({
    link,
    router: routing,
    outbounds,
    clock,
    logger: log,
    icmp: config.icmp,
    tcp: { ...config.tcp, maxFlows: limits.tcp, perUidFlows: limits.perUid },
    udp: { ...config.udp, maxFlows: limits.udp },
    socketOwner: limits.perUid > 0 ? (deps.socketOwner ?? socketOwnerLookup()) : undefined,
    fragments: config.fragments,
    dns: dnsSetup?.upstream,
    answerer: dnsSetup?.answerer,
    fakeIp,
    forward: tunnelForwardHook(live.route, tunnels, tunnelDnsServers(config)),
  });
  const reconf = new Reconfigurer({ routes, outbounds, engine, tunnels, build, log, resolve: deps.routeHost?.resolve }, live, config, original);
  later.reconf = reconf;
  for (const t of tunnels.values()) {
    t.start();
    log.info({ tunnel: t.name, listenPort: t.listenPort, mtu: t.mtu, peers: t.stats().peers.map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIPs: p.allowedIPs })) }, 'tunnel up');
  }
  const stats = (): TunrouteStats => {
    const e = engine.stats();
    return {
      packets: e.packets,
      tcp: e.tcp,
      udp: { stack: e.udpStack, relay: e.udp, fragments: e.fragments, dns: e.dns },
      dnsTcp: e.dnsTcp,
      outbounds: e.outbounds,
      tunnels: Object.fromEntries([...tunnels].map(([n, t]) => [n, t.stats()])),
    };
  };

  let stopping: Promise<void> | undefined;
  return {
    link,
    config,
    get plan() {
      return routes.plan;
    },
    stats,
    flows: () => engine.flows(),
    udpFlows: () => engine.udpFlows(),
    probes: engine.probes,
    tunnels: () => [...tunnels.values()].map((t) => tunnelStatusOf(t.stats())),
    fakeIpEntry: (arg) => fakeIpEntryOf(fakeIp?.pool, arg),
    closeFlow: (proto, id) => engine.closeFlow(proto, id),
    outbounds: () => [
      ...[...outbounds.values()].map((o) => ({ name: o.name, kind: o.kind, udp: o.openUdp !== undefined })),
      ...[...tunnels.keys()].map((name) => ({ name, kind: 'wireguard', udp: true })),
    ],
    routeFollows: () => ({ ...routes.followStats }),
    why: (addr, proto) => {
      const plan = routes.plan;
      return explainDestination(plan.explain, parseDestination(addr, proto), live.router, undefined, plan.prefixes);
    },
    dnsAnswers: () => (fakeIp === undefined ? [] : fakeIp.pool.toJSON().entries.map(([ip, name]): [string, string] => [name, ip])),
    networkEvents: () => routes.networkEvents(),
    reload: (next, files) => reconf.reload(next, files),
    stop() {
      stopping ??= (async () => {
        await engine.stop(); // the RSTs go out before the tunnels and the device close
        dnsSetup?.close(); // after the flows let go of their addresses (the table is saved)
        const tunnelStats = Object.fromEntries([...tunnels].map(([n, t]) => [n, t.stats()]));
        for (const t of tunnels.values()) t.close();
        await routes.stop();
        link.close();
        const s = stats();
        log.info({ link: link.stats, ...s.packets, tcp: s.tcp, udp: s.udp, ...(s.dnsTcp === undefined ? {} : { dnsTcp: s.dnsTcp }), tunnels: tunnelStats }, 'tunroute stopped; packet counters');
      })();
      return stopping;
    },
  };
}

/**
 * Replies to a program sent through `exec --outbound` come back on the device from addresses
 * the main table routes elsewhere (its socket took its source address from the main table's
 * route): loose reverse-path filtering on the device lets them in. The setting lives and dies
 * with the device.
 */
function looseReversePath(dev: string, log: Logger): void {
  try {
    writeFileSync(`/proc/sys/net/ipv4/conf/${dev}/rp_filter`, '2');
  } catch (e) {
    log.warn({ dev, err: e }, 'cannot set loose reverse-path filtering on the device: replies to tunroute exec --outbound may be dropped');
  }
}

/** The pool's entry for a name or an address, as the control socket's `fakeip` answers it. */
function fakeIpEntryOf(pool: FakeIpPool | undefined, arg: string): FakeIpReply {
  if (pool === undefined) return { enabled: false };
  const range = cidrToString(pool.cidr);
  const ip = ipToU32(arg);
  if (ip !== undefined) {
    const name = pool.contains(ip) ? pool.nameOf(ip) : undefined;
    return name === undefined ? { enabled: true, range, ip: arg } : { enabled: true, range, ip: arg, name, inUse: pool.pinned(ip) };
  }
  const name = canonicalDomain(arg);
  const held = name === undefined ? undefined : pool.peek(name);
  if (name === undefined || held === undefined) return { enabled: true, range, ...(name === undefined ? {} : { name }) };
  return { enabled: true, range, name, ip: u32ToIp(held), inUse: pool.pinned(held) };
}

/** A tunnel's counters, cut to what `status` shows (the full set is in the final log line). */
function tunnelStatusOf(t: TunnelStats): TunnelStatus {
  return {
    name: t.name,
    listenPort: t.listenPort,
    mtu: t.mtu,
    txPackets: t.txPackets,
    txBytes: t.txBytes,
    rxPackets: t.rxPackets,
    rxBytes: t.rxBytes,
    drops: nonZeroCounts(t.dropped, t.deviceDropped, t.peerDropped, { udp_send: t.udpSendDrops }),
    peers: t.peers.map((p) => peerInfoOf(p)),
  };
}
