/**
 * The route plan: a pure description of every change `up` makes to the host, and its exact
 * inverse for `down`. Nothing here runs a command or reads the host: what the plan depends on
 * outside the config (default route, LAN, upstream addresses, CIDR files) arrives as a
 * RouteEnv. So `--dry-run`, `check`, `why` and the tests see the same plan that apply executes.
 *
 * What enters the device: the includes (`routes.include`, `includeFiles`; a full tunnel
 * includes 0.0.0.0/0) minus the excludes, merged into the fewest prefixes. Excluded always,
 * whatever the mode: loopback, link-local, multicast, "this network", broadcast, the
 * upstreams' own addresses (so tunroute's sockets never loop into tun0), the LAN of the
 * default interface (`routes.lan: auto`), and the user's excludes.
 *
 * Where the routes go (`routes.table`):
 *   - main table (auto for a split tunnel, like wg-quick): `ip route add P dev tun0`;
 *   - a table of its own (auto for a full tunnel or with excluded users): the routes go into
 *     table T, and two `ip rule`s steer lookups there:
 *       priority P     uidrange U-U lookup main    (one per excluded user: they never see T)
 *       priority P+1   lookup T                    (T holds only tunnel prefixes; a miss
 *                                                    falls through to the main table)
 * IPv6 leak guard (full tunnel, unless turned off): table T holds `unreachable ::/0` with
 * `throw` for link-local and multicast, behind the same two rules for IPv6.
 * Kill switch: each tunnel route gets a twin `unreachable` route of the lowest priority
 * (metric 2^32-1). When tun0 vanishes with a dead tunroute, its routes go with it and the
 * twins remain: tunneled destinations fail closed until `tunroute down`.
 *
 * Every route and rule carries `proto 211`, so `ip route`/`ip rule` show what is tunroute's
 * and `down` deletes only routes and rules with that mark.
 */
import { isIPv4 } from 'node:net';
import { TunrouteError } from '../errors.js';
import { BLOCK_OUTBOUND, DEFAULT_ROUTE_TABLE, PROXY_OUTBOUND, type Config } from '../config/schema.js';
import { cidrContains, cidrToString, normalizeCidr, parseCidr, u32ToIp, type Cidr } from '../net/ipv4.js';
import { overlapsRanges, PrefixBag, routeSetOfRanges } from '../net/cidr-set.js';
import type { NetworkView, RouteEnv } from './host.js';
import { planApps, type AppsPlan } from './apps.js';
import { parseCidrFile, type CidrFileEntries, type LabeledPrefix } from './sources.js';
import { domainRoutesOf } from './domain-routes.js';
import { linkDnsCommands, linkDnsText, resolvectlCommandText, resolvedStubOf, RESOLVED_UPSTREAMS_FILE } from './resolved.js';

/** The `proto` (routes) and `protocol` (rules) number that marks tunroute's changes. */
export const ROUTE_PROTO = 211;
/** The kill switch's unreachable twins: the largest metric, so any live route wins. */
export const KILL_SWITCH_METRIC = 4_294_967_295;

export type Table = 'main' | number;

export type DeviceOp =
  | { op: 'link-set'; dev: string; mtu: number; txqueuelen: number }
  | { op: 'addr-add'; dev: string; cidr: string }
  | { op: 'link-up'; dev: string };

export type RouteChange = {
  op: 'route';
  family: 4 | 6;
  type: 'unicast' | 'unreachable' | 'throw';
  cidr: string;
  dev?: string;
  table: Table;
  metric?: number;
};

export type RuleChange = {
  op: 'rule';
  family: 4 | 6;
  priority: number;
  table: Table;
  /** uidrange first-last */
  uids?: [number, number];
  /** iif NAME: packets forwarded from this interface (a container bridge kept out). */
  iif?: string;
  /** fwmark (per-app routing, see apps.ts) */
  fwmark?: number;
};

/** A change to the host's routing state: these are journaled and undone by `down`. */
export type Change = RouteChange | RuleChange;

export type RouteOp = DeviceOp | Change;

export type PlanMode = 'full' | 'split' | 'none';

/** Everything `why` needs to explain a decision; JSON, so the journal can hold it. */
export interface ExplainData {
  dev: string;
  mode: PlanMode;
  table: Table;
  priority: number;
  /** [cidr, source]: the entries not from CIDR files (config, flags, tunroute's own). */
  include: Array<[string, string]>;
  exclude: Array<[string, string]>;
  /** The entries of routes.includeFiles / excludeFiles (absent in journals of older versions). */
  includeFiles?: ExplainFile[];
  excludeFiles?: ExplainFile[];
  excludeUids: Array<[number, number]>;
  ipv6: Ipv6Handling;
  killSwitch: boolean;
  rules: Config['rules'];
  defaultOutbound: string;
  /** The device's own subnet (the kernel routes it into the device by itself). */
  deviceSubnet?: string;
  /** The system's resolvers routed into the device whatever the excludes say: [cidr, source]. */
  resolverRoutes?: Array<[string, string]>;
  /** DNS as planned (absent in journals of older versions). */
  dns?: DnsPlan;
}

/** What the plan does about DNS, for `--dry-run`, `check` and `why NAME`. */
export interface DnsPlan {
  mode: Config['dns']['mode'];
  /** The system's IPv4 resolvers: routed into the device, or why not. */
  resolvers: Array<{ ip: string; routed: boolean; why: string }>;
  /** Domain routes (config order, excludes first): pattern, include, source. */
  domains: Array<{ pattern: string; include: boolean; source: string }>;
  /** Whether names no domain route covers go direct (a split tunnel by domain). */
  splitByDomain: boolean;
  /** The fake-IP pool (fakeip mode). */
  fakeIpRange?: string;
  /** dns.upstream and the outbound named for it (else the one that routes it). */
  upstream?: string;
  upstreamOutbound?: string;
  /** dns.directUpstream, when set. */
  directUpstream?: string;
  /** Split DNS entries. */
  servers?: Array<{ domains: string[]; server: string; outbound?: string }>;
  /** systemd-resolved, when /etc/resolv.conf names its stub (resolved.ts). */
  resolved?: ResolvedPlan;
  /** WireGuard outbounds and the DNS server their names are asked of (their first IPv4 `dns`; none: SERVFAIL). */
  tunnels?: Array<{ outbound: string; server?: string }>;
}

/** What the plan does about systemd-resolved (see resolved.ts). */
export interface ResolvedPlan {
  /** The stub /etc/resolv.conf names (127.0.0.53). */
  stub: string;
  /** Per-link DNS given to the device (`resolvectl dns DEV DNS`, `domain DEV ~.`, `default-route DEV yes`). */
  link?: { dev: string; dns: string };
  /** Why the device gets no per-link DNS. */
  linkOff?: string;
  /** Sentences a user must see (resolvectl missing, resolved's upstreams unknown); also in the plan's notes. */
  warnings: string[];
}

/**
 * A CIDR file as `why` needs it, compact enough for the journal (a million entries in one
 * string of ~16 MB, not a million pairs): `cidrs` holds line n's CIDR (normalized) at slot
 * n - 1 of a '\n'-separated list, '' for blank and comment lines.
 */
export interface ExplainFile {
  file: string;
  cidrs: string;
}

/** guarded: blocked by the leak guard; untouched: not tunroute's business; unavailable: no IPv6 in this kernel. */
export type Ipv6Handling = 'guarded' | 'untouched' | 'unavailable';

export interface RoutePlan {
  dev: string;
  mode: PlanMode;
  table: Table;
  priority: number;
  /** Applied in order by `up`: the device settings, then `changes`. */
  up: RouteOp[];
  /** The inverse of `up`, in reverse order; safe to run when only part of `up` was applied. */
  down: Change[];
  /** The route and rule changes (what the journal lists). */
  changes: Change[];
  /** The prefixes that enter the device, after merging and excluding. */
  prefixes: Cidr[];
  /** What stays direct, and why (only entries that cut into an include are listed). */
  direct: Array<{ cidr: string; source: string }>;
  excludeUids: Array<[number, number]>;
  /** Interfaces kept out both ways (container bridges, routes.excludeInterfaces), and why. */
  keptOut: Array<{ name: string; why: string }>;
  /** Gateway mode: interfaces whose forwarded traffic enters the device (routes.fromInterfaces). */
  gateway: string[];
  ipv6: Ipv6Handling;
  killSwitch: boolean;
  /** Things a user should know (no default route found, …). */
  notes: string[];
  explain: ExplainData;
  /** Per-app routing (cgroups, nft table), when it is on; see apps.ts. */
  apps?: AppsPlan;
  /** Why per-app routing is off, when it is (for `tunroute exec`'s message). */
  appsOff?: string;
  dns: DnsPlan;
}

/** Always kept out of the tunnel: routing these into a TUN device makes no sense. */
export const ALWAYS_DIRECT: ReadonlyArray<readonly [string, string]> = [
  ['0.0.0.0/8', '"this network" (0.0.0.0/8)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'limited broadcast'],
];

export const FULL_TUNNEL_SOURCE = 'full tunnel (a proxy and no routes given)';

/** The planner's own CIDRs (built in, the host's LAN, upstream addresses): text it made or read from `ip`. */
function mustParse(cidr: string): Cidr {
  const p = parseCidr(cidr);
  if (!p) throw new TunrouteError('TR_INTERNAL', `a CIDR of the planner's own did not parse: ${cidr}`);
  return normalizeCidr(p);
}

function fileText(env: RouteEnv, path: string): string {
  const t = env.files.get(path);
  if (t === undefined) throw new TunrouteError('TR_INTERNAL', `the CIDR file ${path} was not read before planning`);
  return t;
}

function explainFile(f: CidrFileEntries): ExplainFile {
  // Built in chunks: one join per few thousand lines, not a million-element array.
  const chunks: string[] = [];
  let part: string[] = [];
  let line = 1;
  for (let i = 0; i < f.count; i++) {
    for (; line < f.lines[i]; line++) part.push('');
    part.push(`${u32ToIp(f.addrs[i])}/${f.lens[i]}`);
    line++;
    if (part.length >= 4096) {
      chunks.push(part.join('\n'));
      part = [];
    }
  }
  if (part.length > 0 || chunks.length === 0) chunks.push(part.join('\n'));
  return { file: f.file, cidrs: chunks.join('\n') };
}

function bagOf(inline: readonly LabeledPrefix[], files: readonly CidrFileEntries[]): PrefixBag {
  const bag = new PrefixBag();
  for (const p of inline) bag.addCidr(p.prefix);
  for (const f of files) for (let i = 0; i < f.count; i++) bag.add(f.addrs[i], f.lens[i]);
  return bag;
}

function hasUpstream(config: Config): boolean {
  return config.proxy !== undefined || config.outbounds.some((o) => o.type === 'socks5' || o.type === 'http');
}

/** Same choice as app.ts buildRouter: the outbound for flows no rule matches. */
function defaultOutboundOf(config: Config): string {
  return config.defaultOutbound ?? (config.proxy !== undefined ? PROXY_OUTBOUND : BLOCK_OUTBOUND);
}

function prefixContains(p: Cidr, addr: number): boolean {
  const size = 2 ** (32 - p.prefix);
  return addr >= p.addr && addr < p.addr + size;
}

/** Whether `addr` (uint32) lies in one of the sorted, disjoint prefixes. */
export function prefixesContain(prefixes: readonly Cidr[], addr: number): Cidr | undefined {
  let lo = 0;
  let hi = prefixes.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const p = prefixes[mid];
    if (addr < p.addr) hi = mid - 1;
    else if (prefixContains(p, addr)) return p;
    else lo = mid + 1;
  }
  return undefined;
}

/**
 * Interfaces `routes.containers: auto` keeps out by name (any bridge is kept out by its kind):
 * Docker (docker0, br-<id>, its host-side veth<id>), Podman and CNI, libvirt, LXC and LXD.
 */
const CONTAINER_IFNAME = /^(docker\d*|br-[0-9a-f]{6,}|virbr\d+|podman\d+|cni\d+|cni-podman\d+|lxcbr\d+|lxdbr\d+|veth[0-9a-f]{4,})$/;

/** An interface glob (`*`, `?`) as a regular expression over the whole name. */
function globRe(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
}

/** An interface kept out of the device both ways, and why. */
export interface KeptOutInterface {
  name: string;
  subnets: readonly string[];
  why: string;
}

/**
 * Which local interfaces stay out of the device both ways (their subnets are not routed into
 * it; what they forward keeps the main table), and which forward into it (gateway mode).
 * Never the device itself or loopback; the default route's interface only when named.
 */
export function interfacesOf(config: Config, net: NetworkView): { keptOut: KeptOutInterface[]; gateway: KeptOutInterface[] } {
  const r = config.routes;
  const excl = r.excludeInterfaces.map(globRe);
  const from = r.fromInterfaces.map(globRe);
  const keptOut: KeptOutInterface[] = [];
  const gateway: KeptOutInterface[] = [];
  for (const i of net.interfaces ?? []) {
    if (i.name === config.tun.name || i.name === 'lo') continue;
    const fromAt = from.findIndex((re) => re.test(i.name));
    if (fromAt >= 0) {
      gateway.push({ name: i.name, subnets: i.subnets, why: `routes.fromInterfaces[${fromAt}]` });
      continue;
    }
    const named = excl.findIndex((re) => re.test(i.name));
    if (named >= 0) {
      keptOut.push({ name: i.name, subnets: i.subnets, why: `routes.excludeInterfaces[${named}]` });
      continue;
    }
    if (r.containers !== 'auto' || i.name === net.defaultRoute?.dev) continue;
    if (i.kind === 'bridge') keptOut.push({ name: i.name, subnets: i.subnets, why: 'a bridge (routes.containers: auto)' });
    else if (CONTAINER_IFNAME.test(i.name)) keptOut.push({ name: i.name, subnets: i.subnets, why: 'a container interface by its name (routes.containers: auto)' });
  }
  return { keptOut, gateway };
}

export function planRoutes(config: Config, env: RouteEnv): RoutePlan {
  const dev = config.tun.name;
  const r = config.routes;
  const notes: string[] = [];

  const include: LabeledPrefix[] = r.include.map((c, i) => ({ prefix: normalizeCidr(c), source: `routes.include[${i}]` }));
  // File entries stay in columns (CidrFileEntries): a million LabeledPrefix objects would not.
  const includeFiles = r.includeFiles.map((f, i) => parseCidrFile(fileText(env, f), f, `routes.includeFiles[${i}]`));
  // Names routed by domain make a split tunnel too: only their fake addresses (and the resolvers) enter.
  const domains = domainRoutesOf(config, env.files);
  const splitByDomain = config.dns.mode === 'fakeip' && domains.split;
  const mode: PlanMode = r.include.length > 0 || r.includeFiles.length > 0 || splitByDomain ? 'split' : hasUpstream(config) ? 'full' : 'none';
  if (mode === 'full') include.push({ prefix: { addr: 0, prefix: 0 }, source: FULL_TUNNEL_SOURCE });
  // The fake-IP pool enters the device: by the device's own subnet when it holds the pool (the
  // default: tun0 198.18.0.1/15, pool 198.18.0.0/15), else by a route of its own.
  const deviceSubnet = normalizeCidr(config.tun.address);
  const pool = normalizeCidr(config.dns.fakeIpRange);
  if (config.dns.mode === 'fakeip' && mode !== 'none' && !(deviceSubnet.prefix <= pool.prefix && cidrContains(deviceSubnet, pool.addr))) {
    include.push({ prefix: pool, source: 'fake-IP pool (dns.fakeIpRange)' });
  }

  const exclude: LabeledPrefix[] = ALWAYS_DIRECT.map(([c, source]) => ({ prefix: mustParse(c), source }));
  for (const u of env.upstreams) {
    for (const a of u.addrs) {
      const host = u.host === a ? '' : `${u.host} → `;
      exclude.push({ prefix: mustParse(`${a}/32`), source: `upstream '${u.name}' (${u.kind} ${host}${a}:${u.port}): tunroute's own connections` });
    }
  }
  const net = env.network;
  if (r.lan === 'auto' && net.defaultRoute !== undefined) {
    const via = net.defaultRoute.via === undefined ? '' : ` via ${net.defaultRoute.via}`;
    for (const l of net.lan) {
      const isGateway = net.defaultRoute.via !== undefined && l === `${net.defaultRoute.via}/32`;
      exclude.push({ prefix: mustParse(l), source: isGateway ? `gateway of the default route (dev ${net.defaultRoute.dev})` : `LAN on ${net.defaultRoute.dev} (default route${via})` });
    }
  } else if (r.lan === 'auto' && mode === 'full') {
    notes.push('no IPv4 default route: there is no LAN to keep direct.');
  }
  const { keptOut, gateway } = interfacesOf(config, net);
  for (const k of keptOut) {
    for (const sub of k.subnets) exclude.push({ prefix: mustParse(sub), source: `interface ${k.name}, ${k.why}` });
  }
  // A gateway interface's own subnet stays direct too: the replies to what it forwards (and
  // this host's own traffic to it) must reach it, not loop back into the device.
  for (const g of gateway) {
    for (const sub of g.subnets) exclude.push({ prefix: mustParse(sub), source: `interface ${g.name}, gateway mode (${g.why}): its own subnet` });
  }
  r.exclude.forEach((c, i) => exclude.push({ prefix: normalizeCidr(c), source: `routes.exclude[${i}]` }));
  const excludeFiles = r.excludeFiles.map((f, i) => parseCidrFile(fileText(env, f), f, `routes.excludeFiles[${i}]`));

  const included = bagOf(include, includeFiles).mergedRanges();
  const prefixes = mode === 'none' ? [] : routeSetOfRanges(included, bagOf(exclude, excludeFiles).mergedRanges());
  const dns = planResolverRoutes(config, env, mode, prefixes, domains.entries(), splitByDomain);
  for (const w of dns.resolved?.warnings ?? []) notes.push(w);
  const resolverRoutes: Array<[string, string]> = [];
  for (const res of dns.resolvers) {
    if (!res.routed) continue;
    const p = mustParse(`${res.ip}/32`);
    if (prefixesContain(prefixes, p.addr) !== undefined) continue;
    insertPrefix(prefixes, p);
    resolverRoutes.push([`${res.ip}/32`, res.why]);
  }

  // The loop guard, checked rather than assumed: no upstream address may enter the device.
  for (const u of env.upstreams) {
    for (const a of u.addrs) {
      const addr = mustParse(`${a}/32`).addr;
      const hit = prefixesContain(prefixes, addr);
      if (hit) throw new TunrouteError('TR_INTERNAL', `the plan routes upstream ${a} into ${dev} via ${cidrToString(hit)}; this would loop`);
    }
  }

  const uids = r.excludeUids.map((u): [number, number] => (typeof u === 'number' ? [u, u] : [u[0], u[1]]));
  const cgroups = r.excludeCgroups;
  let table: Table;
  if (r.table === 'main') {
    if (uids.length > 0 || cgroups.length > 0) {
      const what = uids.length > 0 ? 'Excluding users (--exclude-uid, routes.excludeUids)' : 'Excluding cgroups (routes.excludeCgroups)';
      throw new TunrouteError('TR_BAD_CONFIG', `${what} needs policy routing, but routes.table is "main": set routes.table to auto or a table number.`);
    }
    table = 'main';
  } else if (typeof r.table === 'number') table = r.table;
  else table = mode === 'full' || uids.length > 0 || cgroups.length > 0 ? DEFAULT_ROUTE_TABLE : 'main';

  // Per-app routing: on wherever it can be (see apps.ts); excludeCgroups insists on it.
  let apps: AppsPlan | undefined;
  let appsOff: string | undefined;
  if (r.perApp === 'off') appsOff = 'routes.perApp is off';
  else if (mode === 'none') appsOff = 'nothing is routed into the device';
  else if (table === 'main') appsOff = 'the routes are in the main table (a split tunnel): start tunroute up with --table 7300 to give it a table of its own';
  else if (env.apps === undefined) appsOff = env.appsOff ?? 'cgroup v2 or nftables is missing';
  else if (table + 1 >= 253 && table + 1 <= 255) appsOff = `table ${table + 1}, which per-app routing needs beside table ${table}, is reserved by the kernel: pick another routes.table`;
  else apps = planApps(config, env.apps, table + 1, dev);
  if (cgroups.length > 0 && apps === undefined) {
    throw new TunrouteError('TR_BAD_CONFIG', `Excluding cgroups (routes.excludeCgroups) needs per-app routing, which is off: ${appsOff ?? ''}.`);
  }

  const ipv6: Ipv6Handling = mode === 'full' && r.ipv6Guard ? (net.ipv6 ? 'guarded' : 'unavailable') : 'untouched';
  const killSwitch = r.killSwitch && mode !== 'none';
  const priority = r.priority;

  const changes: Change[] = [];
  if (mode !== 'none') {
    // One string per prefix, shared by the route and its kill-switch twin (a million of each).
    const cidrs = prefixes.map(cidrToString);
    for (const cidr of cidrs) changes.push({ op: 'route', family: 4, type: 'unicast', cidr, dev, table });
    if (killSwitch) {
      for (const cidr of cidrs) changes.push({ op: 'route', family: 4, type: 'unreachable', cidr, table, metric: KILL_SWITCH_METRIC });
    }
    if (table !== 'main') {
      for (const u of uids) changes.push({ op: 'rule', family: 4, priority, table: 'main', uids: u });
      // What a kept-out interface forwards (a container's traffic, replies from a published
      // port) keeps the main table, before our table's rule.
      for (const k of keptOut) changes.push({ op: 'rule', family: 4, priority, table: 'main', iif: k.name });
      if (apps !== undefined) {
        changes.push({ op: 'route', family: 4, type: 'unicast', cidr: '0.0.0.0/0', dev, table: apps.table });
        changes.push({ op: 'rule', family: 4, priority, table: 'main', fwmark: apps.direct.mark });
        for (const o of apps.outbounds) changes.push({ op: 'rule', family: 4, priority, table: apps.table, fwmark: o.mark });
      }
      changes.push({ op: 'rule', family: 4, priority: priority + 1, table });
    } else if (keptOut.length > 0) {
      notes.push(
        `routes are in the main table, so what ${keptOut.map((k) => k.name).join(', ')} forward${keptOut.length === 1 ? 's' : ''} to the routed CIDRs enters ${dev} as well: set routes.table to a number to keep it out.`,
      );
    }
    if (gateway.length > 0 && net.forwarding === false) {
      notes.push(`gateway mode (${gateway.map((g) => g.name).join(', ')}): this host does not forward IPv4 (net.ipv4.ip_forward=0), so nothing arrives to carry: sysctl -w net.ipv4.ip_forward=1.`);
    }
    if (ipv6 === 'guarded') {
      if (table === 'main') {
        // Without a table of our own: two halves more specific than any default route.
        changes.push({ op: 'route', family: 6, type: 'unreachable', cidr: '::/1', table });
        changes.push({ op: 'route', family: 6, type: 'unreachable', cidr: '8000::/1', table });
      } else {
        changes.push({ op: 'route', family: 6, type: 'unreachable', cidr: '::/0', table });
        changes.push({ op: 'route', family: 6, type: 'throw', cidr: 'fe80::/10', table });
        changes.push({ op: 'route', family: 6, type: 'throw', cidr: 'ff00::/8', table });
        for (const u of uids) changes.push({ op: 'rule', family: 6, priority, table: 'main', uids: u });
        for (const k of keptOut) changes.push({ op: 'rule', family: 6, priority, table: 'main', iif: k.name });
        if (apps !== undefined) changes.push({ op: 'rule', family: 6, priority, table: 'main', fwmark: apps.direct.mark });
        changes.push({ op: 'rule', family: 6, priority: priority + 1, table });
      }
    } else if (ipv6 === 'unavailable') {
      notes.push('this kernel has no IPv6: nothing to guard.');
    }
  }

  const device: DeviceOp[] = [
    { op: 'link-set', dev, mtu: config.tun.mtu, txqueuelen: config.tun.txqueuelen },
    { op: 'addr-add', dev, cidr: cidrToString(config.tun.address) },
    { op: 'link-up', dev },
  ];
  const up: RouteOp[] = [...device, ...changes];

  // Only exclusions that actually cut into an include are worth showing.
  const direct: Array<{ cidr: string; source: string }> = [];
  if (mode !== 'none') {
    for (const e of exclude) if (overlapsRanges(included, e.prefix)) direct.push({ cidr: cidrToString(e.prefix), source: e.source });
    for (const f of excludeFiles) {
      for (let i = 0; i < f.count; i++) {
        const p = f.prefixAt(i);
        if (overlapsRanges(included, p)) direct.push({ cidr: cidrToString(p), source: f.sourceOf(i) });
      }
    }
  }

  const explain: ExplainData = {
    dev,
    mode,
    table,
    priority,
    include: include.map((p) => [cidrToString(p.prefix), p.source]),
    exclude: exclude.map((p) => [cidrToString(p.prefix), p.source]),
    includeFiles: includeFiles.map(explainFile),
    excludeFiles: excludeFiles.map(explainFile),
    excludeUids: uids,
    ipv6,
    killSwitch,
    rules: config.rules,
    defaultOutbound: defaultOutboundOf(config),
    deviceSubnet: cidrToString(deviceSubnet),
    resolverRoutes,
    dns,
  };

  const plan: RoutePlan = {
    dev, mode, table, priority, up, down: invert(up), changes, prefixes, direct, excludeUids: uids,
    keptOut: mode === 'none' ? [] : keptOut.map((k) => ({ name: k.name, why: k.why })),
    gateway: mode === 'none' ? [] : gateway.map((g) => g.name),
    ipv6, killSwitch, notes, explain, dns,
  };
  if (apps !== undefined) plan.apps = apps;
  else plan.appsOff = appsOff;
  return plan;
}

/** Insert a /32 into sorted, disjoint prefixes that do not contain it. */
function insertPrefix(prefixes: Cidr[], p: Cidr): void {
  let lo = 0;
  let hi = prefixes.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (prefixes[mid].addr < p.addr) lo = mid + 1;
    else hi = mid;
  }
  prefixes.splice(lo, 0, p);
}

const LOOPBACK = mustParse('127.0.0.0/8');

/**
 * Which of the system's resolvers are routed into the device (dns.mode hijack or fakeip, and
 * dns.routeSystemResolvers): each IPv4 nameserver of /etc/resolv.conf gets a /32, even inside
 * the LAN or an exclude, so the system's queries reach tunroute whatever the split. Never an
 * upstream's own address, never a loopback stub: systemd-resolved's (127.0.0.53) answers on
 * this host, so its upstream servers are routed instead, and the device gets per-link DNS with
 * the routing domain `~.` (resolved.ts) for the queries resolved sends from sockets bound to
 * another link, which no route catches.
 */
function planResolverRoutes(
  config: Config,
  env: RouteEnv,
  mode: PlanMode,
  prefixes: readonly Cidr[],
  domains: DnsPlan['domains'],
  splitByDomain: boolean,
): DnsPlan {
  const resolvers: DnsPlan['resolvers'] = [];
  const dnsOn = config.dns.mode !== 'off' && mode !== 'none';
  const stub = resolvedStubOf(env.resolvers);
  const rd = stub === undefined ? undefined : env.resolved;
  const candidates: Array<{ ip: string; source: string }> = (env.resolvers?.ipv4 ?? []).map((ip) => ({ ip, source: '/etc/resolv.conf' }));
  // resolved lists the device's own DNS address too while tunroute runs (a reload reads it then): not an upstream.
  const deviceSubnet = normalizeCidr(config.tun.address);
  for (const ip of rd?.upstreams.ipv4 ?? []) {
    if (cidrContains(deviceSubnet, mustParse(`${ip}/32`).addr)) continue;
    if (!candidates.some((c) => c.ip === ip)) candidates.push({ ip, source: `an upstream of systemd-resolved, ${RESOLVED_UPSTREAMS_FILE}` });
  }
  for (const { ip, source } of candidates) {
    const addr = mustParse(`${ip}/32`).addr;
    const upstream = env.upstreams.find((u) => u.addrs.includes(ip));
    if (!dnsOn || !config.dns.routeSystemResolvers) resolvers.push({ ip, routed: false, why: 'dns.mode off or dns.routeSystemResolvers false: its queries go the host\'s way' });
    else if (prefixContains(LOOPBACK, addr) && rd !== undefined && ip === stub) resolvers.push({ ip, routed: false, why: "systemd-resolved's stub, on this host: its upstreams are routed instead, and the device gets per-link DNS (below)" });
    else if (prefixContains(LOOPBACK, addr)) resolvers.push({ ip, routed: false, why: 'a local stub (systemd-resolved?): not routable into a device; point resolv.conf at a real resolver to catch its queries' });
    else if (upstream !== undefined) resolvers.push({ ip, routed: false, why: `the address of upstream '${upstream.name}': it cannot enter the device (tunroute's own connections go there), so queries to it leave directly` });
    else if (prefixesContain(prefixes, addr) !== undefined) resolvers.push({ ip, routed: true, why: `system resolver (${source}), inside the routes already` });
    else resolvers.push({ ip, routed: true, why: `system resolver (${source}): its queries are answered by tunroute` });
  }
  const resolved = stub === undefined || rd === undefined || !dnsOn || !config.dns.routeSystemResolvers ? undefined : planResolved(config, stub, rd);
  const d = config.dns;
  const ep = (e: { host: string; port: number }): string => `${e.host}:${e.port}`;
  return {
    mode: d.mode,
    resolvers,
    domains,
    splitByDomain,
    fakeIpRange: d.mode === 'fakeip' ? cidrToString(normalizeCidr(d.fakeIpRange)) : undefined,
    upstream: ep(d.upstream),
    upstreamOutbound: d.outbound,
    directUpstream: d.directUpstream === undefined ? undefined : ep(d.directUpstream),
    servers: d.servers.map((x) => ({ domains: x.domains, server: ep(x.server), outbound: x.outbound })),
    ...(resolved === undefined ? {} : { resolved }),
    tunnels: config.outbounds.flatMap((o) => (o.type === 'wireguard' ? [{ outbound: o.name, server: o.dns?.find((x) => isIPv4(x)) }] : [])),
  };
}

/** Per-link DNS on the device for systemd-resolved, or why not (with the sentence a user must see). */
function planResolved(config: Config, stub: string, rd: NonNullable<RouteEnv['resolved']>): ResolvedPlan {
  const dev = config.tun.name;
  const warnings: string[] = [];
  if (rd.why !== undefined) {
    warnings.push(`/etc/resolv.conf names systemd-resolved's stub ${stub}, but its upstream servers are unknown (${rd.why}), so none is routed into ${dev}: check that systemd-resolved runs.`);
  }
  const dns = linkDnsText(config.tun.address);
  if (!rd.resolvectl) {
    warnings.push(
      `/etc/resolv.conf names systemd-resolved's stub ${stub}, but resolvectl is not on PATH, so tunroute cannot send resolved's queries into ${dev} (only its upstream servers are routed there): install resolvectl (Debian: apt-get install systemd-resolved), or point /etc/resolv.conf at a real resolver.`,
    );
    return { stub, linkOff: 'resolvectl is not on PATH', warnings };
  }
  if (dns === undefined) {
    warnings.push(`the device's address ${cidrToString(config.tun.address)} leaves no room in its subnet for the DNS address systemd-resolved would be given, so resolved's queries are not sent into ${dev}: give tun.address a /30 or shorter prefix.`);
    return { stub, linkOff: `tun.address ${cidrToString(config.tun.address)} has no room for a DNS address`, warnings };
  }
  return { stub, link: { dev, dns }, warnings };
}

/**
 * What undoes each op: routes and rules are deleted, in reverse order. Device settings need no
 * undo: the TUN device is not persistent and vanishes with its file descriptor, taking its
 * address (and every route through it) with it.
 */
export function invert(ops: readonly RouteOp[]): Change[] {
  const out: Change[] = [];
  for (let i = ops.length - 1; i >= 0; i--) {
    const o = ops[i];
    if (o.op === 'route' || o.op === 'rule') out.push(o);
  }
  return out;
}

/** One `ip -batch` line (without the family option: see familyOf). */
export function toIpLine(o: RouteOp, mode: 'apply' | 'undo'): string {
  const add = mode === 'apply';
  switch (o.op) {
    case 'link-set':
      return `link set dev ${o.dev} mtu ${o.mtu} txqueuelen ${o.txqueuelen}`;
    case 'addr-add':
      return `address ${add ? 'add' : 'del'} ${o.cidr} dev ${o.dev}`;
    case 'link-up':
      return `link set dev ${o.dev} ${add ? 'up' : 'down'}`;
    case 'route': {
      const type = o.type === 'unicast' ? '' : `${o.type} `;
      const dev = o.dev === undefined ? '' : ` dev ${o.dev}`;
      const table = o.table === 'main' ? '' : ` table ${o.table}`;
      const metric = o.metric === undefined ? '' : ` metric ${o.metric}`;
      return `route ${add ? 'add' : 'del'} ${type}${o.cidr}${dev}${table} proto ${ROUTE_PROTO}${metric}`;
    }
    case 'rule': {
      const uids = o.uids === undefined ? '' : ` uidrange ${o.uids[0]}-${o.uids[1]}`;
      const iif = o.iif === undefined ? '' : ` iif ${o.iif}`;
      const mark = o.fwmark === undefined ? '' : ` fwmark 0x${o.fwmark.toString(16)}`;
      return `rule ${add ? 'add' : 'del'}${uids}${iif}${mark} lookup ${o.table} priority ${o.priority} protocol ${ROUTE_PROTO}`;
    }
  }
}

export function familyOf(o: RouteOp): 4 | 6 {
  return o.op === 'route' || o.op === 'rule' ? o.family : 4;
}

/** One iproute2 batch line per op (`ip -batch -` syntax); the family comes from the batch (see batchesOf). */
export function toIpBatch(ops: readonly RouteOp[], mode: 'apply' | 'undo'): string[] {
  return ops.map((o) => toIpLine(o, mode));
}

/** The op as a command a person could type. */
export function toIpCommand(o: RouteOp, mode: 'apply' | 'undo'): string {
  return `ip ${familyOf(o) === 6 ? '-6 ' : ''}${toIpLine(o, mode)}`;
}

export interface Batch {
  family: 4 | 6;
  ops: RouteOp[];
}

/** `ip -batch` has no per-line family, so consecutive ops of one family share a batch. */
export function batchesOf(ops: readonly RouteOp[]): Batch[] {
  const out: Batch[] = [];
  for (const o of ops) {
    const fam = familyOf(o);
    const last = out[out.length - 1];
    if (last && last.family === fam) last.ops.push(o);
    else out.push({ family: fam, ops: [o] });
  }
  return out;
}

/** The DNS part of the plan: which mode, which resolvers are routed into the device, which names. */
function* describeDns(plan: RoutePlan): Generator<string> {
  const d = plan.dns;
  if (d.mode === 'off') return; // DNS goes the host's way: nothing to change or list
  const how =
    d.mode === 'hijack'
      ? 'hijack: every query routed into the device is answered by dns.upstream through the proxy'
      : d.splitByDomain
        ? 'fakeip, split by domain: names below get fake addresses and enter the device; every other name is answered by the system\'s resolver and goes direct'
        : 'fakeip: every name gets a fake address and its flows go by name (the proxy resolves)';
  yield `DNS: ${how}`;
  if (d.resolvers.length === 0) yield '  system resolvers: none found in /etc/resolv.conf (or not read)';
  for (const r of d.resolvers) yield `  ${r.routed ? '+' : '-'} resolver ${r.ip}: ${r.routed ? 'routed into ' + plan.dev : 'not routed'} — ${r.why}`;
  const rd = d.resolved;
  if (rd?.link !== undefined) {
    yield `  systemd-resolved (${rd.stub}): every query goes into ${rd.link.dev}, per-link DNS ${rd.link.dns} with routing domain ~. (undone on exit; gone with the device after a crash):`;
    for (const args of linkDnsCommands(rd.link.dev, rd.link.dns)) yield `    ${resolvectlCommandText(args)}`;
  } else if (rd !== undefined) {
    yield `  systemd-resolved (${rd.stub}): no per-link DNS on ${plan.dev} — ${rd.linkOff ?? 'not planned'}`;
  }
  if (d.mode === 'fakeip') {
    for (const e of d.domains) yield `  ${e.include ? '+' : '-'} names ${e.pattern}  ${e.include ? 'enter' : 'stay direct'} (${e.source})`;
  }
}

function tableText(t: Table): string {
  return t === 'main' ? 'the main table' : `table ${t}`;
}

export interface DescribeOptions {
  /** Where the journal will be, for the closing line. */
  journal?: string;
  /** List at most this many changes (default: all). */
  maxChanges?: number;
}

/** The plan as a person reads it (`--dry-run`, `check`). */
export function describePlan(plan: RoutePlan, opts: DescribeOptions = {}): string {
  return Array.from(describePlanLines(plan, opts)).join('\n');
}

/**
 * describePlan a line at a time: `check` of a million-line CIDR file prints ~2 million lines,
 * which it writes out in chunks instead of building them into one string.
 */
export function* describePlanLines(plan: RoutePlan, opts: DescribeOptions = {}): Generator<string> {
  const how =
    plan.mode === 'none'
      ? 'no routes (no proxy and no --route): only the device\'s own subnet enters it'
      : plan.mode === 'full'
        ? 'full tunnel: everything except the direct destinations below'
        : 'split tunnel: only the listed CIDRs';
  yield `device ${plan.dev} — ${how}`;
  for (const o of plan.up) {
    if (o.op === 'link-set') yield `  set mtu ${o.mtu}, txqueuelen ${o.txqueuelen}`;
    else if (o.op === 'addr-add') yield `  add address ${o.cidr}`;
    else if (o.op === 'link-up') yield '  bring the device up';
    else break; // the device ops come first
  }
  const shown = Math.min(opts.maxChanges ?? Infinity, Number.MAX_SAFE_INTEGER);
  if (plan.mode !== 'none') {
    const where =
      plan.table === 'main'
        ? 'routes in the main table'
        : `routes in table ${plan.table}, consulted by ip rule priority ${plan.priority + 1} (before the main table)`;
    yield `routes into ${plan.dev} (${plan.prefixes.length}; ${where}):`;
    for (let i = 0; i < plan.prefixes.length && i < shown; i++) yield `  + ${cidrToString(plan.prefixes[i])}`;
    if (plan.prefixes.length > shown) yield `  … and ${plan.prefixes.length - shown} more`;
    if (plan.direct.length > 0) {
      yield 'stays direct (the host\'s own routes carry it):';
      const w = plan.direct.reduce((m, d) => Math.max(m, d.cidr.length), 0); // no spread: may be a million
      for (let i = 0; i < plan.direct.length && i < shown; i++) yield `  - ${plan.direct[i].cidr.padEnd(w)}  ${plan.direct[i].source}`;
      if (plan.direct.length > shown) yield `  … and ${plan.direct.length - shown} more`;
    }
    if (plan.keptOut.length > 0) {
      const rules = plan.table === 'main' ? '' : ` (ip rule priority ${plan.priority} iif → main table)`;
      yield `interfaces kept out both ways${rules}: ${plan.keptOut.map((k) => `${k.name} (${k.why})`).join(', ')}`;
    }
    if (plan.gateway.length > 0) yield `gateway mode: what ${plan.gateway.join(', ')} forward${plan.gateway.length === 1 ? 's' : ''} enters ${plan.dev} too (routes.fromInterfaces)`;
    if (plan.apps !== undefined) {
      const a = plan.apps;
      yield `per-app routing (tunroute exec): cgroups under ${a.root}, nft table inet ${a.nftTable}; --direct → main table, --outbound NAME → table ${a.table} (everything into ${plan.dev}) for ${a.outbounds.map((o) => o.name).join(', ') || 'no outbound'}`;
      for (const e of a.excluded) yield `  cgroup ${e.path}: never enters ${plan.dev} (routes.excludeCgroups)`;
    }
    if (plan.excludeUids.length > 0) {
      yield `users whose traffic never enters ${plan.dev}: ${plan.excludeUids.map(([a, b]) => (a === b ? `uid ${a}` : `uids ${a}-${b}`)).join(', ')} (ip rule priority ${plan.priority} → main table)`;
    }
    yield plan.ipv6 === 'guarded'
      ? `IPv6: blocked by the leak guard (unreachable in ${tableText(plan.table)}; link-local and multicast still work); turn off with --no-ipv6-guard`
      : plan.ipv6 === 'unavailable'
        ? 'IPv6: not available in this kernel, nothing to guard'
        : plan.mode === 'full'
          ? 'IPv6: NOT guarded (--no-ipv6-guard): IPv6 traffic bypasses the tunnel'
          : 'IPv6: untouched (split tunnel)';
    yield plan.killSwitch
      ? `kill switch: on — if tunroute dies, the ${plan.prefixes.length} tunneled prefixes stay unreachable until \`tunroute down\``
      : 'kill switch: off — if tunroute dies, tunneled traffic goes direct again (the watchdog removes the rest)';
  }
  yield* describeDns(plan);
  for (const n of plan.notes) yield `note: ${n}`;
  if (plan.changes.length === 0) {
    yield 'changes: none besides the device.';
  } else {
    yield `changes (${plan.changes.length}, applied with ip -batch in this order):`;
    for (let i = 0; i < plan.changes.length && i < shown; i++) yield `  ${toIpCommand(plan.changes[i], 'apply')}`;
    if (plan.changes.length > shown) yield `  … and ${plan.changes.length - shown} more`;
  }
  const journal = opts.journal === undefined ? '' : ` (${opts.journal} lists them meanwhile)`;
  yield `on exit or \`tunroute down\`: every change above is deleted, in reverse order${journal}; the device vanishes with tunroute.`;
}
