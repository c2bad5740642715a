/**
 * What the planner needs to know about the host, read without changing anything: the default
 * route and the LAN behind it, whether IPv6 exists, whether our routing table is free, and the
 * upstreams' addresses. Everything goes through `ip` (iproute2, JSON output) so a lab can point
 * it at a network namespace (`ip -n NS`), and tests replace the whole HostProbe.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { TunrouteError, isTunrouteError, shownPath } from '../errors.js';
import { LIST_FILE_MAX_BYTES, readInputFile } from '../config/input-file.js';
import type { Config } from '../config/schema.js';
import { parseCidr, parseCidrOrAddress, ipToU32, cidrContains, cidrToString, normalizeCidr } from '../net/ipv4.js';
import { IFNAME_RE } from '../config/fields.js';
import { parseResolvConf, RESOLV_CONF, RESOLV_CONF_MAX_BYTES, type ResolvConf } from './resolv-conf.js';
import { readResolvedUpstreams, resolvectlOnPath, resolvedStubOf, type ResolvedProbe } from './resolved.js';
import { resolveUpstreams, systemResolver, upstreamsOf, type ResolvedUpstream, type Resolver } from './upstreams.js';
import type { AppsEnv } from './apps.js';
import { probeApps } from './cgroup.js';
import { defaultStateDir } from './state-dir.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ip ARGS` (in a namespace when the probe was made for one). */
export type IpCommand = (args: readonly string[]) => Promise<CommandResult>;

export function ipCommand(opts: { netns?: string } = {}): IpCommand {
  const prefix = opts.netns === undefined ? [] : ['-n', opts.netns];
  return (args) =>
    new Promise((resolve) => {
      const child = spawn('ip', [...prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (e) => resolve({ code: -1, stdout, stderr: `cannot run ip: ${e.message}` }));
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
}

export interface DefaultRoute {
  readonly dev: string;
  readonly via?: string;
}

export interface NetworkView {
  /** The main table's IPv4 default route in use (lowest metric), if there is one. */
  readonly defaultRoute?: DefaultRoute;
  /** Directly connected IPv4 subnets of the default route's device ("the LAN"), plus the gateway if it lies outside them. */
  readonly lan: readonly string[];
  /** Whether this kernel has IPv6 (so IPv6 can leak, and `ip -6 rule` works). */
  readonly ipv6: boolean;
  /** The interfaces with IPv4 addresses (absent: not read, as none). */
  readonly interfaces?: readonly LocalInterface[];
  /** net.ipv4.ip_forward of this network namespace (absent: not read). */
  readonly forwarding?: boolean;
}

/** A local interface as the planner sees it: its name, its kind (`ip -d`), its IPv4 subnets. */
export interface LocalInterface {
  readonly name: string;
  /** linkinfo's info_kind: bridge, veth, vxlan…; undefined for a plain device. */
  readonly kind?: string;
  /** Its connected IPv4 subnets, normalized (10.0.0.0/24), never host routes of /32 peers. */
  readonly subnets: readonly string[];
}

/** Everything the planner reads from outside the config; see planRoutes. */
export interface RouteEnv {
  readonly network: NetworkView;
  /** Where cgroup v2 is, for per-app routing; undefined (and `appsOff` says why) when it cannot be had. */
  readonly apps?: AppsEnv;
  readonly appsOff?: string;
  readonly upstreams: readonly ResolvedUpstream[];
  /** Contents of routes.includeFiles / excludeFiles (and the domain files), by path as written in the config. */
  readonly files: ReadonlyMap<string, string>;
  /** The system's resolvers (read when dns.mode is not off); absent: none known. */
  readonly resolvers?: ResolvConf;
  /** systemd-resolved's upstreams and resolvectl, read when `resolvers` names its stub (resolved.ts). */
  readonly resolved?: ResolvedProbe;
}

export const NO_NETWORK: NetworkView = { lan: [], ipv6: false };

export interface HostProbe {
  network(): Promise<NetworkView>;
  resolve: Resolver;
  /** A CIDR (or domain) file's text; `field` (routes.includeFiles[0]) names it in errors. */
  readFile(path: string, field: string): Promise<string>;
  /** The nameservers of /etc/resolv.conf; absent on probes that know none (tests). */
  systemResolvers?(): Promise<ResolvConf>;
  /** systemd-resolved's upstream servers and whether resolvectl is there (asked when resolv.conf names its stub). */
  resolved?(): Promise<ResolvedProbe>;
  /** A description of what already uses routing table `table` (routes or rules), or undefined if it is free. */
  tableInUse(table: number, ipv6: boolean): Promise<string | undefined>;
  /** The kernel's answer to `ip route get ADDR` (first line), or the error. */
  routeGet(addr: string): Promise<string>;
  /** Where cgroup v2 and nft are for per-app routing, or why not (absent: off, as in tests). */
  apps?(): Promise<{ env: AppsEnv } | { off: string }>;
}

const routeJson = z.array(
  z
    .object({
      dst: z.string(),
      type: z.string().optional(),
      gateway: z.string().optional(),
      dev: z.string().optional(),
      scope: z.string().optional(),
      metric: z.number().optional(),
      nexthops: z.array(z.object({ gateway: z.string().optional(), dev: z.string().optional() }).loose()).optional(),
    })
    .loose(),
);

/** The default route and LAN from `ip -j -4 route show table main` output. */
export function parseNetworkView(mainTableJson: string, ipv6: boolean): NetworkView {
  const parsed = routeJson.safeParse(JSON.parse(mainTableJson === '' ? '[]' : mainTableJson));
  if (!parsed.success) return { lan: [], ipv6 };
  const routes = parsed.data.filter((r) => r.type === undefined || r.type === 'unicast');
  let best: { dev: string; via?: string; metric: number } | undefined;
  for (const r of routes) {
    if (r.dst !== 'default' && r.dst !== '0.0.0.0/0') continue;
    const dev = r.dev ?? r.nexthops?.[0]?.dev;
    const via = r.gateway ?? r.nexthops?.[0]?.gateway;
    const metric = r.metric ?? 0;
    if (dev !== undefined && (best === undefined || metric < best.metric)) best = { dev, via, metric };
  }
  if (best === undefined) return { lan: [], ipv6 };
  const lan: string[] = [];
  for (const r of routes) {
    if (r.dev !== best.dev || r.scope !== 'link' || r.dst === 'default') continue;
    const c = parseCidrOrAddress(r.dst);
    if (c !== undefined && !lan.includes(r.dst)) lan.push(r.dst.includes('/') ? r.dst : `${r.dst}/32`);
  }
  if (best.via !== undefined) {
    const gw = ipToU32(best.via);
    if (gw !== undefined && !lan.some((l) => cidrContains(parseCidr(l)!, gw))) lan.push(`${best.via}/32`);
  }
  const defaultRoute: DefaultRoute = best.via === undefined ? { dev: best.dev } : { dev: best.dev, via: best.via };
  return { defaultRoute, lan, ipv6 };
}

const addrJson = z.array(
  z
    .object({
      ifname: z.string(),
      linkinfo: z.object({ info_kind: z.string().optional() }).loose().optional(),
      addr_info: z.array(z.object({ family: z.string().optional(), local: z.string().optional(), prefixlen: z.number().optional() }).loose()).optional(),
    })
    .loose(),
);

/** The interfaces and their IPv4 subnets from `ip -j -d -4 addr show` output (bad input: none). */
export function parseInterfaces(addrJsonText: string): LocalInterface[] {
  let data: unknown;
  try {
    data = JSON.parse(addrJsonText === '' ? '[]' : addrJsonText);
  } catch {
    return [];
  }
  const parsed = addrJson.safeParse(data);
  if (!parsed.success) return [];
  const out: LocalInterface[] = [];
  for (const l of parsed.data) {
    if (!IFNAME_RE.test(l.ifname)) continue; // never a name `ip -batch` could misread
    const subnets: string[] = [];
    for (const a of l.addr_info ?? []) {
      if (a.family !== undefined && a.family !== 'inet') continue;
      const c = a.local === undefined || a.prefixlen === undefined ? undefined : parseCidr(`${a.local}/${a.prefixlen}`);
      if (c === undefined) continue;
      const net = cidrToString(normalizeCidr(c));
      if (!subnets.includes(net)) subnets.push(net);
    }
    const kind = l.linkinfo?.info_kind;
    out.push(kind === undefined ? { name: l.ifname, subnets } : { name: l.ifname, kind, subnets });
  }
  return out;
}

/** The real host (or one namespace of it, with netns). */
export function hostProbe(opts: { netns?: string; resolve?: Resolver; stateDir?: string } = {}): HostProbe {
  const ip = ipCommand(opts);
  const hasIpv6 = async (): Promise<boolean> => (await ip(['-6', 'rule', 'show'])).code === 0;
  return {
    async network() {
      const r = await ip(['-j', '-4', 'route', 'show', 'table', 'main']);
      if (r.code !== 0) {
        throw new TunrouteError('TR_ROUTE_APPLY', `Cannot read the routing table (ip route: ${r.stderr.trim()}): is iproute2 installed?`);
      }
      const view = parseNetworkView(r.stdout.trim(), await hasIpv6());
      const a = await ip(['-j', '-d', '-4', 'addr', 'show']);
      return { ...view, interfaces: a.code === 0 ? parseInterfaces(a.stdout.trim()) : [], forwarding: opts.netns === undefined ? readForwarding() : undefined };
    },
    resolve: opts.resolve ?? systemResolver,
    // A bounded regular file (not /dev/zero, not a FIFO): see config/input-file.ts.
    readFile: (path, field) =>
      Promise.resolve().then(() => readInputFile(path, { what: `The ${fileKind(field)}`, via: field, maxBytes: LIST_FILE_MAX_BYTES, cannot: (code) => cannotRead(path, field, code) }).text),
    systemResolvers() {
      try {
        const f = readInputFile(RESOLV_CONF, { what: 'The resolver list', via: 'dns.routeSystemResolvers', maxBytes: RESOLV_CONF_MAX_BYTES, cannot: (code) => code });
        return Promise.resolve(parseResolvConf(f.text));
      } catch {
        // No resolv.conf (or not a regular file): nothing to route; the plan says so.
        return Promise.resolve({ ipv4: [], ipv6: [] });
      }
    },
    resolved() {
      return Promise.resolve({ ...readResolvedUpstreams(), resolvectl: resolvectlOnPath() });
    },
    async tableInUse(table, ipv6) {
      const found: string[] = [];
      for (const fam of ipv6 ? ['-4', '-6'] : ['-4']) {
        const routes = await ip([fam, 'route', 'show', 'table', String(table)]);
        // "FIB table does not exist" means empty.
        if (routes.code === 0 && routes.stdout.trim() !== '') found.push(`${fam === '-6' ? 'IPv6 ' : ''}routes: ${firstLine(routes.stdout)}`);
        const rules = await ip([fam, 'rule', 'show', 'table', String(table)]);
        if (rules.code === 0 && rules.stdout.trim() !== '') found.push(`${fam === '-6' ? 'IPv6 ' : ''}rules: ${firstLine(rules.stdout)}`);
      }
      return found.length === 0 ? undefined : found.join('; ');
    },
    // Per-app routing works on this process's own namespace only (nft and cgroups are not `ip -n`).
    ...(opts.netns === undefined ? { apps: () => probeApps(opts.stateDir ?? defaultStateDir()) } : {}),
    async routeGet(addr) {
      const r = await ip(['route', 'get', addr]);
      return r.code === 0 ? firstLine(r.stdout) : `error: ${r.stderr.trim()}`;
    },
  };
}

/** This namespace's net.ipv4.ip_forward (only meaningful for the namespace this process is in). */
function readForwarding(): boolean | undefined {
  try {
    return readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '1';
  } catch {
    return undefined;
  }
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0].trim();
}

function fileKind(field: string): string {
  return /Domain/.test(field) ? 'domain file' : 'CIDR file';
}

function cannotRead(path: string, field: string, code: string): string {
  return `Cannot read the ${fileKind(field)} ${shownPath(path)} (${field}, ${code}): check the path (relative paths start from the working directory).`;
}

/** Read what the plan depends on: CIDR files, the upstreams' addresses, the default route and LAN. */
export async function probeRouteEnv(config: Config, host: HostProbe): Promise<RouteEnv> {
  const files = await readCidrFiles(config, host);
  const upstreams = await resolveUpstreams(upstreamsOf(config), host.resolve);
  const network = await host.network();
  const apps = host.apps === undefined ? { off: 'not probed' } : await host.apps();
  const resolvers = config.dns.mode !== 'off' && config.dns.routeSystemResolvers ? await host.systemResolvers?.() : undefined;
  const resolved = resolvedStubOf(resolvers) === undefined ? undefined : await host.resolved?.();
  const common = resolved === undefined ? { network, upstreams, files, resolvers } : { network, upstreams, files, resolvers, resolved };
  return 'env' in apps ? { ...common, apps: apps.env } : { ...common, appsOff: apps.off };
}

/** The texts of routes.includeFiles and excludeFiles, by path as written (`tunroute reload` reads them as root). */
export async function readCidrFiles(config: Config, host: Pick<HostProbe, 'readFile'> = hostProbe()): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const lists: Array<[string, readonly string[]]> = [
    ['routes.includeFiles', config.routes.includeFiles],
    ['routes.excludeFiles', config.routes.excludeFiles],
    ['routes.domainFiles', config.routes.domainFiles],
    ['routes.excludeDomainFiles', config.routes.excludeDomainFiles],
  ];
  for (const [field, paths] of lists) {
    for (let i = 0; i < paths.length; i++) {
      const path = paths[i];
      if (files.has(path)) continue;
      try {
        files.set(path, await host.readFile(path, `${field}[${i}]`));
      } catch (e) {
        if (isTunrouteError(e)) throw e;
        throw new TunrouteError('TR_CONFIG_READ', cannotRead(path, `${field}[${i}]`, (e as NodeJS.ErrnoException).code ?? 'error'), e);
      }
    }
  }
  return files;
}
