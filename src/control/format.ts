/**
 * `tunroute status` for people: a few lines of totals, then the busiest flows, in the spirit of
 * `wg show` and `ss`. Pure and deterministic — the same snapshot gives the same text (no locale,
 * no clock), so tests compare whole strings. Counters that are zero and say nothing (drop
 * reasons, failure reasons) are left out.
 *
 *   tunroute 0.1.0  pid 4242  up 2h 03m  since 2024-05-01T10:00:00.000Z
 *   device    tun0  198.18.0.1/15  mtu 1500  routes 3
 *   packets   in 12,345 (4.5 MiB)  out 11,002 (3.2 MiB)  tcp 12,000  udp 0  icmp echo 3
 *   drops     ipv6 12  fragment 2
 *   tcp       3 open / 57 total  up 1.2 MiB  down 45.6 MiB
 *   upstream  timeout 2  refused 1
 *   outbound  proxy  attempts 57  established 55  failed: timeout 2
 *
 *     ID  SOURCE             DESTINATION        OUTBOUND  STATE        UP       DOWN      AGE
 *     12  198.18.0.1:40112   93.184.216.34:443  proxy     ESTABLISHED  1.2 KiB  4.5 MiB   2m 03s
 *     … and 5 more
 */
import type { TcpFlowInfo } from '../relay/tcp-relay.js';
import type { ServerStatus, StatusSnapshot, TunnelPeerInfo, TunnelStatus } from './protocol.js';

export interface FormatOptions {
  /** Most flow rows to print. Default 20. */
  maxFlows?: number;
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** 0 B, 1023 B, 1.0 KiB, 4.5 MiB, 1.2 GiB (binary units, one decimal). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1024) return `${Math.max(0, Math.round(n))} B`;
  let v = n / 1024;
  let i = 0;
  // Move up while the value would print as 1024.0 or more in this unit.
  while (v >= 1023.95 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${UNITS[i]}`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** 250ms, 45s, 2m 03s, 5h 07m, 3d 04h. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad2(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${pad2(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${pad2(h % 24)}h`;
}

/** 1234567 → 1,234,567 (fixed separators, whatever the locale). */
export function formatCount(n: number): string {
  const s = String(Math.round(n));
  const neg = s.startsWith('-');
  const digits = neg ? s.slice(1) : s;
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return neg ? `-${grouped}` : grouped;
}

/** `name count` pairs for the non-zero entries, in the snapshot's order; undefined if none. */
function nonZero(counters: Record<string, number>): string | undefined {
  const parts = Object.entries(counters)
    .filter(([, n]) => n !== 0)
    .map(([k, n]) => `${k} ${formatCount(n)}`);
  return parts.length > 0 ? parts.join('  ') : undefined;
}

function line(label: string, text: string): string {
  return `${label.padEnd(10)}${text}`;
}

/** Flows busiest first (bytes both ways), then oldest id first. */
export function sortFlows(flows: readonly TcpFlowInfo[]): TcpFlowInfo[] {
  return [...flows].sort((a, b) => b.bytesUp + b.bytesDown - (a.bytesUp + a.bytesDown) || a.id - b.id);
}

/** The flow table alone (also for `status --flows`-style views), without a trailing newline. */
export function formatFlowTable(flows: readonly TcpFlowInfo[], opts: FormatOptions = {}): string {
  const max = opts.maxFlows ?? 20;
  if (flows.length === 0) return 'no flows';
  const sorted = sortFlows(flows);
  const shown = sorted.slice(0, Math.max(0, max));
  const header = ['ID', 'SOURCE', 'DESTINATION', 'OUTBOUND', 'STATE', 'UP', 'DOWN', 'AGE'];
  const right = [true, false, false, false, false, true, true, true];
  const rows = shown.map((f) => [String(f.id), f.src, f.dst, f.outbound, f.state, formatBytes(f.bytesUp), formatBytes(f.bytesDown), formatDuration(f.ageMs)]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const render = (cells: string[]): string =>
    cells
      .map((cell, c) => (right[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  const out = [render(header), ...rows.map(render)];
  const rest = sorted.length - shown.length;
  if (rest > 0) out.push(`… and ${formatCount(rest)} more`);
  return out.join('\n');
}

/** `tunroute server`'s lines: where it listens, then one line per peer, like `wg show`. */
function formatServer(v: ServerStatus): string[] {
  const out = [line('server', `listen ${v.listen}  public key ${v.publicKey}${v.mode === undefined ? '' : `  mode ${v.mode}`}  forwarded ${formatCount(v.forwarded)}`)];
  out.push(line('  drops', nonZero(v.drops) ?? 'none'));
  out.push(line('  udp', `${formatCount(v.udp.flowsOpen)} open / ${formatCount(v.udp.flowsTotal)} total  up ${formatBytes(v.udp.bytesUp)}  down ${formatBytes(v.udp.bytesDown)}`));
  for (const p of v.peers) out.push(formatPeer(p.name, p));
  return out;
}

/** One peer line, like `wg show`: who, AllowedIPs, endpoint, last handshake, bytes, drops. */
function formatPeer(who: string, p: TunnelPeerInfo): string {
  const hs = p.lastHandshakeAgoMs === undefined ? 'no handshake' : `handshake ${formatDuration(p.lastHandshakeAgoMs)} ago`;
  const parts = [who, p.allowedIPs.join(','), p.endpoint ?? 'no endpoint', hs, `rx ${formatBytes(p.rxBytes)}`, `tx ${formatBytes(p.txBytes)}`];
  const d = nonZero(p.drops);
  if (d !== undefined) parts.push(`drops: ${d}`);
  return line('peer', parts.join('  '));
}

/** `tunroute up`'s WireGuard tunnels: one line each, then its peers, like `wg show`. */
function formatTunnels(tunnels: readonly TunnelStatus[]): string[] {
  const out: string[] = [];
  for (const t of tunnels) {
    out.push(line('tunnel', `${t.name}  listen ${t.listenPort}  mtu ${t.mtu}  out ${formatCount(t.txPackets)} (${formatBytes(t.txBytes)})  in ${formatCount(t.rxPackets)} (${formatBytes(t.rxBytes)})`));
    out.push(line('  drops', nonZero(t.drops) ?? 'none'));
    for (const p of t.peers) out.push(formatPeer(p.publicKey, p));
  }
  return out;
}

/** The whole human view of a snapshot, without a trailing newline. */
export function formatStatus(s: StatusSnapshot, opts: FormatOptions = {}): string {
  const p = s.packets;
  const t = s.tcp;
  const out: string[] = [];
  out.push(`tunroute ${s.version}  pid ${s.pid}  up ${formatDuration(s.uptimeMs)}  since ${s.startedAt}`);
  out.push(line('device', `${s.device.name}  ${s.device.address}  mtu ${s.device.mtu}  routes ${formatCount(s.routes)}`));
  if (s.server !== undefined) out.push(...formatServer(s.server));
  if (s.tunnels !== undefined) out.push(...formatTunnels(s.tunnels));

  const pk = [
    `in ${formatCount(s.link.rxPackets)} (${formatBytes(s.link.rxBytes)})`,
    `out ${formatCount(s.link.txPackets)} (${formatBytes(s.link.txBytes)})`,
    `tcp ${formatCount(p.tcpPackets)}`,
    `udp ${formatCount(p.udpPackets)}`,
    `icmp echo ${formatCount(p.icmpEchoReplied)}`,
  ];
  if (p.icmpEchoDropped > 0) pk.push(`icmp echo dropped ${formatCount(p.icmpEchoDropped)}`);
  if (s.link.txErrors > 0) pk.push(`tx errors ${formatCount(s.link.txErrors)}`);
  out.push(line('packets', pk.join('  ')));
  out.push(line('drops', nonZero(p.drops) ?? 'none'));

  const tcp = [`${formatCount(t.flowsOpen)} open / ${formatCount(t.flowsTotal)} total`, `up ${formatBytes(t.bytesUp)}`, `down ${formatBytes(t.bytesDown)}`];
  if (t.refusedLimit > 0) tcp.push(`refused at flow limit ${formatCount(t.refusedLimit)}`);
  if (t.refusedNoName > 0) tcp.push(`refused: fake address with no name ${formatCount(t.refusedNoName)}`);
  if (t.refusedMemory > 0) tcp.push(`refused: buffer budget full ${formatCount(t.refusedMemory)}`);
  if (t.refusedFds > 0) tcp.push(`refused: no file descriptor ${formatCount(t.refusedFds)}`);
  if (t.refusedUid > 0) tcp.push(`refused: user's share used up ${formatCount(t.refusedUid)}`);
  out.push(line('tcp', tcp.join('  ')));
  if (t.memory !== undefined) {
    const m = t.memory;
    out.push(line('buffers', `${formatBytes(m.heldBytes)} held of ${formatBytes(m.budgetBytes)} (peak ${formatBytes(m.peakHeldBytes)}, floor ${formatBytes(m.floorBytes)} per direction)`));
  }
  out.push(line('upstream', nonZero(t.upstreamErrors) ?? 'no errors'));
  if (s.udp !== undefined) {
    const u = s.udp;
    const udp = [`${formatCount(u.flowsOpen)} open / ${formatCount(u.flowsTotal)} total`, `up ${formatBytes(u.bytesUp)}`, `down ${formatBytes(u.bytesDown)}`];
    if (u.dropped > 0) udp.push(`dropped ${formatCount(u.dropped)}`);
    if (u.dnsQueries > 0) udp.push(`dns ${formatCount(u.dnsAnswered)}/${formatCount(u.dnsQueries)} answered`);
    out.push(line('udp', udp.join('  ')));
  }

  const names = Object.keys(s.outbounds).sort();
  const nameWidth = Math.max(0, ...names.map((n) => n.length));
  for (const name of names) {
    const o = s.outbounds[name];
    const failed = nonZero(o.tcpFailures);
    const parts = [name.padEnd(nameWidth), `attempts ${formatCount(o.tcpAttempts)}`, `established ${formatCount(o.tcpEstablished)}`];
    if (failed !== undefined) parts.push(`failed: ${failed}`);
    out.push(line('outbound', parts.join('  ')));
  }
  if (s.network !== undefined && s.network.length > 0) {
    // The last few only: the ring holds 16, a screen wants the recent ones.
    for (const e of s.network.slice(-8)) out.push(line('network', `${e.at.slice(11, 19)}  ${e.kind}${e.dev === undefined ? '' : ` ${e.dev}`}  ${e.detail}`));
  }

  out.push('');
  out.push(formatFlowTable(s.flows, opts));
  if (s.udpFlows !== undefined && s.udpFlows.length > 0) {
    out.push('');
    out.push('udp flows:');
    out.push(formatFlowTable(s.udpFlows, opts));
  }
  return out.join('\n');
}
