/**
 * Per-app routing (`tunroute exec`, `routes.excludeCgroups`): the pure plan. What a running
 * tunroute sets up so that every socket of a program (children included) takes one path,
 * whatever its destination:
 *
 *   cgroup v2   <cgroup2>/<base>/direct/          a program `exec --direct` runs in a leaf below
 *               <cgroup2>/<base>/out-NAME/        … `exec --outbound NAME` (one per outbound)
 *               (base: "tunroute-DEV", or "tunroute-netns-NS-DEV" inside a named network
 *               namespace: cgroups are global, and tunroutes of different namespaces or
 *               devices must never share one)
 *   nftables    table inet <base>:
 *                 chain output (route, mangle): a socket of cgroup direct/ (or of an excluded
 *                   cgroup) → mark DIRECT; of out-NAME/ → mark OUT+i. A route chain: the
 *                   kernel looks the route up again after the mark changed.
 *                 chain postrouting (nat): OUT+i leaving by tun0 → snat to the outbound's
 *                   source address (198.19.255.254 - i with the default device address);
 *                   DIRECT leaving by another device with tun0's address as its source →
 *                   masquerade (see below).
 *   ip rules    fwmark DIRECT lookup main (priority P, before tunroute's table: the main
 *               table's own default route, never tun0 — as for an excluded user);
 *               fwmark OUT+i lookup A (priority P), where table A (tunroute's table + 1) holds
 *               `default dev tun0`: all of that program's traffic enters tun0.
 *
 * Why a source address per outbound: a packet that enters tun0 carries nothing of its socket
 * but its addresses, so tunroute cannot see which program sent it. The nat rule gives the
 * flows of each out-NAME/ cgroup a source address of their own, and the relay routes a flow
 * from that address to NAME before any rule (relay/flow-route.ts); conntrack turns the
 * replies back. (A DSCP codepoint would also do, but the app can set that itself; matching
 * the socket's cgroup at SYN time would mean a netlink socket-diag query per flow.)
 *
 * Why masquerade for DIRECT: a TCP socket takes its source address from the route the kernel
 * found at connect(), before the mark: in a full tunnel that is tun0's own address, which
 * means nothing on the uplink. The nat rule gives such packets the uplink's address; packets
 * whose source already is the uplink's (a split tunnel) pass untouched. The replies come back
 * on the uplink for a source that the unmarked table routes into tun0: the uplink's
 * reverse-path filter must be off or loose (2, as most distributions set it), not strict.
 *
 * Needs policy routing (tunroute's own table): in main-table mode the main table holds tun0's
 * routes, so there is no table to send --direct to. excludeCgroups forces a table of its own,
 * as excludeUids does; a split tunnel without it has per-app routing off, and `exec` says how
 * to turn it on.
 */
import { u32ToIp } from '../net/ipv4.js';
import type { Config } from '../config/schema.js';
import { PROXY_OUTBOUND } from '../config/schema.js';

/** fwmark of a socket that bypasses tun0 ("TR" and 00). */
export const APP_MARK_DIRECT = 0x5452_0000;
/** fwmark of a socket that goes to outbound i: APP_MARK_OUTBOUND + i. */
export const APP_MARK_OUTBOUND = 0x5452_0001;
/** Outbounds an exec can choose: a /28 of source addresses is plenty and stays clear of the pool's start. */
export const APP_MAX_OUTBOUNDS = 14;

/** What the journal keeps of per-app routing: enough to undo it, and for `exec` to find its cgroups. */
export interface JournalApps {
  nftTable: string;
  /** Created parents first; removed in reverse. */
  cgroups: string[];
  /** The cgroup `exec --direct` puts its program under. */
  direct: string;
  /** Outbound name → the cgroup `exec --outbound NAME` puts its program under. */
  outbounds: Record<string, string>;
}

/** tunroute's cgroups and nft tables, and nothing else: what a journal may name (checked before `down` acts). */
export const APPS_NFT_TABLE_RE = /^tunroute(-netns-[A-Za-z0-9_.-]{1,64})?-[A-Za-z0-9_.-]{1,15}$/;
export const APPS_CGROUP_RE = /^\/sys\/fs\/cgroup(\/unified)?\/tunroute(-netns-[A-Za-z0-9_.-]{1,64})?-[A-Za-z0-9_.-]{1,15}(\/(direct|out-[A-Za-z0-9_.-]{1,32}))?$/;

/** Where cgroup v2 is and what tunroute's subtree under it is called (read by cgroup.ts). */
export interface AppsEnv {
  /** The cgroup2 mount point, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified (hybrid layout). */
  readonly mount: string;
  /** The subtree's name: "tunroute" or "tunroute-netns-NS". */
  readonly base: string;
}

export interface AppGroup {
  /** Absolute path of the cgroup. */
  readonly path: string;
  /** Its depth below the cgroup2 root (nft's `level`). */
  readonly level: number;
  readonly mark: number;
}

export interface AppOutbound extends AppGroup {
  readonly name: string;
  /** The source address its flows get (uint32). */
  readonly addr: number;
}

export interface AppsPlan {
  readonly env: AppsEnv;
  /** nft table name (family inet): the subtree's name. */
  readonly nftTable: string;
  /** <mount>/<base> */
  readonly root: string;
  readonly direct: AppGroup;
  readonly outbounds: readonly AppOutbound[];
  /** routes.excludeCgroups as written, with their depth. */
  readonly excluded: ReadonlyArray<{ readonly path: string; readonly level: number }>;
  /** The table that sends everything into tun0. */
  readonly table: number;
  readonly dev: string;
  /** The device's own address (uint32): the source a full tunnel gives sockets. */
  readonly deviceAddr: number;
}

/** The outbounds a program can be sent to: the ones that terminate flows (not block, not WireGuard). */
export function appOutboundNames(config: Config): string[] {
  const names: string[] = [];
  if (config.proxy !== undefined) names.push(PROXY_OUTBOUND);
  for (const o of config.outbounds) if (o.type === 'socks5' || o.type === 'http') names.push(o.name);
  return names.slice(0, APP_MAX_OUTBOUNDS);
}

/** The source address for outbound i: the top of the device's subnet, counting down. */
export function appSourceAddr(config: Config, i: number): number {
  const a = config.tun.address;
  const size = 2 ** (32 - a.prefix);
  const network = a.addr - (a.addr % size);
  return network + size - 2 - i;
}

/** The cgroup path as nft reads it: relative to /sys/fs/cgroup, where nft resolves it. */
export function nftCgroupPath(path: string): string {
  return path.replace(/^\/sys\/fs\/cgroup\/?/, '');
}

/** A path relative to the cgroup2 root, joined onto the mount, and its depth. */
function under(env: AppsEnv, rel: string): { path: string; level: number } {
  const parts = rel.split('/').filter((p) => p !== '');
  return { path: `${env.mount}/${parts.join('/')}`, level: parts.length };
}

export function planApps(config: Config, env: AppsEnv, table: number, dev: string): AppsPlan {
  // One subtree and table per device: two tunroutes of one namespace never share them.
  const name = `${env.base}-${dev}`;
  const root = `${env.mount}/${name}`;
  const direct = { ...under(env, `${name}/direct`), mark: APP_MARK_DIRECT };
  const outbounds = appOutboundNames(config).map((o, i) => ({ name: o, ...under(env, `${name}/out-${o}`), mark: APP_MARK_OUTBOUND + i, addr: appSourceAddr(config, i) }));
  const excluded = config.routes.excludeCgroups.map((p) => under(env, p));
  return { env, nftTable: name, root, direct, outbounds, excluded, table, dev, deviceAddr: config.tun.address.addr };
}

/** The cgroups `up` creates, parents first (removed in reverse). */
export function appCgroups(p: AppsPlan): string[] {
  return [p.root, p.direct.path, ...p.outbounds.map((o) => o.path)];
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/** The nft script that creates tunroute's table (one transaction: all or nothing). */
export function nftRuleset(p: AppsPlan): string {
  const mark = (g: { path: string; level: number }, m: number): string => `    socket cgroupv2 level ${g.level} "${nftCgroupPath(g.path)}" meta mark set ${hex(m)}`;
  return [
    `table inet ${p.nftTable} {`,
    '  chain output {',
    '    type route hook output priority mangle; policy accept;',
    ...p.excluded.map((g) => mark(g, APP_MARK_DIRECT)),
    mark(p.direct, p.direct.mark),
    ...p.outbounds.map((o) => mark(o, o.mark)),
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname != "${p.dev}" meta mark ${hex(APP_MARK_DIRECT)} ip saddr ${u32ToIp(p.deviceAddr)} masquerade`,
    ...p.outbounds.map((o) => `    oifname "${p.dev}" meta mark ${hex(o.mark)} snat ip to ${u32ToIp(o.addr)}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** The source address → outbound map the relay consults first (see relay/flow-route.ts). */
export function appSources(p: AppsPlan): Map<number, string> {
  return new Map(p.outbounds.map((o) => [o.addr, o.name]));
}

/** What the journal keeps of a plan. */
export function journalApps(p: AppsPlan): JournalApps {
  return { nftTable: p.nftTable, cgroups: appCgroups(p), direct: p.direct.path, outbounds: Object.fromEntries(p.outbounds.map((o) => [o.name, o.path])) };
}
