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
import { IP_PROTO_UDP } from './wire/ipv4.js';

/** The outbound name of tunroute's own queries to the system's resolver (names that go direct). */
export const SYSTEM_DNS_OUTBOUND = 'system-dns';

export interface DnsSetup {
  /** The resolver of dns.upstream (its counters go to `status`). */
  readonly upstream: DnsResolver;
  /** What answers caught queries, when it is more than `upstream` (split DNS). */
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
  /** How a resolver's address is routed (the live router: a reload replaces it). */
  router: Pick<Router, 'route'>;
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

/** undefined when dns.mode is off. */
export function buildDns(d: DnsSetupDeps): DnsSetup | undefined {
  const { config, log } = d;
  if (config.dns.mode === 'off') return undefined;
  const closers: Array<() => void> = [];
  const upstream = resolverVia(d, config.dns.upstream, config.dns.outbound, 'dns.upstream');

  // Split DNS: one resolver per dns.servers entry, through its outbound.
  const routes: SplitDnsRoute[] = config.dns.servers.map((srv, i) => {
    const r = resolverVia(d, srv.server, srv.outbound, `dns.servers[${i}].server`);
    closers.push(() => r.close());
    const patterns = srv.domains.map((t) => parseDomainPattern(t)).filter((p): p is { ok: true; pattern: DomainPattern } => p.ok).map((p) => p.pattern);
    return { patterns, answerer: r };
  });
  const split = (fallback: DnsAnswerer): DnsAnswerer => (routes.length === 0 ? fallback : new SplitDnsAnswerer(routes, fallback));
  const answerer = split(upstream);

  if (config.dns.mode !== 'fakeip') return { upstream, answerer, close: () => closers.forEach((c) => c()) };

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
    answerer,
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
