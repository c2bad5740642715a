/**
 * The server host's own addresses and directly connected networks, which peers may not reach
 * through `tunroute server` unless the config's `allow` list re-opens them: a peer of a VPN
 * server should reach the internet, not the server's own services (sshd, databases bound to a
 * private address, the control plane of its LAN).
 *
 * Read from the kernel at start and again every REFRESH_MS (an interface or address that comes
 * later is covered within that time):
 *   - every IPv4 address of every interface, and the subnet it makes (Node's
 *     os.networkInterfaces(), one getifaddrs(3) call, no process);
 *   - the main table's `scope link` routes (`ip -json -4 route show table main scope link`):
 *     directly connected networks that no local address names (a route added with `dev`).
 *     A `default` route of scope link (a point-to-point uplink) is not a connected network:
 *     it is skipped, or everything would be denied. If `ip` cannot run, the addresses alone
 *     are used and the caller is told why.
 */
import { execFile } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { z } from 'zod';
import { computeRouteSet } from '../net/cidr-set.js';
import { cidrToString, normalizeCidr, parseCidr, parseNetwork, type Cidr } from '../net/ipv4.js';

/** How often the host's addresses and connected networks are read again. */
export const HOST_NETWORKS_REFRESH_MS = 10_000;

export interface HostNetworks {
  /** The host's own IPv4 addresses, as /32. */
  addresses: Cidr[];
  /** Directly connected IPv4 networks (interface subnets and scope-link routes), normalized. */
  networks: Cidr[];
  /** Why part of the picture is missing (ip could not run), for a warning. */
  problem?: string;
}

export type HostNetworksReader = () => Promise<HostNetworks>;

type Interfaces = ReturnType<typeof networkInterfaces>;

/** Addresses and subnets of os.networkInterfaces(). */
export function fromInterfaces(ifs: Interfaces): Pick<HostNetworks, 'addresses' | 'networks'> {
  const addresses: Cidr[] = [];
  const networks: Cidr[] = [];
  for (const list of Object.values(ifs)) {
    for (const a of list ?? []) {
      if (a.family !== 'IPv4') continue;
      const c = a.cidr === null ? undefined : parseCidr(a.cidr);
      if (c === undefined) continue;
      addresses.push({ addr: c.addr, prefix: 32 });
      networks.push(normalizeCidr(c));
    }
  }
  return { addresses, networks };
}

const linkRoutesJson = z.array(z.object({ dst: z.string(), type: z.string().optional() }).loose());

/** The connected networks in `ip -json -4 route show table main scope link` output. */
export function parseLinkRoutes(json: string): Cidr[] {
  const r = linkRoutesJson.safeParse(JSON.parse(json === '' ? '[]' : json));
  if (!r.success) return [];
  const out: Cidr[] = [];
  for (const route of r.data) {
    if (route.dst === 'default' || (route.type !== undefined && route.type !== 'unicast')) continue;
    const c = parseNetwork(route.dst);
    if (c !== undefined && c.prefix > 0) out.push(c);
  }
  return out;
}

function ipLinkRoutes(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', ['-json', '-4', 'route', 'show', 'table', 'main', 'scope', 'link'], { timeout: 5000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => {
      if (err !== null) reject(new Error(err.message));
      else resolve(stdout);
    });
  });
}

/** Read this host's networks (see the module comment). */
export async function readHostNetworks(deps: { interfaces?: () => Interfaces; linkRoutes?: () => Promise<string> } = {}): Promise<HostNetworks> {
  const { addresses, networks } = fromInterfaces((deps.interfaces ?? networkInterfaces)());
  try {
    for (const c of parseLinkRoutes(await (deps.linkRoutes ?? ipLinkRoutes)())) networks.push(c);
    return { addresses, networks };
  } catch (e) {
    return { addresses, networks, problem: `cannot read the connected routes with ip (${e instanceof Error ? e.message.split('\n')[0] : String(e)})` };
  }
}

/**
 * What peers may not reach on this host: its addresses and connected networks, minus `allow`,
 * as a minimal sorted list of prefixes.
 */
export function hostDenyList(h: Pick<HostNetworks, 'addresses' | 'networks'>, allow: readonly Cidr[]): Cidr[] {
  return computeRouteSet([...h.addresses, ...h.networks], allow);
}

/** The list as text, to compare two readings and to log. */
export function denyListText(list: readonly Cidr[]): string {
  return list.map(cidrToString).join(' ');
}
