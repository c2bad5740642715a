/**
 * `tunroute status --watch`: one screen of a running tunroute, top-like, built from two
 * successive snapshots (rates are the difference over the daemon's own uptime between them).
 * Pure: the same snapshots and size give the same lines, so tests compare them whole; the
 * terminal loop (cli/watch.ts) only draws what this returns.
 *
 *   tunroute 0.1.0  pid 4242  up 2h 03m  tun0 198.18.0.1/15  mtu 1500  routes 3
 *   rate      up 1.2 MiB/s  830 pkt/s     down 45.6 MiB/s  3,200 pkt/s
 *   total     up 4.5 MiB  12,345 pkt     down 3.2 MiB  11,002 pkt
 *   flows     tcp 3 open / 57 total  udp 1 open / 4 total  new 2.0/s
 *   drops     ipv6 12 (+2)  bad_tcp_checksum 1
 *   outbound  proxy  attempts 57  established 54  failed: timeout 2
 *   tunnel    wg0  up 1.0 KiB/s  down 2.0 KiB/s  drops none
 *     peer    xTIB…  203.0.113.1:51820  handshake 12s ago
 *
 *   PROTO  SOURCE            DESTINATION        OUTBOUND    UP/s    DOWN/s    TOTAL      AGE
 *   tcp    198.18.0.1:40012  93.184.216.12:443  proxy     1.0 KiB/s  4.5 MiB/s  44.8 MiB  2m 03s
 *
 *   q quit  ·  every 1s  ·  3 flows  ·  12:00:01
 *
 * Every line fits the width (cut with "…"); the flow table drops its least useful columns
 * first on a narrow terminal and takes the rows the height leaves. Text from the daemon
 * (flow addresses may be names from DNS) is escaped, so it cannot drive the terminal.
 */
import { escapeLine } from '../errors.js';
import { formatBytes, formatCount, formatDuration } from './format.js';
import type { StatusSnapshot, TunnelPeerInfo } from './protocol.js';

export interface WatchViewOptions {
  /** Terminal columns and rows. */
  width: number;
  height: number;
  /** ANSI SGR emphasis (bold header, inverse table header, red error). */
  color?: boolean;
  /** Shown in the footer: the local time of the snapshot (the caller's clock, so this stays pure). */
  clock?: string;
  /** The refresh interval, for the footer. Default 1000. */
  intervalMs?: number;
  /** The last query failed: this sentence replaces the footer (the last good snapshot stays). */
  error?: string;
}

const SGR = { bold: '\x1b[1m', inverse: '\x1b[7m', red: '\x1b[31m', reset: '\x1b[0m' } as const;

/** Visible width of our own text: escapes are added after cutting, and every character is one column. */
function cut(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  return width <= 0 ? '' : `${chars.slice(0, width - 1).join('')}…`;
}

function rate(bytesPerSec: number | undefined): string {
  return bytesPerSec === undefined ? '–' : `${formatBytes(bytesPerSec)}/s`;
}

function perSec(n: number | undefined): string {
  if (n === undefined) return '–';
  return n >= 100 ? formatCount(n) : n.toFixed(1).replace(/\.0$/, '');
}

function label(name: string, text: string): string {
  return `${name.padEnd(10)}${text}`;
}

/** Seconds between two snapshots of the same daemon, or undefined when no rate can be told. */
function interval(cur: StatusSnapshot, prev: StatusSnapshot | undefined): number | undefined {
  if (prev === undefined || prev.pid !== cur.pid || prev.startedAt !== cur.startedAt) return undefined;
  const dt = (cur.uptimeMs - prev.uptimeMs) / 1000;
  return dt > 0 ? dt : undefined;
}

/** A counter's change per second; a counter that went down (a restart) has no rate. */
function delta(cur: number, prev: number | undefined, dt: number | undefined): number | undefined {
  if (dt === undefined || prev === undefined || cur < prev) return undefined;
  return (cur - prev) / dt;
}

/** One row of the flow table: a TCP or UDP flow with its rates over the last interval. */
export interface WatchFlow {
  proto: 'tcp' | 'udp';
  id: number;
  src: string;
  dst: string;
  outbound: string;
  upRate?: number;
  downRate?: number;
  total: number;
  ageMs: number;
}

/** Every flow of `cur`, busiest first: by current rate, then by bytes so far, then oldest id. */
export function busiestFlows(cur: StatusSnapshot, prev: StatusSnapshot | undefined): WatchFlow[] {
  const dt = interval(cur, prev);
  const before = new Map<string, { up: number; down: number }>();
  if (prev !== undefined && dt !== undefined) {
    for (const f of prev.flows) before.set(`t${f.id}`, { up: f.bytesUp, down: f.bytesDown });
    for (const f of prev.udpFlows ?? []) before.set(`u${f.id}`, { up: f.bytesUp, down: f.bytesDown });
  }
  const rows: WatchFlow[] = [];
  const add = (proto: 'tcp' | 'udp', f: StatusSnapshot['flows'][number]): void => {
    // A flow born since the last snapshot counts all its bytes as this interval's.
    const b = dt === undefined ? undefined : (before.get(`${proto === 'tcp' ? 't' : 'u'}${f.id}`) ?? { up: 0, down: 0 });
    rows.push({
      proto,
      id: f.id,
      src: f.src,
      dst: f.dst,
      outbound: f.outbound,
      upRate: b === undefined ? undefined : delta(f.bytesUp, b.up, dt),
      downRate: b === undefined ? undefined : delta(f.bytesDown, b.down, dt),
      total: f.bytesUp + f.bytesDown,
      ageMs: f.ageMs,
    });
  };
  for (const f of cur.flows) add('tcp', f);
  for (const f of cur.udpFlows ?? []) add('udp', f);
  const r = (f: WatchFlow): number => (f.upRate ?? 0) + (f.downRate ?? 0);
  return rows.sort((a, b) => r(b) - r(a) || b.total - a.total || a.id - b.id);
}

/** `name count (+delta)` for the non-zero counters, in the snapshot's order. */
function countersWithDelta(cur: Record<string, number>, prev: Record<string, number> | undefined): string | undefined {
  const parts: string[] = [];
  for (const [k, n] of Object.entries(cur)) {
    if (n === 0) continue;
    // A reason the previous snapshot did not list had not happened yet (absent non-zero counters).
    const before = prev === undefined ? undefined : (prev[k] ?? 0);
    const d = before === undefined || n <= before ? '' : ` (+${formatCount(n - before)})`;
    parts.push(`${escapeLine(k)} ${formatCount(n)}${d}`);
  }
  return parts.length > 0 ? parts.join('  ') : undefined;
}

function peerLine(p: TunnelPeerInfo): string {
  const key = p.publicKey.length > 8 ? `${p.publicKey.slice(0, 8)}…` : p.publicKey;
  const hs = p.lastHandshakeAgoMs === undefined ? 'no handshake' : `handshake ${formatDuration(p.lastHandshakeAgoMs)} ago`;
  return label('  peer', `${key}  ${p.endpoint === undefined ? 'no endpoint' : escapeLine(p.endpoint)}  ${hs}  rx ${formatBytes(p.rxBytes)}  tx ${formatBytes(p.txBytes)}`);
}

/** The lines above the flow table. */
function summaryLines(s: StatusSnapshot, last: StatusSnapshot | undefined, dt: number | undefined): string[] {
  // Growth is told only against a snapshot of this same daemon (dt: see interval).
  const prev = dt === undefined ? undefined : last;
  const out: string[] = [];
  out.push(`tunroute ${s.version}  pid ${s.pid}  up ${formatDuration(s.uptimeMs)}  ${s.device.name} ${s.device.address}  mtu ${s.device.mtu}  routes ${formatCount(s.routes)}`);
  // Read from the device = sent by the apps (up); written to it = their downloads (down).
  const l = s.link;
  const p = prev?.link;
  out.push(
    label(
      'rate',
      `up ${rate(delta(l.rxBytes, p?.rxBytes, dt))}  ${perSec(delta(l.rxPackets, p?.rxPackets, dt))} pkt/s     down ${rate(delta(l.txBytes, p?.txBytes, dt))}  ${perSec(delta(l.txPackets, p?.txPackets, dt))} pkt/s`,
    ),
  );
  out.push(label('total', `up ${formatBytes(l.rxBytes)}  ${formatCount(l.rxPackets)} pkt     down ${formatBytes(l.txBytes)}  ${formatCount(l.txPackets)} pkt`));

  const flows = [`tcp ${formatCount(s.tcp.flowsOpen)} open / ${formatCount(s.tcp.flowsTotal)} total`];
  if (s.udp !== undefined) flows.push(`udp ${formatCount(s.udp.flowsOpen)} open / ${formatCount(s.udp.flowsTotal)} total`);
  const opened = delta(s.tcp.flowsTotal + (s.udp?.flowsTotal ?? 0), prev === undefined ? undefined : prev.tcp.flowsTotal + (prev.udp?.flowsTotal ?? 0), dt);
  flows.push(`new ${perSec(opened)}/s`);
  if (s.udp !== undefined && s.udp.dnsQueries > 0) flows.push(`dns ${formatCount(s.udp.dnsAnswered)}/${formatCount(s.udp.dnsQueries)} answered`);
  out.push(label('flows', flows.join('  ')));

  const drops: string[] = [];
  const packetDrops = countersWithDelta(s.packets.drops, prev?.packets.drops);
  if (packetDrops !== undefined) drops.push(packetDrops);
  if (s.udp !== undefined && s.udp.dropped > 0) drops.push(`udp ${formatCount(s.udp.dropped)}`);
  if (s.tcp.refusedLimit > 0) drops.push(`refused at flow limit ${formatCount(s.tcp.refusedLimit)}`);
  out.push(label('drops', drops.length > 0 ? drops.join('  ') : 'none'));
  const upstream = countersWithDelta(s.tcp.upstreamErrors, prev?.tcp.upstreamErrors);
  if (upstream !== undefined) out.push(label('upstream', upstream));

  for (const name of Object.keys(s.outbounds).sort()) {
    const o = s.outbounds[name];
    if (o.tcpAttempts === 0 && name === 'block') continue;
    const failed = countersWithDelta(o.tcpFailures, prev?.outbounds[name]?.tcpFailures);
    out.push(label('outbound', `${escapeLine(name)}  attempts ${formatCount(o.tcpAttempts)}  established ${formatCount(o.tcpEstablished)}${failed === undefined ? '' : `  failed: ${failed}`}`));
  }
  for (const t of s.tunnels ?? []) {
    const pt = prev?.tunnels?.find((x) => x.name === t.name);
    const d = countersWithDelta(t.drops, pt?.drops);
    out.push(label('tunnel', `${escapeLine(t.name)}  up ${rate(delta(t.txBytes, pt?.txBytes, dt))}  down ${rate(delta(t.rxBytes, pt?.rxBytes, dt))}  drops ${d ?? 'none'}`));
    for (const peer of t.peers) out.push(peerLine(peer));
  }
  if (s.server !== undefined) {
    out.push(label('server', `listen ${s.server.listen}  forwarded ${formatCount(s.server.forwarded)}  drops ${countersWithDelta(s.server.drops, prev?.server?.drops) ?? 'none'}`));
    for (const peer of s.server.peers) out.push(peerLine(peer));
  }
  return out;
}

interface Column {
  head: string;
  right: boolean;
  /** Dropped first when the terminal is narrow: higher goes first. */
  dropOrder: number;
  cell: (f: WatchFlow) => string;
}

const COLUMNS: readonly Column[] = [
  { head: 'PROTO', right: false, dropOrder: 3, cell: (f) => f.proto },
  { head: 'SOURCE', right: false, dropOrder: 5, cell: (f) => escapeLine(f.src) },
  { head: 'DESTINATION', right: false, dropOrder: 0, cell: (f) => escapeLine(f.dst) },
  { head: 'OUTBOUND', right: false, dropOrder: 2, cell: (f) => escapeLine(f.outbound) },
  { head: 'UP/s', right: true, dropOrder: 0, cell: (f) => rate(f.upRate) },
  { head: 'DOWN/s', right: true, dropOrder: 0, cell: (f) => rate(f.downRate) },
  { head: 'TOTAL', right: true, dropOrder: 1, cell: (f) => formatBytes(f.total) },
  { head: 'AGE', right: true, dropOrder: 4, cell: (f) => formatDuration(f.ageMs) },
];

/** The table's header and rows, fitted to `width`: columns dropped, then the destination cut. */
function flowTable(flows: readonly WatchFlow[], width: number): { header: string; rows: string[] } {
  const cells = flows.map((f) => COLUMNS.map((c) => c.cell(f)));
  const widths = COLUMNS.map((c, i) => Math.max(c.head.length, ...cells.map((r) => [...r[i]].length)));
  const kept = COLUMNS.map((_c, i) => i);
  const total = (): number => kept.reduce((a, i) => a + widths[i], 0) + 2 * (kept.length - 1);
  const droppable = COLUMNS.map((c, i) => ({ i, order: c.dropOrder }))
    .filter((c) => c.order > 0)
    .sort((a, b) => b.order - a.order);
  for (const d of droppable) {
    if (total() <= width) break;
    kept.splice(kept.indexOf(d.i), 1);
  }
  // Still too wide: the destination gives up what is missing (down to its header's width).
  const dest = COLUMNS.findIndex((c) => c.head === 'DESTINATION');
  const over = total() - width;
  if (over > 0) widths[dest] = Math.max(COLUMNS[dest].head.length, widths[dest] - over);
  const render = (row: readonly string[]): string =>
    cut(
      kept
        .map((i) => {
          const text = cut(row[i], widths[i]);
          return COLUMNS[i].right ? text.padStart(widths[i]) : text.padEnd(widths[i]);
        })
        .join('  ')
        .trimEnd(),
      width,
    );
  return { header: render(COLUMNS.map((c) => c.head)), rows: cells.map(render) };
}

/**
 * The screen for snapshot `cur` (and `prev`, the one before it, for rates): at most `height`
 * lines, each at most `width` columns (not counting colour escapes), without line ends.
 */
export function renderWatch(cur: StatusSnapshot, prev: StatusSnapshot | undefined, opts: WatchViewOptions): string[] {
  const width = Math.max(1, opts.width);
  const height = Math.max(1, opts.height);
  const color = opts.color === true;
  const dt = interval(cur, prev);
  const top = summaryLines(cur, prev, dt).map((l) => cut(l, width));
  const flows = busiestFlows(cur, prev);
  const every = formatDuration(opts.intervalMs ?? 1000);
  const footer = cut(
    opts.error !== undefined
      ? `${escapeLine(opts.error)}  ·  q quit`
      : `q quit  ·  every ${every}  ·  ${formatCount(flows.length)} ${flows.length === 1 ? 'flow' : 'flows'}${opts.clock === undefined ? '' : `  ·  ${opts.clock}`}`,
    width,
  );

  const lines: string[] = top.slice(0, Math.max(0, height - 1));
  if (color && lines.length > 0) lines[0] = `${SGR.bold}${lines[0]}${SGR.reset}`;
  // The table gets what is left between the summary and the footer: a blank line, its header, rows.
  const rowsRoom = height - lines.length - 1 - 2;
  if (rowsRoom >= 1) {
    lines.push('');
    if (flows.length === 0) lines.push('no flows');
    else {
      const t = flowTable(flows, width);
      const shown = flows.length > rowsRoom ? rowsRoom - 1 : flows.length;
      lines.push(color ? `${SGR.inverse}${t.header.padEnd(width)}${SGR.reset}` : t.header);
      lines.push(...t.rows.slice(0, shown));
      if (shown < flows.length) lines.push(cut(`… and ${formatCount(flows.length - shown)} more`, width));
    }
  }
  while (lines.length < height - 1) lines.push('');
  lines.push(color && opts.error !== undefined ? `${SGR.red}${footer}${SGR.reset}` : footer);
  return lines.slice(0, height);
}
