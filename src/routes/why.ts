/**
 * `tunroute why ADDR[:PORT]`: does this destination enter the device, by which entry of the
 * plan, and (if it does) which outbound carries it. Against a config (the plan is computed
 * here, like `check`) or against the running tunroute (the plan data in its journal, plus the
 * kernel's own `ip route get` as a cross-check).
 *
 * The outbound decision is the router's (src/router): it arrives as an OutboundDecider, so
 * this layer does not import the router.
 */
import { isIPv6 } from 'node:net';
import { TunrouteError, shown } from '../errors.js';
import type { Config } from '../config/schema.js';
import { cidrToString, ipToU32, parseNetwork, type Cidr } from '../net/ipv4.js';
import { hostKindOf, parseEndpoint } from '../net/endpoint.js';
import { computeRouteSetOf, PrefixBag } from '../net/cidr-set.js';
import { hostProbe, probeRouteEnv, type HostProbe } from './host.js';
import { listStateFiles, ownerAlive, readJournal } from './journal.js';
import { planRoutes, prefixesContain, type ExplainData, type ExplainFile } from './plan.js';

export type WhyProto = 'tcp' | 'udp' | 'icmp';

export interface Destination {
  /** IPv4 dotted quad or IPv6 text. */
  ip: string;
  port?: number;
  proto: WhyProto;
}

const PROTO_NUMBER: Record<WhyProto, number> = { tcp: 6, udp: 17, icmp: 1 };

/** "10.1.2.3", "10.1.2.3:443", "2001:db8::1", "[2001:db8::1]:443". */
export function parseDestination(text: string, proto: WhyProto = 'tcp'): Destination {
  const bad = (): TunrouteError =>
    new TunrouteError('TR_BAD_FLAG', `${shown(text)} is not a destination: write an address, optionally with a port, like 203.0.113.7 or 203.0.113.7:443.`);
  const ep = parseEndpoint(text);
  if (ep !== undefined) {
    if (ep.kind === 'name') throw bad();
    return { ip: ep.host, port: ep.port, proto };
  }
  // Without a port: an address as it is, or an IPv6 one in brackets.
  const host = /^\[(.+)\]$/.exec(text)?.[1] ?? text;
  const kind = hostKindOf(host);
  if (kind !== 'ipv4' && kind !== 'ipv6') throw bad();
  return { ip: host, proto };
}

export interface OutboundDecision {
  outbound: string;
  reason: string;
}

export interface OutboundDecider {
  why(dstIp: number, protocol: number, dstPort: number): OutboundDecision;
}

export interface WhyAnswer {
  destination: Destination;
  dev: string;
  enters: boolean;
  /** The device route that carries it. */
  route?: string;
  /** The most specific include / exclude that contains it: [cidr, source]. */
  include?: [string, string];
  exclude?: [string, string];
  outbound?: OutboundDecision;
  /** `ip route get` on this host, when asked against the running tunroute. */
  kernel?: string;
  text: string;
}

/** Calls `each(cidr, source)` for every entry, the files' line by line (no array of a million pairs). */
function forEachEntry(list: ReadonlyArray<[string, string]>, files: readonly ExplainFile[] | undefined, each: (cidr: string, source: () => string) => void): void {
  for (const e of list) each(e[0], () => e[1]);
  for (const f of files ?? []) {
    const text = f.cidrs;
    let line = 1;
    for (let from = 0; from <= text.length; line++) {
      let to = text.indexOf('\n', from);
      if (to < 0) to = text.length;
      if (to > from) {
        const n = line;
        each(text.slice(from, to), () => `${f.file}:${n}`);
      }
      from = to + 1;
    }
  }
}

function mostSpecific(list: ReadonlyArray<[string, string]>, files: readonly ExplainFile[] | undefined, addr: number): [string, string] | undefined {
  let best: [string, string] | undefined;
  let bestLen = -1;
  forEachEntry(list, files, (cidr, source) => {
    const p = parseNetwork(cidr);
    if (p === undefined || p.prefix <= bestLen) return;
    if (addr >= p.addr && addr < p.addr + 2 ** (32 - p.prefix)) {
      best = [cidr, source()];
      bestLen = p.prefix;
    }
  });
  return best;
}

function bagOf(list: ReadonlyArray<[string, string]>, files: readonly ExplainFile[] | undefined): PrefixBag {
  const bag = new PrefixBag();
  forEachEntry(list, files, (cidr) => {
    const p = parseNetwork(cidr);
    if (p !== undefined) bag.addCidr(p);
  });
  return bag;
}

function where(e: ExplainData): string {
  return e.table === 'main' ? 'main table' : `table ${e.table}, ip rule priority ${e.priority + 1}`;
}

function destText(d: Destination): string {
  const host = isIPv6(d.ip) ? `[${d.ip}]` : d.ip;
  return d.port === undefined ? `${d.proto} to ${d.ip}` : `${d.proto} to ${host}:${d.port}`;
}

/**
 * Explain one destination against the plan data. `prefixes` are the plan's routes when the
 * caller has them (against a config); otherwise they are computed again from `e`.
 */
export function explainDestination(e: ExplainData, d: Destination, decider?: OutboundDecider, kernel?: string, prefixes?: readonly Cidr[]): WhyAnswer {
  const base = { destination: d, dev: e.dev };
  const kernelLine = kernel === undefined ? '' : `\nkernel (ip route get ${d.ip}): ${kernel}`;
  if (isIPv6(d.ip)) {
    const lower = d.ip.toLowerCase();
    const local = /^fe[89ab]/.test(lower) || lower.startsWith('ff');
    const text =
      e.ipv6 === 'guarded' && !local
        ? `${destText(d)} is blocked: the IPv6 leak guard makes IPv6 unreachable (${where(e)}) while the full tunnel runs; only link-local and multicast pass. Turn it off with --no-ipv6-guard.`
        : `${destText(d)} does not enter ${e.dev}: tunroute carries IPv4 only; IPv6 goes the host's way${e.ipv6 === 'guarded' ? ' (link-local and multicast pass the leak guard)' : ''}.`;
    return { ...base, enters: false, text: text + kernelLine };
  }
  const addr = ipToU32(d.ip)!;
  const include = mostSpecific(e.include, e.includeFiles, addr);
  const exclude = mostSpecific(e.exclude, e.excludeFiles, addr);
  const routes = prefixes ?? (e.mode === 'none' ? [] : computeRouteSetOf(bagOf(e.include, e.includeFiles), bagOf(e.exclude, e.excludeFiles)));
  // A system resolver routed in whatever the excludes say (plan.ts planResolverRoutes).
  const resolver = mostSpecific(e.resolverRoutes ?? [], undefined, addr);
  const route = prefixesContain(routes, addr) ?? (resolver === undefined ? undefined : parseNetwork(resolver[0]));
  const uidNote =
    e.excludeUids.length === 0
      ? ''
      : ` Except traffic of ${e.excludeUids.map(([a, b]) => (a === b ? `uid ${a}` : `uids ${a}-${b}`)).join(', ')}: it never enters ${e.dev} (ip rule priority ${e.priority}).`;
  const subnet = e.deviceSubnet === undefined ? undefined : parseNetwork(e.deviceSubnet);
  if (route === undefined && subnet !== undefined && addr >= subnet.addr && addr < subnet.addr + 2 ** (32 - subnet.prefix)) {
    return { ...base, enters: true, route: e.deviceSubnet, include, exclude, text: `${destText(d)} enters ${e.dev}: it lies in the device's own subnet ${e.deviceSubnet} (the kernel's route for the device's address).${kernelLine}` };
  }
  if (route === undefined) {
    let why: string;
    if (e.mode === 'none') why = 'there are no routes into it (no proxy and no --route)';
    else if (exclude !== undefined && include !== undefined) why = `${exclude[0]} is kept direct (${exclude[1]}), although ${include[0]} (${include[1]}) includes it`;
    else if (exclude !== undefined) why = `${exclude[0]} is kept direct (${exclude[1]})`;
    else why = 'no included CIDR contains it (split tunnel: only routes.include and includeFiles enter it)';
    return {
      ...base,
      enters: false,
      include,
      exclude,
      text: `${destText(d)} does not enter ${e.dev}: ${why}. The host's own routes carry it.${kernelLine}`,
    };
  }
  const routeText = cidrToString(route);
  const because =
    resolver !== undefined && (include === undefined || exclude !== undefined)
      ? `${resolver[0]} is a ${resolver[1]}`
      : include !== undefined
        ? `${include[0]} (${include[1]}) includes it and no exclusion covers it`
        : 'it lies in the device\'s routes';
  let text = `${destText(d)} enters ${e.dev}: route ${routeText} dev ${e.dev} (${where(e)}), because ${because}.${uidNote}`;
  let outbound: OutboundDecision | undefined;
  if (decider !== undefined) {
    outbound = decider.why(addr, PROTO_NUMBER[d.proto], d.port ?? 0);
    const noPort = d.port === undefined && d.proto !== 'icmp' ? ' (no port given: rules with ports were not considered)' : '';
    text += `\nthen: ${outbound.reason}${noPort}`;
  }
  return { ...base, enters: true, route: routeText, include, exclude, outbound, text: text + kernelLine };
}

/** `why` against a config: plan it for this host, explain. */
export async function whyFromConfig(
  config: Config,
  d: Destination,
  makeDecider: (e: ExplainData) => OutboundDecider,
  host: HostProbe = hostProbe(),
): Promise<WhyAnswer> {
  const plan = planRoutes(config, await probeRouteEnv(config, host));
  return explainDestination(plan.explain, d, makeDecider(plan.explain), undefined, plan.prefixes);
}

/** The running tunroute's plan data from its journal, and a note when its owner is gone. */
export function explainDataFromJournal(stateDir: string, dev: string | undefined): { explain: ExplainData; note?: string } {
  const { journals } = listStateFiles(stateDir, dev);
  if (journals.length === 0) {
    throw new TunrouteError('TR_CONTROL', `No running tunroute${dev === undefined ? '' : ` on ${dev}`} (no journal in ${stateDir}): ask about a config with -c FILE.`);
  }
  if (journals.length > 1) {
    throw new TunrouteError('TR_BAD_FLAG', `Several tunroutes run (${journals.map((j) => j.dev).join(', ')}): pick one with --tun NAME.`);
  }
  const j = readJournal(journals[0].path);
  if (j === undefined || j.explain === undefined) {
    throw new TunrouteError('TR_CONTROL', `The journal ${journals[0].path} holds no plan to explain: ask about a config with -c FILE.`);
  }
  const note = ownerAlive(j.pid, j.pidStart) ? undefined : `note: tunroute (pid ${j.pid}) no longer runs; its journal remains: run tunroute down.`;
  return { explain: j.explain, note };
}

/** `why` against the running tunroute: its journal's plan data, and the kernel's answer. */
export async function whyFromJournal(
  stateDir: string,
  dev: string | undefined,
  d: Destination,
  makeDecider: (e: ExplainData) => OutboundDecider,
  host: HostProbe = hostProbe(),
): Promise<WhyAnswer> {
  const { explain, note } = explainDataFromJournal(stateDir, dev);
  const kernel = await host.routeGet(d.ip);
  const a = explainDestination(explain, d, makeDecider(explain), kernel);
  if (note !== undefined) a.text += `\n${note}`;
  return a;
}
