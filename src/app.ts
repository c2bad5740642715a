/**
 * The composition root: the only place that builds the real TUN link, the route runner, the
 * logger and the clock. Everything below receives them, so tests pass fakes. `startTunroute`
 * is also the embedding API for other Node programs.
 */
import { writeFileSync } from 'node:fs';
import type { Config } from './config/schema.js';
import { userInfo } from 'node:os';
import { appSources } from './routes/apps.js';
import { loadConfig, parseConfigInput, type FlagValues } from './config/load.js';
import { TunrouteError } from './errors.js';
import { createLogger, resolveLogFormat, type Logger } from './logger.js';
import type { Link } from './link/link.js';
import type { RoutePlan } from './routes/plan.js';
import { ipBatchRunner, type IpRunner } from './routes/apply.js';
import { RouteManager, type RouteWatcher, type RunAs } from './routes/manager.js';
import { dropPrivileges, resolveRunAs } from './privileges.js';
import type { HostProbe } from './routes/host.js';
import { resolveStateDir } from './routes/journal.js';
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
import { runUntilSignal } from './run-until-signal.js';
import { TUNROUTE_VERSION } from './version.js';
import { upSummary } from './up-summary.js';
import { DEFAULT_CONTROL_PATH, startControlServer, statusSnapshotOf, type TunnelStatus } from './control/index.js';
import { MAX_RELOAD_REQUEST_BYTES } from './control/protocol.js';
import { nonZeroCounts, peerInfoOf } from './control/peer-info.js';
import { expandTunnels, tunnelSpecsOf } from './config/tunnels.js';
import { openWireguardTunnels, tunnelForwardHook } from './outbound/wireguard.js';
import { formatKey } from './wireguard/keys.js';
import type { TunnelStats, WireguardTunnel } from './wireguard/client-tunnel.js';
import { raiseNofile, socketOwnerLookup, type NofileLimits } from './native/limits.js';
import { deriveFlowLimits, flowLimitsFields, flowLimitsMessage } from './relay/flow-limits.js';
import { explainDestination, parseDestination, type WhyAnswer } from './routes/why.js';
import { describePlanLines } from './routes/plan.js';
import type { ApiSource, LogTap } from './api/index.js';
import { diffConfigs, type ReloadDiff } from './config/reload-diff.js';
import type { FlowFacts } from './relay/tcp-relay.js';
import type { NetEventRecord, UpstreamChange } from './routes/net-change.js';

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

export interface ReloadSummary {
  readonly diff: ReloadDiff;
  readonly routes: { readonly added: number; readonly removed: number };
  /** Flows reset because their outbound was removed or changed, or the rules now send them elsewhere. */
  readonly reset: { readonly tcp: number; readonly udp: number };
}

/** One line for logs and for `tunroute reload`'s answer. */
export function describeReload(r: ReloadSummary): string {
  const o = r.diff.outbounds;
  if (!r.diff.any) return 'config unchanged: nothing to do';
  const parts = [
    `routes +${r.routes.added} -${r.routes.removed}`,
    ...(o.added.length > 0 ? [`outbounds added: ${o.added.join(', ')}`] : []),
    ...(o.removed.length > 0 ? [`removed: ${o.removed.join(', ')}`] : []),
    ...(o.changed.length > 0 ? [`changed: ${o.changed.join(', ')}`] : []),
    ...(r.diff.rules ? ['rules replaced'] : []),
    `${r.reset.tcp} TCP and ${r.reset.udp} UDP flows reset, the others kept`,
  ];
  return `reloaded: ${parts.join('; ')}`;
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
  // (The engine exists only later; a network change before it is followed by the routes alone.)
  let upstreamsMoved: (changes: readonly UpstreamChange[], pinned: Config) => void = () => undefined;
  let resolveAgain: () => Promise<void> = () => Promise.resolve();
  // The config as given (tunnel endpoints by name): what a network change resolves again.
  let given = original;
  const routes = await RouteManager.prepare({
    config,
    log,
    runner,
    host: deps.routeHost,
    watchdog: deps.watchdog,
    watchRoutes: deps.watchRoutes,
    runAs: deps.runAs,
    onUpstreams: (changes, pinned) => upstreamsMoved(changes, pinned),
    onResolveAgain: () => resolveAgain(),
  });
  // Both are replaced in place by a reload (and the outbounds by an upstream's new address):
  // the relays look them up per new flow.
  const outbounds = buildOutbounds(routes.config, log, clock);
  let router = buildRouter(config);
  // Per-app routing's source addresses (routes/apps.ts): never handed out as fake addresses, and
  // flows from them go to their outbound before any rule.
  const apps = routes.plan.apps;
  const sources = apps === undefined ? undefined : appSources(apps);
  const routing = {
    route: (dst: number, proto: number, port: number): string => router.route(dst, proto, port),
    routeName: (name: string, proto: number, port: number): string | undefined => router.routeName(name, proto, port),
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
    forward: tunnelForwardHook((dst, proto, port) => router.route(dst, proto, port), tunnels, tunnelDnsServers(config)),
  });

  /** Put `fresh` in place of the outbounds named, reset the flows `dead` picks, then close what was replaced. */
  const swap = (fresh: ReadonlyMap<string, Outbound | undefined>, dead: (f: FlowFacts) => boolean): { tcp: number; udp: number } => {
    const old: Outbound[] = [];
    for (const [name, o] of fresh) {
      const was = outbounds.get(name);
      if (was !== undefined) old.push(was);
      if (o === undefined) outbounds.delete(name);
      else outbounds.set(name, o);
    }
    const reset = engine.resetFlows((f) => old.includes(f.outbound) || dead(f));
    for (const o of old) void o.close();
    return reset;
  };

  // A network change: an upstream whose source address changed has dead connections (RST them,
  // the apps reconnect at once instead of hanging); one whose name now resolves elsewhere is
  // rebuilt to connect there.
  upstreamsMoved = (changes, pinned) => {
    const rebuilt = buildOutbounds(pinned, log, clock);
    const fresh = new Map<string, Outbound | undefined>();
    const movedOnly: Outbound[] = [];
    for (const c of changes) {
      const o = outbounds.get(c.upstream);
      if (o === undefined) continue; // a WireGuard tunnel: it roams by itself
      if (c.readdressed) fresh.set(c.upstream, rebuilt.get(c.upstream));
      else movedOnly.push(o);
    }
    for (const [n, o] of rebuilt) if (!fresh.has(n)) void o.close();
    const reset = swap(fresh, (f) => movedOnly.includes(f.outbound));
    if (reset.tcp + reset.udp > 0) log.info({ upstreams: changes.map((c) => c.upstream), ...reset }, 'flows through a moved upstream reset');
  };

  let running = config;
  let reloading: Promise<unknown> = Promise.resolve();

  // A WireGuard endpoint given by name that now resolves elsewhere: keep the new address out of
  // the device instead of the old one (routes, journal first), then send the tunnel there.
  resolveAgain = async () => {
    const byName = given.outbounds.some((o) => o.type === 'wireguard' && o.peers.some((p) => p.endpoint?.kind === 'name'));
    if (!byName) return;
    const again = (await expandTunnels(given, deps.routeHost?.resolve)).config;
    const endpointOf = (c: Config): Map<string, string> =>
      new Map(tunnelSpecsOf(c).flatMap((t) => t.peers.map((p): [string, string] => [`${t.name} ${formatKey(p.publicKey)}`, p.endpoint === undefined ? '' : `${p.endpoint.address}:${p.endpoint.port}`])));
    const was = endpointOf(running);
    const now = endpointOf(again);
    const moved = [...now].filter(([k, ep]) => was.get(k) !== ep && ep !== '');
    if (moved.length === 0) return;
    const run = reloading.then(async () => {
      await routes.reconfigure(again);
      running = again;
      for (const [k, ep] of moved) {
        const [tunnel, key] = k.split(' ');
        const [address, port] = ep.split(':');
        tunnels.get(tunnel)?.setPeerEndpoint(key, { address, port: Number(port) });
        routes.noteEvent('upstream', `tunnel ${tunnel} peer ${key.slice(0, 8)}… is now ${ep}`);
        log.info({ tunnel, peer: key, endpoint: ep }, `tunnel ${tunnel}: its endpoint name now resolves to ${ep}; the tunnel sends there, and that address is kept out of the device`);
      }
    });
    reloading = run.catch(() => undefined);
    await run;
  };
  const reload = async (input: Config, files?: ReadonlyMap<string, string>): Promise<ReloadSummary> => {
    const expandedNext = await expandTunnels(input, deps.routeHost?.resolve);
    const next = expandedNext.config;
    const verdict = diffConfigs(running, next);
    if (!verdict.ok) throw new TunrouteError('TR_BAD_CONFIG', `Reload refused: ${verdict.reason}.`);
    const diff = verdict.diff;
    // Everything that can fail first (rules that do not build, routes that do not plan or apply), then the swap.
    const nextRouter = diff.rules ? buildRouter(next) : router;
    let routeChange = { added: 0, removed: 0 };
    let pinned = routes.config;
    if (diff.routes || diff.outbounds.added.length + diff.outbounds.removed.length + diff.outbounds.changed.length > 0) {
      const r = await routes.reconfigure(next, files);
      pinned = r.config;
      routeChange = { added: r.added, removed: r.removed };
    }
    const built = buildOutbounds(pinned, log, clock);
    const fresh = new Map<string, Outbound | undefined>();
    for (const n of [...diff.outbounds.added, ...diff.outbounds.changed]) fresh.set(n, built.get(n));
    for (const n of diff.outbounds.removed) fresh.set(n, undefined);
    for (const [n, o] of built) if (!fresh.has(n)) void o.close();
    router = nextRouter;
    const routedElsewhere = (f: FlowFacts): boolean => {
      if (!diff.rules) return false;
      const proto = f.protocol;
      const now = (f.host === undefined ? undefined : router.routeName(f.host, proto, f.dstPort)) ?? router.route(f.dstIp, proto, f.dstPort);
      return now !== f.outbound.name;
    };
    const reset = swap(fresh, routedElsewhere);
    if (next.log.level !== running.log.level) log.level = next.log.level;
    running = next;
    given = input;
    for (const note of expandedNext.notes) log.warn(note);
    const summary: ReloadSummary = { diff, routes: routeChange, reset };
    routes.noteEvent('reload', describeReload(summary));
    log.info({ routes: routeChange, outbounds: diff.outbounds, rules: diff.rules, reset }, describeReload(summary));
    return summary;
  };
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
      return explainDestination(plan.explain, parseDestination(addr, proto), router, undefined, plan.prefixes);
    },
    dnsAnswers: () => (fakeIp === undefined ? [] : fakeIp.pool.toJSON().entries.map(([ip, name]): [string, string] => [name, ip])),
    networkEvents: () => routes.networkEvents(),
    reload(next, files) {
      // One reload at a time, in the order asked.
      const r = reloading.then(() => reload(next, files));
      reloading = r.catch(() => undefined);
      return r;
    },
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

/** What the dashboard and the Clash API read from a running `up` (src/api/source.ts). */
export function upApiSource(up: RunningTunroute, config: Config, info: { startedAt: Date }): ApiSource {
  const snapshot = (): ReturnType<ApiSource['snapshot']> =>
    statusSnapshotOf(up, { version: TUNROUTE_VERSION, address: cidrToString(config.tun.address), startedAt: info.startedAt });
  const defaultOutbound = buildRouter(up.config).defaultOutbound;
  return {
    role: 'up',
    version: TUNROUTE_VERSION,
    startedAt: info.startedAt,
    logLevel: config.log.level,
    snapshot,
    flows: () => up.flows(),
    udpFlows: () => up.udpFlows(),
    counters: () => {
      const s = up.stats();
      const tunnels = Object.values(s.tunnels);
      const f = up.routeFollows();
      return {
        bytesUp: s.tcp.bytesUp + s.udp.relay.bytesUp + tunnels.reduce((n, t) => n + t.txBytes, 0),
        bytesDown: s.tcp.bytesDown + s.udp.relay.bytesDown + tunnels.reduce((n, t) => n + t.rxBytes, 0),
        routeReplans: f.replans,
        routeChanges: f.added + f.removed,
        handshakes: tunnels.reduce((n, t) => n + t.peers.reduce((m, p) => m + p.counters.handshakesCompleted, 0), 0),
      };
    },
    outbounds: () => up.outbounds(),
    outboundStats: () => up.stats().outbounds,
    rules: () => ({ rules: up.config.rules, defaultOutbound }),
    closeFlow: (proto, id) => up.closeFlow(proto, id),
    planLines: () => [...describePlanLines(up.plan)],
    why: (addr, proto) => up.why(addr, proto),
    dnsAnswers: () => up.dnsAnswers(),
  };
}

/** `tunroute up`: run until SIGINT or SIGTERM, then give the host back as it was. */
/** Where `up`'s config came from: what SIGHUP reads again, and what `tunroute reload` asks for. */
export interface ConfigSource {
  /** The config file, absolute. */
  readonly file?: string;
  readonly flags: FlagValues;
}

/**
 * SIGHUP: read the config again and reload. After the start the process is no longer root and
 * may not read root's files: then it says so in one sentence, and `tunroute reload` (run as
 * root) is the way; the running config stays either way.
 */
async function reloadFromFiles(up: RunningTunroute, source: ConfigSource, log: Logger): Promise<void> {
  let next: Config;
  try {
    next = loadConfig({ file: source.file, flags: source.flags, log });
  } catch (e) {
    const denied = e instanceof TunrouteError && /\((EACCES|EPERM)\)/.test(e.message);
    if (denied) log.error({ file: source.file }, `SIGHUP: this process (user ${userName()}) may not read the config or a file it names, since it gave up root after start: run \`sudo tunroute reload\`, which reads them as root; the running config stays`);
    else log.error({ err: e }, `SIGHUP: the new config is refused (${e instanceof Error ? e.message : String(e)}); the running config stays`);
    return;
  }
  try {
    await up.reload(next);
  } catch (e) {
    const denied = e instanceof TunrouteError && /\((EACCES|EPERM)\)/.test(e.message);
    if (denied) log.error({ file: source.file }, `SIGHUP: this process (user ${userName()}) may not read a file the config names, since it gave up root after start: run \`sudo tunroute reload\`, which reads them as root; the running config stays`);
    else log.error({ err: e }, `SIGHUP: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function userName(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '?');
  }
}

/** `tunroute up`: run until SIGINT or SIGTERM (SIGHUP reloads), then give the host back as it was. */
export async function runUp(config: Config, source: ConfigSource = { flags: {} }): Promise<void> {
  const log = createLogger(config.log.level, config.log.format);
  const startedAt = new Date();
  // The dashboard's module is loaded only when it is enabled; its log tap sees the start lines.
  const api = config.ui.listen === undefined ? undefined : await import('./api/index.js');
  const logTap: LogTap | undefined = api?.startLogTap(log);
  // The device first: its errors (not root, no /dev/net/tun, name taken) are the ones a user
  // needs to see. A control socket already served by another tunroute then undoes this one.
  const runAs = resolveRunAs(config, log);
  const up = await startTunroute(config, { logger: log, runAs });
  let control: Awaited<ReturnType<typeof startControlServer>>;
  try {
    control = await startControlServer({
      path: config.control.socket,
      logger: log,
      snapshot: () => statusSnapshotOf(up, { version: TUNROUTE_VERSION, address: cidrToString(config.tun.address), startedAt }),
      flows: () => up.flows(),
      probes: up.probes,
      fakeIp: (arg) => up.fakeIpEntry(arg),
      maxRequestBytes: MAX_RELOAD_REQUEST_BYTES,
      source: () => ({ ...(source.file === undefined ? {} : { file: source.file }), flags: { ...source.flags }, cwd: process.cwd() }),
      reload: async (input, files) => ({ summary: describeReload(await up.reload(parseConfigInput(input), files)) }),
    });
  } catch (e) {
    await up.stop();
    throw e;
  }
  // The dashboard and API (off unless ui.listen): its secret file is written now, as root.
  let ui: Awaited<ReturnType<NonNullable<typeof api>['startUi']>> | undefined;
  try {
    ui = await api?.startUi({ ui: config.ui, stateDir: resolveStateDir(config.stateDir), source: upApiSource(up, config, { startedAt }), logger: log, logs: logTap });
  } catch (e) {
    await control.close();
    await up.stop();
    throw e;
  }
  // Everything that needs root is done: the device is open, the routes are in, the control
  // socket and the dashboard listen. From here on, packets are carried without root.
  if (runAs !== undefined) {
    try {
      dropPrivileges(runAs, log);
    } catch (e) {
      await ui?.close();
      await control.close();
      await up.stop();
      throw e;
    }
  }
  const summary = upSummary(up.config, up.plan);
  log.info(
    {
      dev: up.link.name,
      mtu: up.link.mtu,
      address: cidrToString(config.tun.address),
      routes: up.plan.prefixes.length,
      mode: summary.mode,
      outbounds: summary.outbounds,
      defaultOutbound: summary.defaultOutbound,
      control: config.control.socket,
      ...(ui === undefined ? {} : { ui: `${ui.url}/ui/` }),
    },
    'tunroute is up',
  );
  // For a person at the terminal, the same in words; JSON lines carry it as the fields above.
  if (resolveLogFormat(config.log.format) === 'pretty') {
    for (const l of summary.lines) log.info(`  ${l}`);
    if (ui !== undefined) log.info(`  dashboard: ${ui.url}/ui/`);
    log.info(`  watch it: tunroute status --watch${config.control.socket === DEFAULT_CONTROL_PATH ? '' : ` --control ${config.control.socket}`}`);
  }
  const onHup = (): void => {
    log.info('SIGHUP: reloading the config');
    void reloadFromFiles(up, source, log);
  };
  process.on('SIGHUP', onHup);
  await runUntilSignal({
    logger: log,
    failure: 'teardown failed',
    stop: async () => {
      await ui?.close();
      await control.close();
      await up.stop();
    },
  });
  process.off('SIGHUP', onHup);
}
