/**
 * `tunroute why NAME[:PORT]` and the name behind a fake address: does the name enter the device
 * (a fake address from the pool) or stay direct (the system's resolver, its real address), by
 * which domain route, which outbound carries its flows, which resolver its other queries reach,
 * and — asked of the running tunroute — which fake address it holds now.
 *
 * The plan's DNS part (plan.ts DnsPlan, also in the journal) holds everything but the rules,
 * whose decision arrives as a NameDecider (this layer does not import the router).
 */
import { TunrouteError, shown } from '../errors.js';
import { parseDomain } from '../net/domain.js';
import { DomainSet, parseDomainPattern } from '../net/domain-set.js';
import { ipToU32, parseCidr } from '../net/ipv4.js';
import { domainRoutesOfPlan } from './domain-routes.js';
import type { DnsPlan } from './plan.js';
import type { OutboundDecision, WhyProto } from './why.js';

const PROTO_NUMBER: Record<WhyProto, number> = { tcp: 6, udp: 17, icmp: 1 };

export interface NameDestination {
  /** Canonical name. */
  name: string;
  port?: number;
  proto: WhyProto;
}

/** `NAME` or `NAME:PORT`; undefined when the text is not a name (an address, or nothing valid). */
export function parseNameDestination(text: string, proto: WhyProto = 'tcp'): NameDestination | undefined {
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(text);
  if (m === null) return undefined;
  const host = m[1];
  if (ipToU32(host) !== undefined || host.includes(':') || host.startsWith('[')) return undefined;
  const r = parseDomain(host);
  if (!r.ok || !/[a-z]/.test(r.name)) return undefined;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && port > 65535) {
    throw new TunrouteError('TR_BAD_FLAG', `${shown(text)} has port ${port}: a port is 0–65535.`);
  }
  return { name: r.name, port, proto };
}

export interface NameDecider {
  /** `domain`: the pattern of the domain rule that decided, when one did. */
  whyName(name: string, dstIp: number, protocol: number, dstPort: number): OutboundDecision & { readonly domain?: string };
}

/** What the running tunroute's fake-IP table holds for the name (control socket `fakeip`). */
export interface FakeIpEntry {
  ip?: string;
  inUse?: boolean;
}

export interface WhyNameAnswer {
  destination: NameDestination;
  dev: string;
  mode: DnsPlan['mode'];
  /** Whether its flows enter the device by name (a fake address). */
  byName: boolean;
  /** The domain route that decided, and where it came from. */
  pattern?: string;
  source?: string;
  /** The fake address it holds in the running tunroute, if asked and any. */
  fakeIp?: string;
  outbound?: OutboundDecision;
  /** Which resolver its queries reach (other than a fake A). */
  resolver: string;
  text: string;
}

function destText(d: NameDestination): string {
  return d.port === undefined ? `${d.proto} to ${d.name}` : `${d.proto} to ${d.name}:${d.port}`;
}

/** The split-DNS server for a name, as "SERVER through OUTBOUND (dns.servers[i]: PATTERN)", or undefined. */
function splitServerOf(dns: DnsPlan, name: string): string | undefined {
  const set = new DomainSet<number>();
  (dns.servers ?? []).forEach((s, i) => {
    for (const t of s.domains) {
      const p = parseDomainPattern(t);
      if (p.ok) set.add(p.pattern, i);
    }
  });
  const m = set.match(name);
  if (m === undefined) return undefined;
  const s = dns.servers![m.value];
  return `${s.server} through ${s.outbound === undefined ? 'the outbound that routes it' : `'${s.outbound}'`} (dns.servers[${m.value}])`;
}

/**
 * A name a domain rule sends to a WireGuard tunnel (dns/tunnel-dns.ts): asked of the tunnel's
 * DNS through it, real answer, never a fake address. undefined for any other name.
 */
function throughTunnel(dev: string, dns: DnsPlan, d: NameDestination, decider: NameDecider | undefined): WhyNameAnswer | undefined {
  if (dns.mode === 'off' || decider === undefined || dns.tunnels === undefined || dns.tunnels.length === 0) return undefined;
  // A decision by name only: the address given is none of the rules' (0.0.0.0 never matches a CIDR rule but /0).
  const outbound = decider.whyName(d.name, 0, PROTO_NUMBER[d.proto], d.port ?? 0);
  const tunnel = outbound.domain === undefined ? undefined : dns.tunnels.find((t) => t.outbound === outbound.outbound);
  if (tunnel === undefined) return undefined;
  const resolver = tunnel.server === undefined ? `nobody: tunnel '${tunnel.outbound}' has no IPv4 DNS server, so its names get SERVFAIL (set DNS = / dns on the outbound)` : `${tunnel.server}:53 through tunnel '${tunnel.outbound}'`;
  const text =
    `${destText(d)} goes through WireGuard tunnel '${tunnel.outbound}': ${outbound.reason}\n` +
    `DNS: its queries are answered by ${resolver}, with the real address (no fake address), and its flows go where that address goes (the tunnel's AllowedIPs).`;
  return { destination: d, dev, mode: dns.mode, byName: false, outbound, resolver, text };
}

export function explainName(dev: string, dns: DnsPlan, d: NameDestination, decider?: NameDecider, entry?: FakeIpEntry): WhyNameAnswer {
  const a = explainNameOnly(dev, dns, d, decider, entry);
  const line = resolvedLine(dev, dns);
  return line === undefined ? a : { ...a, text: `${a.text}\n${line}` };
}

/** How the system's queries reach tunroute when /etc/resolv.conf names systemd-resolved's stub (routes/resolved.ts). */
function resolvedLine(dev: string, dns: DnsPlan): string | undefined {
  const rd = dns.resolved;
  if (rd === undefined || dns.mode === 'off') return undefined;
  if (rd.link !== undefined) return `systemd-resolved: the system asks ${rd.stub}, which sends every query into ${rd.link.dev} (per-link DNS ${rd.link.dns}, routing domain ~.); its upstream servers are routed into ${dev} too.`;
  return `systemd-resolved: the system asks ${rd.stub}; no per-link DNS on ${dev} (${rd.linkOff ?? 'not planned'}), so only the queries it sends to its upstream servers enter ${dev}.`;
}

function explainNameOnly(dev: string, dns: DnsPlan, d: NameDestination, decider?: NameDecider, entry?: FakeIpEntry): WhyNameAnswer {
  const tunneled = throughTunnel(dev, dns, d, decider);
  if (tunneled !== undefined) return tunneled;
  const split = splitServerOf(dns, d.name);
  const upstream = `${dns.upstream ?? '?'} through ${dns.upstreamOutbound === undefined ? 'the outbound that routes it' : `'${dns.upstreamOutbound}'`} (dns.upstream)`;
  const base = { destination: d, dev, mode: dns.mode };
  if (dns.mode !== 'fakeip') {
    const resolver = dns.mode === 'off' ? "the host's own resolver (dns.mode off)" : (split ?? upstream);
    const text = `${destText(d)} is not routed by name (dns.mode ${dns.mode}): its flows go where the address it resolves to goes; ask \`tunroute why ADDR\` about that address.\nDNS: its queries ${dns.mode === 'off' ? 'go the host\'s way' : `are answered by ${resolver}`}.`;
    return { ...base, byName: false, resolver, text };
  }
  const routes = domainRoutesOfPlan(dns.domains);
  const a = routes.explain(d.name);
  const rule = a.pattern === undefined ? undefined : `${a.pattern} (${a.source})`;
  if (!a.tunneled) {
    const system = dns.directUpstream ?? dns.resolvers.find((r) => !r.ip.startsWith('127.'))?.ip;
    const resolver = split ?? (dns.splitByDomain ? `the system's resolver ${system ?? '(none found)'}, out of the default route's device` : upstream);
    const why = rule !== undefined ? `${rule} keeps it direct` : 'no routes.includeDomains / domainFiles pattern covers it (split tunnel by domain)';
    const text =
      `${destText(d)} does not enter ${dev} by name: ${why}. It is answered with its real address by ${resolver}, and its flows go where that address goes ` +
      `(ask \`tunroute why ADDR\`).`;
    return { ...base, byName: false, pattern: a.pattern, source: a.source, resolver, text };
  }
  const why = rule !== undefined ? `${rule} covers it` : 'every name does (a full fake-IP tunnel)';
  const fake = entry?.ip;
  const held = fake === undefined ? (entry === undefined ? '' : ' It holds no fake address right now (not asked yet, or forgotten).') : ` Now it holds ${fake}${entry?.inUse === true ? ' (used by a live flow)' : ''}.`;
  let text = `${destText(d)} enters ${dev} by name: ${why}, so its A query is answered with a fake address from ${dns.fakeIpRange ?? 'the pool'} and its flows reach the outbound as the name (the proxy resolves it).${held}`;
  let outbound: OutboundDecision | undefined;
  if (decider !== undefined) {
    const range = parseCidr(dns.fakeIpRange ?? '198.18.0.0/15');
    const ip = (fake === undefined ? undefined : ipToU32(fake)) ?? (range === undefined ? 0 : range.addr + 1);
    outbound = decider.whyName(d.name, ip, PROTO_NUMBER[d.proto], d.port ?? 0);
    const noPort = d.port === undefined && d.proto !== 'icmp' ? ' (no port given: rules with ports were not considered)' : '';
    text += `\nthen: ${outbound.reason}${noPort}`;
  }
  const resolver = split ?? upstream;
  text += `\nDNS: AAAA/HTTPS/SVCB get an empty answer; other types are answered by ${resolver}.`;
  return { ...base, byName: true, pattern: a.pattern, source: a.source, fakeIp: fake, outbound, resolver, text };
}
