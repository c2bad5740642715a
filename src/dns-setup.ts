/**
 * The DNS side of `up`, built from the config and the route plan (dns.mode hijack / fakeip):
 *
 *   caught query ─► fakeip? ── name tunneled, A ──────────► a fake address (dns/fake-ip-resolver.ts)
 *                     │        name tunneled, other type ─► split DNS ─► dns.servers entry / dns.upstream
 *                     │        name not tunneled ─────────► split DNS ─► dns.servers entry / the system's
 *                     │        (split tunnel by domain)                   resolver, out of the default
 *                     │                                                   route's device (direct)
 *                     └ hijack: split DNS ─► dns.servers entry / dns.upstream through the proxy
 *
 * In front of both, a name that goes through a WireGuard tunnel (a domain rule naming it; every
 * name when dns.upstream itself routes into a tunnel: a full tunnel over WireGuard) is asked of
 * that tunnel's resolver (its `dns`, wg-quick's `DNS =`) through the tunnel, and gets the real
 * answer (dns/tunnel-dns.ts). tunroute's socket for it is bound to the device: its query enters
 * the device like an app's, where the forward hook hands it to the tunnel (its address must be
 * in the tunnel's AllowedIPs), and the answer comes back the same way.
 *
 * Each upstream resolver is reached through the outbound that routes its address, unless the
 * config names one (dns.outbound, dns.servers[i].outbound). The system's resolver that direct
 * names are asked of is the one the plan routes into the device for the apps; tunroute's own
 * socket to it is bound to the default route's device (outbound/device-bound.ts), so its query
 * goes the host's way instead of into the device.
 */
import type { Clock } from './clock.js';
import type { Config } from './config/schema.js';
import { TunrouteError } from './errors.js';
import type { Logger } from './logger.js';
import { DnsCache, DnsResolver, FakeIpResolver, type DnsAnswerer, type FakeIpPool } from './dns/index.js';
import { SplitDnsAnswerer, type SplitDnsRoute } from './dns/split-dns.js';
import { outboundByName } from './outbound/by-name.js';
import { FakeIpSaver, fakeIpStatePath, loadFakeIpPool } from './fake-ip-state.js';
import { parseDomainPattern, type DomainPattern } from './net/domain-set.js';
import { formatEndpoint, parseIpv4Endpoint, type Ipv4Endpoint } from './net/endpoint.js';
import { ipToU32 } from './net/ipv4.js';
import { DeviceBoundUdpOutbound } from './outbound/device-bound.js';
import type { Outbound } from './outbound/outbound.js';
import type { Router } from './router/router.js';
import { domainRoutesOfPlan } from './routes/domain-routes.js';
import { resolveStateDir } from './routes/journal.js';
import type { DnsPlan } from './routes/plan.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from './wire/ipv4.js';
import { NoTunnelDnsAnswerer, TunnelDnsAnswerer } from './dns/tunnel-dns.js';

/** The outbound name of tunroute's own queries to the system's resolver (names that go direct). */
export const SYSTEM_DNS_OUTBOUND = 'system-dns';

export interface DnsSetup {
  /** The resolver of dns.upstream (its counters go to `status`); none when it routes into a WireGuard tunnel. */
  readonly upstream: DnsResolver | undefined;
  /** What answers caught queries: the outermost answerer (tunnels' names, fake IP, split DNS, upstream). */
  readonly answerer: DnsAnswerer;
  readonly fakeIp?: { resolver: FakeIpResolver; pool: FakeIpPool; saver: FakeIpSaver };
  /** The system's resolver asked for names that go direct (split tunnel by domain). */
  readonly direct?: { resolver: DnsResolver; upstream: string };
  /** Closes the resolvers and sockets besides `upstream` (the engine closes that one), and saves the table. */
  close(): void;
}

export interface DnsSetupDeps {
  config: Config;
  dnsPlan: DnsPlan;
  /** How a resolver's address and a name are routed (the live router: a reload replaces it). */
  router: Pick<Router, 'route'> & Partial<Pick<Router, 'routeName'>>;
  outbounds: ReadonlyMap<string, Outbound>;
  /** The default route's device now (it follows route changes). */
  defaultDevice: () => string | undefined;
  clock: Clock;
  log: Logger;
  /** Addresses of the pool never handed out (per-app routing's source addresses, routes/apps.ts). */
  reserved?: readonly number[];
}

function resolverVia(d: DnsSetupDeps, server: Ipv4Endpoint, outboundName: string | undefined, field: string): DnsResolver {
  const name = outboundName ?? d.router.route(server.addr, IP_PROTO_UDP, server.port);
  const found = d.outbounds.get(name);
  if (found === undefined || found.kind === 'block') {
    throw new TunrouteError('TR_BAD_CONFIG', `DNS ${d.config.dns.mode} needs a proxy to reach ${formatEndpoint(server)} (${field}), but it routes to "${name}": set --proxy or ${field.replace(/upstream$|server$/, 'outbound')}.`);
  }
  const cache = new DnsCache({ clock: d.clock, maxEntries: d.config.dns.cacheMaxEntries, maxTtlSec: d.config.dns.cacheMaxTtlSec });
  // By name at each query: a reload (or an upstream's new address) replaces the outbound itself.
  return new DnsResolver({ upstream: { ip: server.host, port: server.port }, outbound: outboundByName(name, d.outbounds), clock: d.clock, logger: d.log, cache });
}

type WireguardOutbound = Extract<Config['outbounds'][number], { type: 'wireguard' }>;

/** The outbound name of tunroute's own queries to a WireGuard tunnel's resolver. */
export function tunnelDnsOutboundName(tunnel: string): string {
  return `${tunnel}-dns`;
}

/**
 * The answerer for the names of each WireGuard tunnel: a resolver of its first IPv4 `dns`
 * server, reached by a socket bound to the device (so the query enters the device, and the
 * tunnel); or SERVFAIL, with the one sentence that names the missing setting.
 */
function tunnelAnswerers(d: DnsSetupDeps, closers: Array<() => void>): Map<string, DnsAnswerer> {
  const { config, log } = d;
  const out = new Map<string, DnsAnswerer>();
  for (const o of config.outbounds) {
    if (o.type !== 'wireguard') continue;
    const server = firstIpv4Server(o);
    if (server === undefined) {
      out.set(o.name, new NoTunnelDnsAnswerer(`tunnel '${o.name}' has no IPv4 DNS server: names that go through it get SERVFAIL (tunroute never asks the local network for them): set DNS = in its wg-quick file, or dns: [ADDRESS] on outbound '${o.name}'.`, log));
      continue;
    }
    const routed = d.router.route(server.addr, IP_PROTO_UDP, server.port);
    if (routed !== o.name) {
      out.set(o.name, new NoTunnelDnsAnswerer(`tunnel '${o.name}': its DNS server ${formatEndpoint(server)} routes to '${routed}', not into the tunnel: names that go through it get SERVFAIL: put the server's address in the peer's AllowedIPs, or remove the rule that sends it elsewhere.`, log));
      continue;
    }
    const outbound = new DeviceBoundUdpOutbound({ name: tunnelDnsOutboundName(o.name), device: () => config.tun.name, logger: log });
    const cache = new DnsCache({ clock: d.clock, maxEntries: config.dns.cacheMaxEntries, maxTtlSec: config.dns.cacheMaxTtlSec });
    const resolver = new DnsResolver({ upstream: { ip: server.host, port: server.port }, outbound, clock: d.clock, logger: log, cache, transport: 'udp' });
    closers.push(() => {
      resolver.close();
      void outbound.close();
    });
    out.set(o.name, resolver);
  }
  return out;
}

/**
 * Each WireGuard tunnel's IPv4 DNS servers (as numbers), for the forward hook while DNS is
 * hijacked (outbound/wireguard.ts): queries to them go through the tunnel, any other query to
 * port 53 is answered by tunroute. undefined with dns.mode off.
 */
export function tunnelDnsServers(config: Config): Map<string, number[]> | undefined {
  if (config.dns.mode === 'off') return undefined;
  const out = new Map<string, number[]>();
  for (const o of config.outbounds) {
    if (o.type !== 'wireguard') continue;
    const addrs: number[] = [];
    for (const entry of o.dns ?? []) {
      const a = ipToU32(entry);
      if (a !== undefined) addrs.push(a);
    }
    out.set(o.name, addrs);
  }
  return out;
}

/** The first IPv4 address of a tunnel's `dns` (wg-quick lists search domains there too), port 53. */
function firstIpv4Server(o: WireguardOutbound): Ipv4Endpoint | undefined {
  for (const entry of o.dns ?? []) {
    const ep = ipToU32(entry) === undefined ? undefined : parseIpv4Endpoint(entry, 53);
    if (ep !== undefined) return ep;
  }
  return undefined;
}

/** undefined when dns.mode is off. */
export function buildDns(d: DnsSetupDeps): DnsSetup | undefined {
  const { config, log } = d;
  if (config.dns.mode === 'off') return undefined;
  const closers: Array<() => void> = [];
  const tunnels = tunnelAnswerers(d, closers);
  // A full tunnel over WireGuard: dns.upstream routes into a tunnel, and so does every name.
  const upstreamRoute = config.dns.outbound ?? d.router.route(config.dns.upstream.addr, IP_PROTO_UDP, config.dns.upstream.port);
  const allNamesTunnel = tunnels.has(upstreamRoute) ? upstreamRoute : undefined;
  const tunnelOf = (name: string): string | undefined => {
    const byRule = d.router.routeName?.(name, IP_PROTO_TCP, 0) ?? d.router.routeName?.(name, IP_PROTO_UDP, 0);
    if (byRule !== undefined) return tunnels.has(byRule) ? byRule : undefined;
    return allNamesTunnel;
  };
  const inFront = (next: DnsAnswerer): DnsAnswerer => (tunnels.size === 0 ? next : new TunnelDnsAnswerer({ tunnelOf, tunnels, next }));
  const upstream = allNamesTunnel === undefined ? resolverVia(d, config.dns.upstream, config.dns.outbound, 'dns.upstream') : undefined;
  const fallback: DnsAnswerer = upstream ?? tunnels.get(allNamesTunnel!)!;

  // Split DNS: one resolver per dns.servers entry, through its outbound.
  const routes: SplitDnsRoute[] = config.dns.servers.map((srv, i) => {
    const r = resolverVia(d, srv.server, srv.outbound, `dns.servers[${i}].server`);
    closers.push(() => r.close());
    const patterns = srv.domains.map((t) => parseDomainPattern(t)).filter((p): p is { ok: true; pattern: DomainPattern } => p.ok).map((p) => p.pattern);
    return { patterns, answerer: r };
  });
  const split = (fallback: DnsAnswerer): DnsAnswerer => (routes.length === 0 ? fallback : new SplitDnsAnswerer(routes, fallback));
  const answerer = split(fallback);

  if (config.dns.mode !== 'fakeip') return { upstream, answerer: inFront(answerer), close: () => closers.forEach((c) => c()) };

  let direct: DnsSetup['direct'];
  if (d.dnsPlan.splitByDomain) {
    const system = config.dns.directUpstream ?? systemResolverOf(d.dnsPlan);
    if (system === undefined) {
      for (const c of closers) c();
      throw new TunrouteError(
        'TR_BAD_CONFIG',
        "A split tunnel by domain asks the system's resolver for the names that go direct, but /etc/resolv.conf names no IPv4 nameserver tunroute can use (a loopback stub does not count): set dns.directUpstream to your network's resolver.",
      );
    }
    const outbound = new DeviceBoundUdpOutbound({ name: SYSTEM_DNS_OUTBOUND, device: d.defaultDevice, logger: log });
    const cache = new DnsCache({ clock: d.clock, maxEntries: config.dns.cacheMaxEntries, maxTtlSec: config.dns.cacheMaxTtlSec });
    const resolver = new DnsResolver({ upstream: { ip: system.host, port: system.port }, outbound, clock: d.clock, logger: log, cache, transport: 'udp' });
    closers.push(() => {
      resolver.close();
      void outbound.close();
    });
    direct = { resolver, upstream: formatEndpoint(system) };
  }
  // The table of the last run, so that cached answers still reach their names (fake-ip-state.ts).
  // The device's own address may lie in the pool (by default tun0 is 198.18.0.1/15): never hand
  // it out, nor the DNS address systemd-resolved is given on the device (routes/resolved.ts).
  const path = fakeIpStatePath(resolveStateDir(config.stateDir), config.tun.name);
  const linkDns = d.dnsPlan.resolved?.link === undefined ? [] : [ipToU32(d.dnsPlan.resolved.link.dns) ?? config.tun.address.addr];
  const pool = loadFakeIpPool(path, config.dns.fakeIpRange, [config.tun.address.addr, ...linkDns, ...(d.reserved ?? [])], log);
  const saver = new FakeIpSaver(pool, path, log);
  const domains = domainRoutesOfPlan(d.dnsPlan.domains);
  const resolver = new FakeIpResolver({
    pool,
    tunneled: (name) => domains.tunneled(name),
    upstream: answerer,
    direct: direct === undefined ? undefined : split(direct.resolver),
    logger: log,
  });
  return {
    upstream,
    answerer: inFront(resolver),
    fakeIp: { resolver, pool, saver },
    direct,
    close() {
      saver.stop();
      for (const c of closers) c();
    },
  };
}

/** The first IPv4 nameserver of /etc/resolv.conf that is not a loopback stub, port 53. */
function systemResolverOf(p: DnsPlan): Ipv4Endpoint | undefined {
  const r = p.resolvers.find((x) => !x.ip.startsWith('127.'));
  return r === undefined ? undefined : parseIpv4Endpoint(r.ip, 53);
}
