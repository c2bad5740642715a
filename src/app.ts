/**
 * The composition root: the only place that builds the real TUN link, the route runner, the
 * logger and the clock. Everything below receives them, so tests pass fakes. `startTunroute`
 * is also the embedding API for other Node programs.
 */
import type { Config } from './config/schema.js';
import { TunrouteError } from './errors.js';
import { createLogger, type Logger } from './logger.js';
import type { Link } from './link/link.js';
import type { RoutePlan } from './routes/plan.js';
import { ipBatchRunner, type IpRunner } from './routes/apply.js';
import { RouteManager, type RouteWatcher } from './routes/manager.js';
import type { HostProbe } from './routes/host.js';
import { resolveStateDir } from './routes/journal.js';
import type { DispatcherStats } from './stack/dispatcher.js';
import type { TcpFlowInfo, TcpRelayStats } from './relay/tcp-relay.js';
import type { UdpStackStats } from './stack/udp/index.js';
import type { UdpFlowInfo, UdpRelayStats } from './relay/udp-relay.js';
import type { ReassemblyStats } from './stack/ip-reassembly.js';
import { TerminatingEngine } from './relay/engine.js';
import { Router } from './router/router.js';
import { BlockOutbound } from './outbound/block.js';
import { Socks5UdpOutbound } from './outbound/socks5-udp.js';
import { DnsResolver, DnsCache, FakeIpResolver, type FakeIpPool, type DnsResolverStats } from './dns/index.js';
import { FakeIpSaver, fakeIpStatePath, loadFakeIpPool } from './fake-ip-state.js';
import { IP_PROTO_UDP } from './wire/ipv4.js';
import { cidrContains, cidrToString, normalizeCidr } from './net/ipv4.js';
import { formatEndpoint } from './net/endpoint.js';
import type { Outbound } from './outbound/outbound.js';
import { BLOCK_OUTBOUND, PROXY_OUTBOUND } from './config/schema.js';
import { monotonicClock, type Clock } from './clock.js';
import { runUntilSignal } from './run-until-signal.js';
import { TUNROUTE_VERSION } from './version.js';
import { startControlServer, statusSnapshotOf, type TunnelStatus } from './control/index.js';
import { nonZeroCounts, peerInfoOf } from './control/peer-info.js';
import { expandTunnels, tunnelSpecsOf } from './config/tunnels.js';
import { openWireguardTunnels, tunnelForwardHook } from './outbound/wireguard.js';
import type { TunnelStats, WireguardTunnel } from './wireguard/client-tunnel.js';
import { explainDestination, parseDestination, type WhyAnswer } from './routes/why.js';
import { describePlanLines } from './routes/plan.js';
import type { ApiSource, LogTap } from './api/index.js';

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
}

/** Everything a running instance counts, for logs and `status`. */
export interface TunrouteStats {
  packets: DispatcherStats;
  tcp: TcpRelayStats;
  udp: { stack: UdpStackStats; relay: UdpRelayStats; fragments: ReassemblyStats; dns?: DnsResolverStats };
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
  if (config.proxy !== undefined) {
    out.set(PROXY_OUTBOUND, new Socks5UdpOutbound({ name: PROXY_OUTBOUND, proxy: config.proxy, logger: log, clock }));
  }
  for (const o of config.outbounds) {
    if (o.type === 'block') out.set(o.name, new BlockOutbound(o.name));
    else if (o.type === 'socks5') {
      // (wireguard outbounds forward packets instead of flows: see openWireguardTunnels below)
      out.set(o.name, new Socks5UdpOutbound({ name: o.name, proxy: o.url, connectTimeoutMs: o.connectTimeoutMs, logger: log, clock }));
    }
  }
  return out;
}

export function buildRouter(config: Config): Router {
  const defaultOutbound = config.defaultOutbound ?? (config.proxy !== undefined ? PROXY_OUTBOUND : BLOCK_OUTBOUND);
  return new Router({ rules: config.rules, defaultOutbound, source: 'rules' });
}

/**
 * With `dns: hijack`, every UDP query to port 53 routed into the device is answered from the
 * configured upstream resolver, reached through the outbound that routes the resolver's
 * address (or `dns.outbound`): the query never leaves the machine any other way.
 */
function buildDnsResolver(config: Config, router: Router, outbounds: ReadonlyMap<string, Outbound>, clock: Clock, log: Logger): DnsResolver | undefined {
  if (config.dns.mode === 'off') return undefined;
  const upstream = config.dns.upstream;
  const name = config.dns.outbound ?? router.route(upstream.addr, IP_PROTO_UDP, upstream.port);
  const outbound = outbounds.get(name);
  if (outbound === undefined || outbound.kind === 'block') {
    throw new TunrouteError('TR_BAD_CONFIG', `DNS ${config.dns.mode} needs a proxy to reach ${formatEndpoint(upstream)}, but it routes to "${name}": set --proxy or dns.outbound.`);
  }
  const cache = new DnsCache({ clock, maxEntries: config.dns.cacheMaxEntries, maxTtlSec: config.dns.cacheMaxTtlSec });
  return new DnsResolver({ upstream: { ip: upstream.host, port: upstream.port }, outbound, clock, logger: log, cache });
}

/**
 * With `dns: fakeip`, names are answered from the pool (every name: a full tunnel by name) and
 * the other queries by the hijack resolver; the pool's range is routed into the device.
 */
function buildFakeIp(config: Config, upstream: DnsResolver | undefined, log: Logger): { resolver: FakeIpResolver; pool: FakeIpPool; saver: FakeIpSaver } | undefined {
  if (config.dns.mode !== 'fakeip') return undefined;
  // The table of the last run, so that cached answers still reach their names (fake-ip-state.ts).
  // The device's own address may lie in the pool (by default tun0 is 198.18.0.1/15): never hand it out.
  const path = fakeIpStatePath(resolveStateDir(config.stateDir), config.tun.name);
  const pool = loadFakeIpPool(path, config.dns.fakeIpRange, [config.tun.address.addr], log);
  return { pool, saver: new FakeIpSaver(pool, path, log), resolver: new FakeIpResolver({ pool, tunneled: () => true, upstream, logger: log }) };
}

/**
 * The config with the fake-IP range among the routed CIDRs (dns.mode fakeip), unless the
 * device's own subnet holds it already (the default: tun0 198.18.0.1/15, pool 198.18.0.0/15).
 */
function withFakeIpRoutes(config: Config): Config {
  if (config.dns.mode !== 'fakeip') return config;
  const range = config.dns.fakeIpRange;
  const device = normalizeCidr(config.tun.address);
  if (device.prefix <= range.prefix && cidrContains(device, range.addr)) return config;
  return { ...config, routes: { ...config.routes, include: [...config.routes.include, config.dns.fakeIpRange] } };
}

export async function startTunroute(config: Config, deps: TunrouteDeps = {}): Promise<RunningTunroute> {
  const log = deps.logger ?? createLogger(config.log.level);
  const runner = deps.ipRunner ?? ipBatchRunner;
  const clock = deps.clock ?? monotonicClock;
  // Tunnels first: their AllowedIPs become routes and rules, their endpoints stay out of the
  // device (resolved and pinned now), before anything is planned (see config/tunnels.ts).
  const expanded = await expandTunnels(config, deps.routeHost?.resolve);
  config = withFakeIpRoutes(expanded.config);
  for (const note of expanded.notes) log.warn(note);
  // Everything that can fail on a bad config is built before the device exists. The route
  // manager reads the host, plans, and undoes a stale journal of a dead tunroute; the outbounds
  // then connect to the upstream addresses the plan keeps out of the tunnel (names pinned).
  const routes = await RouteManager.prepare({ config, log, runner, host: deps.routeHost, watchdog: deps.watchdog, watchRoutes: deps.watchRoutes });
  const outbounds = buildOutbounds(routes.config, log, clock);
  const router = buildRouter(config);
  const dns = buildDnsResolver(config, router, outbounds, clock, log);
  const fakeIp = buildFakeIp(config, dns, log);
  // A start that fails from here on must not leave the table's save timer behind (an embedder's process lives on).
  const link = await (deps.openLink ?? openTunLink)(config, log).catch((e: unknown) => {
    fakeIp?.saver.stop();
    throw e;
  });
  let tunnels = new Map<string, WireguardTunnel>();
  try {
    tunnels = await openWireguardTunnels(tunnelSpecsOf(config), { link, clock, logger: log, deviceAddress: config.tun.address.addr });
    await routes.apply();
  } catch (e) {
    for (const t of tunnels.values()) t.close();
    link.close();
    fakeIp?.saver.stop();
    throw e;
  }
  const engine = new TerminatingEngine({
    link,
    router,
    outbounds,
    clock,
    logger: log,
    icmp: config.icmp,
    tcp: config.tcp,
    udp: config.udp,
    fragments: config.fragments,
    dns,
    fakeIp,
    forward: tunnelForwardHook((dst, proto, port) => router.route(dst, proto, port), tunnels),
  });
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
    tunnels: () => [...tunnels.values()].map((t) => tunnelStatusOf(t.stats())),
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
    stop() {
      stopping ??= (async () => {
        await engine.stop(); // the RSTs go out before the tunnels and the device close
        fakeIp?.saver.stop(); // after the flows let go of their addresses
        const tunnelStats = Object.fromEntries([...tunnels].map(([n, t]) => [n, t.stats()]));
        for (const t of tunnels.values()) t.close();
        await routes.stop();
        link.close();
        const s = stats();
        log.info({ link: link.stats, ...s.packets, tcp: s.tcp, udp: s.udp, tunnels: tunnelStats }, 'tunroute stopped; packet counters');
      })();
      return stopping;
    },
  };
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
export async function runUp(config: Config): Promise<void> {
  const log = createLogger(config.log.level);
  const startedAt = new Date();
  // The dashboard's module is loaded only when it is enabled; its log tap sees the start lines.
  const api = config.ui.listen === undefined ? undefined : await import('./api/index.js');
  const logTap: LogTap | undefined = api?.startLogTap(log);
  // The device first: its errors (not root, no /dev/net/tun, name taken) are the ones a user
  // needs to see. A control socket already served by another tunroute then undoes this one.
  const up = await startTunroute(config, { logger: log });
  let control: Awaited<ReturnType<typeof startControlServer>>;
  try {
    control = await startControlServer({
      path: config.control.socket,
      logger: log,
      snapshot: () => statusSnapshotOf(up, { version: TUNROUTE_VERSION, address: cidrToString(config.tun.address), startedAt }),
      flows: () => up.flows(),
    });
  } catch (e) {
    await up.stop();
    throw e;
  }
  let ui: Awaited<ReturnType<NonNullable<typeof api>['startUi']>> | undefined;
  try {
    ui = await api?.startUi({ ui: config.ui, stateDir: resolveStateDir(config.stateDir), source: upApiSource(up, config, { startedAt }), logger: log, logs: logTap });
  } catch (e) {
    await control.close();
    await up.stop();
    throw e;
  }
  log.info({ dev: up.link.name, mtu: up.link.mtu, address: cidrToString(config.tun.address), routes: up.plan.prefixes.length, control: config.control.socket, ...(ui === undefined ? {} : { ui: `${ui.url}/ui/` }) }, 'tunroute is up');
  await runUntilSignal({
    logger: log,
    failure: 'teardown failed',
    stop: async () => {
      await ui?.close();
      await control.close();
      await up.stop();
    },
  });
}
