/**
 * What a `wireguard` outbound means for the rest of the config, applied once before the route
 * plan is made (so `up`, `--dry-run`, `check` and `why` see the same thing):
 *
 *   AllowedIPs (IPv4)  → routes into the device (`routes.include`), unless the config is already
 *                        a full tunnel (a proxy and no routes: everything enters the device)
 *                      → one rule `{cidrs: AllowedIPs, outbound: <tunnel>}`, after the user's
 *                        own rules (a more specific rule still wins, see router.ts)
 *   AllowedIPs (IPv6)  → skipped, with a note: tunroute routes IPv4 only
 *   0.0.0.0/0 in them  → `routes.table` auto becomes a table of its own (policy routing), as
 *                        wg-quick does: a /0 in the main table would clash with the default route
 *   Endpoint           → resolved once (a host name to its IPv4 addresses), every address kept
 *                        out of the device (`routes.exclude`), so the tunnel's own UDP never loops
 *                        into tun0, and the peer pinned to the first address
 *   DNS                → with dns.mode hijack/fakeip: the resolver of the names that go through
 *                        the tunnel, asked through it (dns-setup.ts); with dns.mode off: a note
 *                        (tunroute leaves resolv.conf alone)
 */
import { lookup } from 'node:dns/promises';
import { TunrouteError } from '../errors.js';
import { parseKey } from '../wireguard/keys.js';
import type { TunnelSpec } from '../wireguard/client-tunnel.js';
import { ipToU32, normalizeCidr, type Cidr } from '../net/ipv4.js';
import { formatEndpoint, type Endpoint } from '../net/endpoint.js';
import { DEFAULT_ROUTE_TABLE, PROXY_OUTBOUND, type Config } from './schema.js';

/** Host name → IPv4 addresses (the route layer's resolver: getaddrinfo, /etc/hosts counts). */
export type TunnelResolver = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo), IPv4 only. */
export const systemTunnelResolver: TunnelResolver = async (host) => (await lookup(host, { all: true, family: 4 })).map((a) => a.address);

type WireguardOutbound = Extract<Config['outbounds'][number], { type: 'wireguard' }>;

export interface ExpandedTunnels {
  config: Config;
  /** Sentences worth a warning at start (skipped IPv6, DNS not applied, ...). */
  notes: string[];
}

function isWireguard(o: Config['outbounds'][number]): o is WireguardOutbound {
  return o.type === 'wireguard';
}

/** Whether planRoutes will make a full tunnel of this config (its own rule, kept in one place here). */
function isFullTunnel(config: Config): boolean {
  const r = config.routes;
  return r.include.length === 0 && r.includeFiles.length === 0 && (config.proxy !== undefined || config.outbounds.some((o) => o.type === 'socks5' || o.type === 'http'));
}

/** What the expansion collects while it walks the outbounds in order. */
interface Acc {
  full: boolean;
  include: Cidr[];
  exclude: Cidr[];
  rules: Config['rules'];
  table: Config['routes']['table'];
  notes: string[];
  resolve: TunnelResolver;
  /** dns.mode off: a tunnel's DNS is not used (a note says so). */
  dnsOff: boolean;
}

/** The tunnel outbounds' routes, rules and endpoint bypasses folded into the config (see above). */
export async function expandTunnels(config: Config, resolve: TunnelResolver = systemTunnelResolver): Promise<ExpandedTunnels> {
  if (!config.outbounds.some(isWireguard)) return { config, notes: [] };
  const acc: Acc = {
    full: isFullTunnel(config),
    include: [...config.routes.include],
    exclude: [...config.routes.exclude],
    rules: [...config.rules],
    table: config.routes.table,
    notes: [],
    resolve,
    dnsOff: config.dns.mode === 'off',
  };
  // One after the other, so that the lists come out in config order.
  const outbounds: Config['outbounds'] = [];
  for (const [i, o] of config.outbounds.entries()) outbounds.push(isWireguard(o) ? await expandOutbound(o, i, acc) : o);
  if (acc.full) acc.notes.push(`full tunnel: the tunnels' AllowedIPs already enter the device, and rules send them to the tunnel (everything else goes to '${config.proxy !== undefined ? PROXY_OUTBOUND : 'the default outbound'}').`);
  const { include, exclude, rules, table, notes } = acc;
  return { config: { ...config, outbounds, rules, routes: { ...config.routes, include, exclude, table } }, notes };
}

async function expandOutbound(o: WireguardOutbound, i: number, acc: Acc): Promise<WireguardOutbound> {
  const v4: Cidr[] = [];
  const peers: WireguardOutbound['peers'] = [];
  for (const [j, p] of o.peers.entries()) {
    const skipped: string[] = [];
    for (const a of p.allowedIPs) {
      if (a.family === 6) skipped.push(a.text);
      else addOnce(v4, normalizeCidr(a.cidr));
    }
    if (skipped.length > 0) acc.notes.push(`tunnel '${o.name}': IPv6 AllowedIPs ${skipped.join(', ')} skipped (tunroute routes IPv4 only).`);
    peers.push(p.endpoint === undefined ? p : { ...p, endpoint: await pinEndpoint(o.name, p.endpoint, `outbounds[${i}] ('${o.name}').peers[${j}].endpoint`, acc) });
  }
  if (v4.length > 0) {
    acc.rules.push({ cidrs: v4, outbound: o.name });
    if (!acc.full) for (const c of v4) addOnce(acc.include, c);
    if (!acc.full && acc.table === 'auto' && v4.some((c) => c.prefix === 0)) {
      acc.table = DEFAULT_ROUTE_TABLE;
      acc.notes.push(`tunnel '${o.name}' routes 0.0.0.0/0: its routes go into table ${DEFAULT_ROUTE_TABLE} with an ip rule (policy routing), leaving the main table's default route alone.`);
    }
  }
  if (firstIpv4Address(o) === undefined) {
    acc.notes.push(`tunnel '${o.name}' has no IPv4 Address: packets enter it with the device's own address as source, which the peer must allow.`);
  }
  if (o.dns !== undefined && o.dns.length > 0 && acc.dnsOff) {
    acc.notes.push(`tunnel '${o.name}': DNS ${o.dns.join(', ')} not applied (dns.mode off, and tunroute leaves resolv.conf alone): use --dns hijack or --dns fakeip, so names that go through the tunnel are asked of it.`);
  }
  return { ...o, peers };
}

/** Append `c` unless the list holds it already. */
function addOnce(list: Cidr[], c: Cidr): void {
  if (!list.some((x) => x.addr === c.addr && x.prefix === c.prefix)) list.push(c);
}

/** The endpoint with its host resolved; every address it resolved to is kept out of the device. */
async function pinEndpoint(tunnel: string, ep: Endpoint, field: string, acc: Acc): Promise<Endpoint> {
  const addrs = ep.kind === 'ipv4' ? [ep.host] : await resolveEndpoint(ep.host, field, acc.resolve);
  for (const a of addrs) addOnce(acc.exclude, { addr: ipToU32(a)!, prefix: 32 });
  if (ep.kind === 'name') {
    acc.notes.push(`tunnel '${tunnel}': endpoint ${ep.host} resolved to ${addrs.join(', ')}; tunroute sends to ${addrs[0]} and keeps all of them out of the tunnel.`);
  }
  return { host: addrs[0], port: ep.port, kind: 'ipv4' };
}

async function resolveEndpoint(host: string, field: string, resolve: TunnelResolver): Promise<string[]> {
  let addrs: string[];
  try {
    addrs = [...new Set(await resolve(host))].filter((a) => ipToU32(a) !== undefined);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new TunrouteError(
      'TR_UPSTREAM',
      `Cannot resolve the tunnel endpoint ${host} (${field}, ${code}): tunroute must know its address before it changes routes, to keep it out of the tunnel; check DNS or give the address.`,
      e,
    );
  }
  if (addrs.length === 0) throw new TunrouteError('TR_UPSTREAM', `The tunnel endpoint ${host} (${field}) has no IPv4 address: give the server's IPv4 address instead.`);
  return addrs;
}

/** The first IPv4 Address of a tunnel, host bits kept: the source its packets carry. */
function firstIpv4Address(o: WireguardOutbound): Cidr | undefined {
  const addresses = o.address === undefined ? [] : Array.isArray(o.address) ? o.address : [o.address];
  for (const a of addresses) if (a.family === 4) return a.cidr;
  return undefined;
}

/** The tunnels of an expanded config, ready for WireguardTunnel (keys decoded, IPv6 dropped). */
export function tunnelSpecsOf(config: Config): TunnelSpec[] {
  return config.outbounds.filter(isWireguard).map((o): TunnelSpec => {
    const first = firstIpv4Address(o);
    return {
      name: o.name,
      privateKey: parseKey(o.privateKey, `private key of tunnel '${o.name}'`),
      mtu: o.mtu,
      listenPort: o.listenPort,
      address: first?.addr,
      peers: o.peers.map((p) => {
        const ep = p.endpoint;
        if (ep !== undefined && ep.kind !== 'ipv4') throw new TunrouteError('TR_INTERNAL', `tunnel '${o.name}': endpoint ${formatEndpoint(ep)} was not resolved (expandTunnels first)`);
        return {
          publicKey: parseKey(p.publicKey, 'peer public key'),
          presharedKey: p.presharedKey === undefined ? undefined : parseKey(p.presharedKey, 'preshared key'),
          endpoint: ep === undefined ? undefined : { address: ep.host, port: ep.port },
          allowedIPs: p.allowedIPs.flatMap((a): Cidr[] => (a.family === 4 ? [normalizeCidr(a.cidr)] : [])),
          persistentKeepaliveSec: p.persistentKeepalive,
        };
      }),
    };
  });
}
