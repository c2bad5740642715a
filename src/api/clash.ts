/**
 * The Clash API's JSON shapes (as sing-box's and mihomo's `external_controller` serve them, the
 * fields dashboards such as yacd and metacubexd read), built from what the source reports. Pure:
 * no I/O, no timers; the server (http.ts) sends them.
 *
 * Mapping:
 *   a flow (TCP or UDP)  → a connection; id "tcp-7" / "udp-3" (our flow ids are per protocol)
 *   an outbound          → a proxy (socks5 → Socks5, block → Reject, wireguard → WireGuard)
 *   a rule               → one rule per CIDR / domain pattern; protocol and ports → an AND rule
 *   the default outbound → a final Match rule, and the GLOBAL selector's `now`
 */
import type { TcpFlowInfo } from '../relay/tcp-relay.js';
import type { UdpFlowInfo } from '../relay/udp-relay.js';
import type { Config } from '../config/schema.js';
import { cidrToString } from '../net/ipv4.js';
import type { ApiOutbound } from './source.js';

export interface ClashVersion {
  version: string;
  premium: boolean;
  meta: boolean;
}

export interface ClashConfigs {
  port: number;
  'socks-port': number;
  'redir-port': number;
  'tproxy-port': number;
  'mixed-port': number;
  'allow-lan': boolean;
  'bind-address': string;
  mode: 'rule' | 'global' | 'direct';
  'log-level': string;
  ipv6: boolean;
  tun: { enable: boolean; device: string; stack: string };
}

export interface ClashRule {
  type: string;
  payload: string;
  proxy: string;
  size: number;
}

export interface ClashProxy {
  name: string;
  type: string;
  udp: boolean;
  history: Array<{ time: string; delay: number }>;
  alive?: boolean;
  now?: string;
  all?: string[];
}

export interface ClashConnectionMetadata {
  network: 'tcp' | 'udp';
  type: string;
  sourceIP: string;
  sourcePort: string;
  destinationIP: string;
  destinationPort: string;
  host: string;
  dnsMode: string;
  processPath: string;
}

export interface ClashConnection {
  id: string;
  metadata: ClashConnectionMetadata;
  upload: number;
  download: number;
  start: string;
  chains: string[];
  rule: string;
  rulePayload: string;
}

export interface ClashConnections {
  downloadTotal: number;
  uploadTotal: number;
  connections: ClashConnection[];
  memory: number;
}

export interface ClashTraffic {
  up: number;
  down: number;
}

export interface ClashMemory {
  inuse: number;
  oslimit: number;
}

export function clashVersion(version: string): ClashVersion {
  return { version: `tunroute ${version}`, premium: true, meta: true };
}

export function clashConfigs(o: { logLevel: string; device: string }): ClashConfigs {
  return {
    port: 0,
    'socks-port': 0,
    'redir-port': 0,
    'tproxy-port': 0,
    'mixed-port': 0,
    'allow-lan': false,
    'bind-address': '*',
    mode: 'rule',
    'log-level': clashLogLevelName(o.logLevel),
    ipv6: false,
    tun: { enable: true, device: o.device, stack: 'tunroute' },
  };
}

function clashLogLevelName(pinoLevel: string): string {
  switch (pinoLevel) {
    case 'trace':
    case 'debug':
      return 'debug';
    case 'warn':
      return 'warning';
    case 'error':
    case 'fatal':
      return 'error';
    case 'silent':
      return 'silent';
    default:
      return 'info';
  }
}

/** A domain pattern (net/domain-set.ts) as Clash names its kind: `=a.b` exact, `*.a.b` and `a.b` suffixes. */
function domainRule(pattern: string): { type: string; payload: string } {
  if (pattern.startsWith('=')) return { type: 'Domain', payload: pattern.slice(1) };
  if (pattern.startsWith('*.')) return { type: 'DomainSuffix', payload: pattern.slice(2) };
  return { type: 'DomainSuffix', payload: pattern };
}

function portText(p: number | [number, number]): string {
  return typeof p === 'number' ? String(p) : `${p[0]}-${p[1]}`;
}

export function clashRules(rules: Config['rules'], defaultOutbound: string): { rules: ClashRule[] } {
  const out: ClashRule[] = [];
  for (const r of rules) {
    const matches: Array<{ type: string; payload: string }> = [
      ...(r.cidrs ?? []).map((c) => ({ type: 'IPCIDR', payload: cidrToString(c) })),
      ...(r.domains ?? []).map(domainRule),
    ];
    const conds: string[] = [];
    if (r.protocol !== undefined) conds.push(`(Network,${r.protocol})`);
    if (r.ports !== undefined) conds.push(`(DstPort,${r.ports.map(portText).join('/')})`);
    if (matches.length === 0) {
      // Only protocol / ports: one rule over those.
      out.push(conds.length === 1 ? { ...splitCond(conds[0]), proxy: r.outbound, size: -1 } : { type: 'AND', payload: `(${conds.join(' && ')})`, proxy: r.outbound, size: -1 });
      continue;
    }
    for (const m of matches) {
      if (conds.length === 0) out.push({ ...m, proxy: r.outbound, size: -1 });
      else out.push({ type: 'AND', payload: `((${m.type},${m.payload}) && ${conds.join(' && ')})`, proxy: r.outbound, size: -1 });
    }
  }
  out.push({ type: 'Match', payload: '', proxy: defaultOutbound, size: -1 });
  return { rules: out };
}

/** "(Network,udp)" → { type: Network, payload: udp }. */
function splitCond(c: string): { type: string; payload: string } {
  const [type, payload] = c.slice(1, -1).split(',', 2);
  return { type, payload: payload ?? '' };
}

const PROXY_TYPE: Record<string, string> = { socks5: 'Socks5', block: 'Reject', wireguard: 'WireGuard', direct: 'Direct', http: 'Http', dns: 'Dns' };

/** The outbounds as proxies, and GLOBAL: the selector dashboards look for, pointing at the default. */
export function clashProxies(outbounds: readonly ApiOutbound[], defaultOutbound: string): { proxies: Record<string, ClashProxy> } {
  const proxies: Record<string, ClashProxy> = {};
  for (const o of outbounds) {
    proxies[o.name] = { name: o.name, type: PROXY_TYPE[o.kind] ?? o.kind, udp: o.udp, history: [], alive: true };
  }
  proxies.GLOBAL = { name: 'GLOBAL', type: 'Selector', udp: true, history: [], now: defaultOutbound, all: outbounds.map((o) => o.name) };
  return { proxies };
}

/** "10.0.0.2:41000" → ["10.0.0.2", "41000"]. */
function hostPort(s: string): [string, string] {
  const i = s.lastIndexOf(':');
  return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + 1)];
}

function connectionOf(proto: 'tcp' | 'udp', f: TcpFlowInfo, nowMs: number, ruleOf: (f: TcpFlowInfo) => string): ClashConnection {
  const [sourceIP, sourcePort] = hostPort(f.src);
  const [dstHost, destinationPort] = hostPort(f.dst);
  return {
    id: `${proto}-${f.id}`,
    metadata: {
      network: proto,
      type: 'Tun',
      sourceIP,
      sourcePort,
      // A fake-IP flow is known by its name; its address is ours, not the destination's.
      destinationIP: f.host === undefined ? dstHost : '',
      destinationPort,
      host: f.host ?? '',
      dnsMode: f.host === undefined ? 'normal' : 'fakeip',
      processPath: '',
    },
    upload: f.bytesUp,
    download: f.bytesDown,
    start: new Date(nowMs - f.ageMs).toISOString(),
    chains: [f.outbound],
    rule: ruleOf(f),
    rulePayload: '',
  };
}

/** The /connections object: every open flow, the byte totals, the process's memory. */
export function clashConnections(
  tcp: readonly TcpFlowInfo[],
  udp: readonly UdpFlowInfo[],
  totals: { up: number; down: number; memory: number; nowMs: number },
  defaultOutbound: string,
): ClashConnections {
  const ruleOf = (f: TcpFlowInfo): string => (f.outbound === defaultOutbound ? 'Match' : 'Rule');
  return {
    downloadTotal: totals.down,
    uploadTotal: totals.up,
    connections: [...tcp.map((f) => connectionOf('tcp', f, totals.nowMs, ruleOf)), ...udp.map((f) => connectionOf('udp', f, totals.nowMs, ruleOf))],
    memory: totals.memory,
  };
}

/** "tcp-7" → ['tcp', 7]; undefined when it is not one of our ids. */
export function parseConnectionId(id: string): ['tcp' | 'udp', number] | undefined {
  const m = /^(tcp|udp)-(\d{1,15})$/.exec(id);
  if (m === null) return undefined;
  return [m[1] as 'tcp' | 'udp', Number(m[2])];
}
