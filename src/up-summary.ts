/**
 * What a person needs to know once `up` is up, in a few lines: the mode, what enters the
 * device, which outbound carries what. Pure: the same config and plan give the same lines.
 * A proxy's user and password never appear (only host and port).
 */
import type { Config } from './config/schema.js';
import { BLOCK_OUTBOUND, PROXY_OUTBOUND } from './config/schema.js';
import type { RoutePlan } from './routes/plan.js';
import { cidrToString } from './net/ipv4.js';
import { formatEndpoint } from './net/endpoint.js';
import type { ProxyUrl } from './outbound/proxy-url.js';

/** How many of the routed prefixes the summary names before "… and N more". */
const SHOWN_PREFIXES = 3;

export interface UpSummary {
  /** full | split | none, as the plan says. */
  mode: RoutePlan['mode'];
  /** Where flows that no rule matches go. */
  defaultOutbound: string;
  /** Every outbound but the built-in block, by name. */
  outbounds: string[];
  /** The human lines, in order. */
  lines: string[];
}

function socksText(u: ProxyUrl): string {
  // host:port only: the URL's user:pass is a secret.
  return `${u.scheme === 'http' ? 'HTTP CONNECT' : 'SOCKS5'} proxy ${u.host}:${u.port}`;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The mode line: what enters the device. */
function modeLine(plan: RoutePlan): string {
  if (plan.mode === 'full') {
    return `full tunnel: everything enters ${plan.dev} except ${plural(plan.direct.length, 'direct prefix', 'direct prefixes')} (loopback, the LAN, the upstreams' own addresses; \`tunroute why ADDR\` explains one)`;
  }
  if (plan.mode === 'none') return `no routes: only ${plan.dev}'s own subnet enters it`;
  const named = plan.prefixes.slice(0, SHOWN_PREFIXES).map(cidrToString).join(', ');
  const more = plan.prefixes.length > SHOWN_PREFIXES ? ` … and ${plan.prefixes.length - SHOWN_PREFIXES} more` : '';
  return `split tunnel: ${plural(plan.prefixes.length, 'prefix enters', 'prefixes enter')} ${plan.dev}: ${named}${more}`;
}

/** The summary of a running `up`: `config` after the tunnels were folded in, `plan` as applied. */
export function upSummary(config: Config, plan: RoutePlan): UpSummary {
  const defaultOutbound = config.defaultOutbound ?? (config.proxy !== undefined ? PROXY_OUTBOUND : BLOCK_OUTBOUND);
  const lines = [modeLine(plan)];
  const outbounds: string[] = [];
  const rulesFor = (name: string): number => config.rules.filter((r) => r.outbound === name).length;
  const role = (name: string): string => {
    const parts: string[] = [];
    if (name === defaultOutbound) parts.push('the default');
    const n = rulesFor(name);
    if (n > 0) parts.push(plural(n, 'rule', 'rules'));
    return parts.length > 0 ? ` (${parts.join(', ')})` : '';
  };
  if (config.proxy !== undefined) {
    outbounds.push(PROXY_OUTBOUND);
    lines.push(`outbound ${PROXY_OUTBOUND}: ${socksText(config.proxy)}${role(PROXY_OUTBOUND)}`);
  }
  for (const o of config.outbounds) {
    if (o.type === 'block') continue;
    outbounds.push(o.name);
    if (o.type === 'socks5' || o.type === 'http') lines.push(`outbound ${o.name}: ${socksText(o.url)}${role(o.name)}`);
    else {
      const peers = o.peers.map((p) => (p.endpoint === undefined ? 'a peer with no endpoint' : formatEndpoint(p.endpoint))).join(', ');
      lines.push(`outbound ${o.name}: WireGuard tunnel to ${peers}${role(o.name)}`);
    }
  }
  if (defaultOutbound === BLOCK_OUTBOUND) lines.push(`no upstream for the rest: flows that no rule sends elsewhere are refused (outbound ${BLOCK_OUTBOUND})`);
  const via = config.dns.outbound ?? `the outbound that routes ${formatEndpoint(config.dns.upstream)}`;
  if (config.dns.mode === 'hijack') lines.push(`dns hijack: queries routed into ${plan.dev} are answered from ${formatEndpoint(config.dns.upstream)} through ${via}`);
  if (config.dns.mode === 'fakeip') {
    lines.push(`dns fakeip: names get addresses from ${cidrToString(config.dns.fakeIpRange)} and their flows go out by name; other queries through ${via}`);
  }
  const rd = plan.dns.resolved;
  if (rd?.link !== undefined) lines.push(`systemd-resolved (${rd.stub}): every query goes into ${rd.link.dev} (per-link DNS ${rd.link.dns}, routing domain ~.)`);
  else if (rd !== undefined) lines.push(`systemd-resolved (${rd.stub}): no per-link DNS on ${plan.dev} (${rd.linkOff ?? 'not planned'}); only its upstream servers are routed into it`);
  if (plan.excludeUids.length > 0) lines.push(`never enters ${plan.dev}: ${plan.excludeUids.map(([a, b]) => (a === b ? `uid ${a}` : `uids ${a}-${b}`)).join(', ')}`);
  return { mode: plan.mode, defaultOutbound, outbounds, lines };
}
