/**
 * The benchmark's report: its JSON shape, the tables printed on the terminal and written into
 * the README (between `<!-- bench:start -->` and `<!-- bench:end -->`).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { CpuTotals } from './cpu.js';
import type { CpsResult, DnsResult, IperfResult, RrResult, TtfbResult, UdpResult } from './tools.js';

export type Outcome<T> = { ok: true; value: T; cpu: CpuTotals } | { ok: false; error: string; cpu?: CpuTotals };

export interface Pair<T> {
  /** The run shown: with --repeat, the one with the median of the primary figure. */
  direct: Outcome<T>;
  tunroute: Outcome<T>;
  /** With --repeat N > 1: every run, in order (direct and tunroute alternate). */
  runs?: { direct: Outcome<T>[]; tunroute: Outcome<T>[] };
}

/**
 * The run to show among repeats: the successful one with the median `key` (the lower median
 * for an even count); the first failure when none succeeded.
 */
export function medianRun<T>(runs: Outcome<T>[], key: (v: T) => number): Outcome<T> {
  const ok = runs.filter((o): o is Extract<Outcome<T>, { ok: true }> => o.ok).sort((a, b) => key(a.value) - key(b.value));
  const pick = ok[Math.floor((ok.length - 1) / 2)];
  const first = runs[0];
  if (pick) return pick;
  if (first) return first;
  return { ok: false, error: 'not run' };
}

export interface BenchEnv {
  kernel: string;
  node: string;
  cpus: number;
  cpuModel: string;
  memGiB: number;
  clkTck: number;
  /** `git rev-parse --short HEAD`, with `-dirty` when tracked files have changes. */
  commit: string;
  tools: Record<string, string>;
}

export interface BenchSettings {
  /** The command that made this report, e.g. `npm run bench -- --repeat 3`. */
  command?: string;
  seconds: number;
  /** Runs of each pair (alternating direct and tunroute); the median run is shown. */
  repeat: number;
  proxy: 'dante' | 'microsocks';
  /** MTU of tun0 as the kernel reports it (after `--mtu`, if given). */
  tunMtu: number | null;
  /** The MTU asked with --mtu, if any. */
  requestedMtu: number | null;
  vethMtu: number | null;
  tests: string[];
  tunrouteArgs: string[];
  /** Bounds of the connection test. */
  cpsMaxConnections: number;
  cpsMsgBytes: number;
  /**
   * UDP test: the receive buffer the benchmark's dante asks for its UDP sockets
   * (internal/external.udp.so_rcvbuf; the kernel caps it at net.core.rmem_max), or null when the
   * proxy ran with its defaults.
   */
  proxyUdpRcvbuf?: number | null;
  /** DNS test: the config file given to `tunroute up -c` (dns hijack). */
  tunrouteConfig?: Record<string, unknown>;
  /** The wg test's own lab. */
  wg?: WgSettings;
  /** The ttfb test's own lab: a relay holds every chunk `delayMs` each way. */
  ttfb?: { delayMs: number; path: string; maxRequests: number; tunrouteArgs: string[] };
  /** The names test's own lab (fake-IP DNS, connect by name). */
  names?: { domain: string; maxQueries: number; maxRequests: number; tunrouteArgs: string[] };
  /** The flows test's own lab. */
  flows?: { flows: number; concurrency: number; openLimitS: number; settleS: number; tunrouteArgs: string[] };
  /** The reliability test's labs. */
  reliability?: ReliabilitySettings;
}

/** The flows test: tunroute's memory with many idle flows (its own lab, a fresh tunroute). */
export interface FlowsResult {
  /** Flows asked for. */
  flows: number;
  /** Flows open (connected, 1-byte echo seen) when the opening ended. */
  open: number;
  failed: number;
  firstError?: string;
  /** From the first connect to the last flow proven, s. */
  openS: number;
  /** 'time': the opening was cut off by its time limit. */
  stoppedBy: 'count' | 'time';
  /** tunroute's VmRSS before the flows, KiB. */
  idleRssKiB: number;
  /** VmRSS of the processes tunroute spawned (its watchdog), KiB; null when there was none. */
  watchdogRssKiB: number | null;
  watchdogs: number;
  /** tunroute's VmRSS with the flows open, KiB. */
  openRssKiB: number;
  /** (openRssKiB - idleRssKiB) / open. */
  perFlowKiB: number;
  /** tunroute's VmRSS settings.flows.settleS after all the flows closed, KiB. */
  afterCloseRssKiB: number;
  /**
   * The same three readings of RssAnon, KiB: VmRSS less the file-backed pages (~31 MB of them
   * are the node binary's own, shared with every Node process) and shared memory. Absent in
   * reports saved before it was measured.
   */
  idleRssAnonKiB?: number;
  openRssAnonKiB?: number;
  afterCloseRssAnonKiB?: number;
}

/** tunroute stopped with SIGTERM once a fault is over: how long it took, how it exited. */
export interface Shutdown {
  seconds: number;
  /** 'code 0', a signal name, or why it had exited already. */
  exit: string;
  /** Exit code 0 within the limit (no SIGKILL needed). */
  clean: boolean;
}

/** One kind of malformed packet: sent, and counted under the drop reasons it must land on. */
export interface MalformedKind {
  kind: string;
  sent: number;
  reasons: string;
  counted: number;
}

/** Reliability (issue #13): malformed packets written into tun0 during HTTP downloads (own lab). */
export interface MalformedResult {
  /** Packets asked of malformed-burst.py, and its seed. */
  packets: number;
  seed: number;
  /** Packets the script wrote into tun0 (AF_PACKET on the device), by kind. */
  sent: number;
  sentByKind: Record<string, number>;
  refusedByKernel: number;
  /** Packets the kernel dropped on tun0 (its tx_dropped: tunroute's queue was full). */
  kernelDropped: number;
  burstSeconds: number;
  ratePps: number;
  tunrouteRunning: boolean;
  /** tunroute stopped with SIGTERM afterwards. */
  shutdown?: Shutdown;
  /** How tunroute ended, when it did. */
  tunrouteExit: string | null;
  /** Increase of tunroute's drop counters (status --json packets.drops), non-zero only. */
  dropsByReason: Record<string, number>;
  /** Increase of packets.fragments: pieces the reassembler took in (held, never whole). */
  fragmentsHeld: number;
  /** Per kind sent: what tunroute counted where that kind must land. */
  byKind?: MalformedKind[];
  /** sum(dropsByReason) + fragmentsHeld. */
  counted: number;
  /** sent − kernelDropped − counted: packets no counter explains (traffic's own drops make it negative). */
  uncounted: number;
  /** Downloads during the burst, those whose bytes and sha256 matched, their bytes and time. */
  transfers: number;
  transfersIntact: number;
  transferBytes: number;
  transferSeconds: number;
  transferMbps: number;
  transferError?: string;
}

/** Reliability: the SOCKS5 server killed (SIGKILL) under idle flows and started again (own lab). */
export interface ProxyRestartResult {
  /** Idle flows asked for and open when the proxy died. */
  flows: number;
  open: number;
  /** How they ended: ECONNRESET, an orderly end (FIN), another error, not at all within closeLimitS. */
  reset: number;
  ended: number;
  otherErrors: number;
  stillOpen: number;
  closeLimitS: number;
  firstError?: string;
  /** From the kill to each flow's end, ms. */
  closeMedianMs: number;
  closeMaxMs: number;
  /** How long the proxy was down, s. */
  downS: number;
  /** From the restart (spawn) to the proxy's first accepted connect, ms. */
  proxyUpMs: number | null;
  /** From the restart to the first flow a SOCKS5 client straight to the proxy got served, ms. */
  proxyServesMs: number | null;
  /** From that first served flow to the first new flow through tunroute that worked, ms (tunroute's own delay). */
  recoveryMs: number | null;
  restartToFlowMs: number | null;
  probeAttempts: number;
  probeFailures: number;
  probeError?: string;
  tunrouteRunning: boolean;
  /** tunroute stopped with SIGTERM afterwards. */
  shutdown?: Shutdown;
}

/** One reading of tunroute's open fds and VmRSS in the churn test. */
export interface ChurnSample {
  /** 0: before the first round. */
  round: number;
  fds: number;
  rssKiB: number;
  /** The round's flows: open, failed, the time to open them, and to drain them after the close. */
  open: number;
  failed: number;
  openS: number;
  drainS: number;
  firstError?: string;
}

/** Reliability: many flows opened and closed, round after round (own lab, a fresh tunroute). */
export interface ChurnResult {
  flows: number;
  rounds: number;
  start: ChurnSample;
  /** After each round. */
  samples: ChurnSample[];
  /** 'time': the test's time bound cut the rounds short. */
  stoppedBy: 'rounds' | 'time';
  tunrouteRunning: boolean;
  /** tunroute stopped with SIGTERM afterwards. */
  shutdown?: Shutdown;
}

/** Reliability: forged and replayed WireGuard datagrams against `tunroute up --tunnel` (own lab). */
export interface WgForgeryResult {
  forged: number;
  forgedByKind: Record<string, number>;
  replayed: number;
  /** Genuine transport messages captured by the relay (the replays cycle through them). */
  captured: number;
  sendErrors: number;
  attackSeconds: number;
  ratePps: number;
  /** Increase of the tunnel's and its peer's drop counters, non-zero only, and their sum. */
  dropsByReason: Record<string, number>;
  counted: number;
  /** Datagrams the client namespace's kernel dropped (Udp InErrors: a full socket buffer). */
  kernelUdpErrors: number;
  /** Inner packets tunroute took out of the tunnel during the attack (must be 0). */
  innerPacketsAccepted: number;
  /** Datagrams that reached the counter behind the tunnel during the attack (must be 0). */
  payloadsDelivered: number;
  /** Genuine datagrams sent through the tunnel before the attack and counted; after it. */
  genuineSent: number;
  genuineBefore: number;
  genuineAfterSent: number;
  genuineAfter: number;
  tunrouteRunning: boolean;
  /** tunroute stopped with SIGTERM afterwards. */
  shutdown?: Shutdown;
}

/** How the reliability test ran. */
export interface ReliabilitySettings {
  malformed: number;
  burstSeed: number;
  transferBytes: number;
  flowsWatched: number;
  closeLimitS: number;
  churnFlows: number;
  churnRounds: number;
  churnSettleS: number;
  wgDatagrams: number;
  wgAttackPps: number;
  /** `tunroute up` arguments of the proxy labs and of the wg lab (lab paths shortened). */
  tunrouteArgs?: string[];
  wgTunrouteArgs?: string[];
}

/** How the wg test ran (its own lab: two pairs of namespaces, each joined by a veth). */
export interface WgSettings {
  /** Set when the test did not run (a tool missing), with why; nothing else is set then. */
  skipped?: string;
  /** The tunnel MTU of both paths: `MTU =` in tunroute's wg-quick file, and every wireguard-go interface's. */
  tunnelMtu?: number;
  /** MTU of tun0 in the tunroute client namespace, as the kernel reports it. */
  tunMtu?: number | null;
  vethMtu?: number | null;
  /** The `tunroute up` arguments (lab paths shortened). */
  tunrouteArgs?: string[];
}

export interface BenchReport {
  version: 1;
  date: string;
  env: BenchEnv;
  settings: BenchSettings;
  /** Busy cores of the host while the lab was idle just before the tests (others' load). */
  backgroundCores: number;
  iperfUp?: Pair<IperfResult>;
  iperfDown?: Pair<IperfResult>;
  rr?: Pair<RrResult>;
  cps?: Pair<CpsResult>;
  /**
   * The connections/s ceiling: the cps loop made by a SOCKS5 client straight to the proxy (no
   * tunroute; greeting and CONNECT pipelined), to the same echo server.
   */
  ceiling?: Outcome<CpsResult>;
  /** Time to first byte of a small HTTP request with a delay relay in front of both paths (own lab). */
  ttfb?: Pair<TtfbResult>;
  /** Set when the ttfb test's tunroute died during the run. */
  ttfbTunrouteExit?: string;
  /** Memory per idle flow (own lab). */
  flows?: Outcome<FlowsResult>;
  /**
   * The names test (own lab): sequential DNS queries answered by tunroute's fake-IP DNS (tunroute)
   * vs the same queries to dnsmasq straight over the veth (direct), in the same run.
   */
  fakeIpDns?: Pair<DnsResult>;
  /** Connect → first byte of an HTTP GET by name: direct by the name dnsmasq answers, tunroute by a fake address through the proxy. */
  ttfbByName?: Pair<TtfbResult>;
  /** Set when the names test's tunroute died during the run. */
  namesTunrouteExit?: string;
  /** iperf3 -u at a fixed offered rate. */
  udp?: Pair<UdpResult>;
  /** Sequential DNS queries (tunroute: dns hijack, upstream through the proxy). */
  dns?: Pair<DnsResult>;
  /**
   * The wg test: one iperf3 stream through a WireGuard tunnel, up and down (-R). Here `direct`
   * is the reference, wireguard-go ↔ wireguard-go (not the kernel); `tunroute` is `tunroute up
   * --tunnel` ↔ wireguard-go. CPU procs: `client` (tunroute, or the client's wireguard-go) and
   * `server` (the server's wireguard-go).
   */
  wgUp?: Pair<IperfResult>;
  wgDown?: Pair<IperfResult>;
  /** `tunroute status --json` of the wg test's tunroute at its end. */
  wgTunrouteStatus?: unknown;
  /** Set when the wg test's tunroute died during the run. */
  wgTunrouteExit?: string;
  /** Faults (own labs): each part is absent when it was not asked for (a count of 0). */
  reliability?: {
    malformed?: Outcome<MalformedResult>;
    proxyRestart?: Outcome<ProxyRestartResult>;
    churn?: Outcome<ChurnResult>;
    wgForgery?: Outcome<WgForgeryResult>;
  };
  /** `tunroute status --json` at the end of the run (its own counters), when it has --control. */
  tunrouteStatus?: unknown;
  /** Set when tunroute died during the run. */
  tunrouteExit?: string;
}

// ---------------------------------------------------------------------------------------------
// number formatting

/** `sig` significant digits, no exponent, thousands separated with a thin comma. */
export function fmt(x: number | undefined, sig = 3): string {
  if (x === undefined || !Number.isFinite(x)) return '—';
  if (x === 0) return '0';
  if (Number.isInteger(x) && Math.abs(x) >= 1) return x.toFixed(0).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const abs = Math.abs(x);
  const digits = Math.floor(Math.log10(abs)) + 1;
  const decimals = Math.max(0, sig - digits);
  const s = x.toFixed(decimals);
  const [int = '', frac] = s.split('.');
  const withSep = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return frac === undefined ? withSep : `${withSep}.${frac}`;
}

function pct(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '—' : `${fmt(x * 100, 2)} %`;
}

function ratio(num: number | undefined, den: number | undefined): string {
  if (num === undefined || den === undefined || !Number.isFinite(num) || !Number.isFinite(den) || den === 0) return '—';
  return fmt(num / den, 2);
}

// ---------------------------------------------------------------------------------------------
// tables

type Row = readonly string[];

interface Table {
  head: Row;
  /** 'l' or 'r' per column. */
  align: string;
  rows: Row[];
}

function value<T>(o: Outcome<T> | undefined, f: (v: T) => number): number | undefined {
  return o?.ok ? f(o.value) : undefined;
}

function cell<T>(o: Outcome<T> | undefined, f: (v: T) => number, sig = 3): string {
  if (!o) return '—';
  if (!o.ok) return 'failed';
  return fmt(f(o.value), sig);
}

/** What one window did: units of work and the seconds the tool was running, by its own clock. */
interface Work {
  units: number;
  activeS: number;
}

interface WindowView {
  cpu?: CpuTotals;
  work?: Work;
}

/** One kind of window, with how its CPU cost is expressed. */
interface Section {
  name: string;
  /** "per GB", "per round trip" ... */
  per: string;
  /** Unit of the cost, after scaling CPU-seconds per unit of work. */
  unit: string;
  /** "GB", "round trip" ... */
  workUnit: string;
  scale: number;
  direct: WindowView;
  tunroute: WindowView;
}

function view<T>(o: Outcome<T>, f: (v: T) => Work): WindowView {
  return o.ok ? { cpu: o.cpu, work: f(o.value) } : {};
}

function sections(r: BenchReport): Section[] {
  const out: Section[] = [];
  const gb = (v: IperfResult): Work => ({ units: v.bytes / 1e9, activeS: v.seconds });
  const rt = (v: RrResult): Work => ({ units: v.totalRoundTrips, activeS: v.activeS });
  const conn = (v: CpsResult): Work => ({ units: v.connections, activeS: v.activeS });
  const udpGb = (v: UdpResult): Work => ({ units: v.bytes / 1e9, activeS: v.seconds });
  const query = (v: DnsResult): Work => ({ units: v.queries, activeS: v.activeS });
  const add = <T>(p: Pair<T> | undefined, name: string, per: string, unit: string, scale: number, workUnit: string, f: (v: T) => Work): void => {
    if (p) out.push({ name, per, unit, scale, workUnit, direct: view(p.direct, f), tunroute: view(p.tunroute, f) });
  };
  add(r.iperfUp, 'iperf3 upload', 'per GB upload', 'CPU-s', 1, 'GB', gb);
  add(r.iperfDown, 'iperf3 download', 'per GB download', 'CPU-s', 1, 'GB', gb);
  add(r.rr, 'round trips', 'per round trip', 'µs', 1e6, 'round trip', rt);
  add(r.cps, 'connections', 'per connection', 'µs', 1e6, 'connection', conn);
  add(r.udp, 'UDP (iperf3 -u)', 'per GB UDP received', 'CPU-s', 1, 'GB', udpGb);
  add(r.dns, 'DNS queries', 'per DNS query', 'µs', 1e6, 'query', query);
  return out;
}

/** Cores of other work (host busy beyond the lab's processes) in a window above which the host figure is marked. */
export const BUSY_OTHER_CORES = 0.3;

/** Busy cores of the host beyond what the lab's processes used (other work, plus softirq). */
function otherCores(w: WindowView): number {
  return w.cpu && w.cpu.wallS > 0 ? (w.cpu.hostBusyS - w.cpu.labS) / w.cpu.wallS : 0;
}

/** Whether any whole-host figure got a mark. */
/** Whether a whole-host figure of these windows got a mark. */
function marked(windows: readonly { direct: WindowView; tunroute: WindowView }[]): boolean {
  return windows.some((s) => otherCores(s.direct) >= BUSY_OTHER_CORES || otherCores(s.tunroute) >= BUSY_OTHER_CORES);
}

/** Tests that run in labs of their own, not in the main SOCKS5 lab. */
export const OWN_LAB_TESTS: readonly string[] = ['wg', 'ttfb', 'flows', 'names', 'reliability'];

/** Whether the main SOCKS5 lab ran; a report of only wg, ttfb or flows has none of it. */
function socksLabRan(r: BenchReport): boolean {
  return r.settings.tests.some((t) => !OWN_LAB_TESTS.includes(t));
}

/** CPU cost per unit of work (scaled), or undefined. */
function cost(cpuS: number | undefined, w: WindowView, scale: number): number | undefined {
  return cpuS !== undefined && w.work && w.work.units > 0 ? (cpuS / w.work.units) * scale : undefined;
}

/** Share of one core while the tool ran. */
function share(cpuS: number | undefined, w: WindowView): number | undefined {
  return cpuS !== undefined && w.work && w.work.activeS > 0 ? cpuS / w.work.activeS : undefined;
}

export function summaryTable(r: BenchReport): Table {
  const rows: Row[] = [];
  const s = r.settings.seconds;
  for (const [p, dir] of [
    [r.iperfUp, 'upload'],
    [r.iperfDown, 'download'],
  ] as const) {
    if (!p) continue;
    rows.push([
      `iperf3 ${dir}, Gbit/s (1 stream, ${s} s)`,
      cell(p.direct, (v) => v.gbps),
      cell(p.tunroute, (v) => v.gbps),
      ratio(value(p.tunroute, (v) => v.gbps), value(p.direct, (v) => v.gbps)),
    ]);
    rows.push([`iperf3 ${dir}, retransmits of the sending TCP`, cell(p.direct, (v) => v.retransmits), cell(p.tunroute, (v) => v.retransmits), '']);
  }
  if (r.rr) {
    const p = r.rr;
    const v = p.direct.ok ? p.direct.value : p.tunroute.ok ? p.tunroute.value : undefined;
    const what = v ? (v.tool === 'sockperf' ? `sockperf ping-pong, TCP, ${v.msgBytes} B` : `node client, TCP, ${v.msgBytes} B`) : 'TCP';
    rows.push([`round trips/s, one connection (${what})`, cell(p.direct, (x) => x.rate), cell(p.tunroute, (x) => x.rate), ratio(value(p.tunroute, (x) => x.rate), value(p.direct, (x) => x.rate))]);
    rows.push(['round-trip time, mean, µs', cell(p.direct, (x) => x.meanUs), cell(p.tunroute, (x) => x.meanUs), ratio(value(p.direct, (x) => x.meanUs), value(p.tunroute, (x) => x.meanUs))]);
    rows.push(['round-trip time, p99, µs', cell(p.direct, (x) => x.p99Us), cell(p.tunroute, (x) => x.p99Us), ratio(value(p.direct, (x) => x.p99Us), value(p.tunroute, (x) => x.p99Us))]);
  }
  if (r.cps) {
    const p = r.cps;
    rows.push([
      `connections/s, sequential (connect, ${r.settings.cpsMsgBytes} B echo, close)`,
      cell(p.direct, (x) => x.rate),
      cell(p.tunroute, (x) => x.rate),
      ratio(value(p.tunroute, (x) => x.rate), value(p.direct, (x) => x.rate)),
    ]);
    rows.push(['connect → reply, mean, µs', cell(p.direct, (x) => x.meanUs), cell(p.tunroute, (x) => x.meanUs), ratio(value(p.direct, (x) => x.meanUs), value(p.tunroute, (x) => x.meanUs))]);
    rows.push(['connect → reply, p99, µs', cell(p.direct, (x) => x.p99Us), cell(p.tunroute, (x) => x.p99Us), ratio(value(p.direct, (x) => x.p99Us), value(p.tunroute, (x) => x.p99Us))]);
  }
  if (r.ceiling) {
    // The ceiling stands in the direct column: tunroute vs what a SOCKS5 client alone gets.
    const c = r.ceiling;
    const rate = (x: CpsResult): number => x.rate;
    rows.push([
      `connections/s, ceiling: SOCKS5 client straight to ${r.settings.proxy}, no tunroute (greeting + CONNECT pipelined; in the direct column)`,
      cell(c, rate),
      cell(r.cps?.tunroute, rate),
      ratio(value(r.cps?.tunroute, rate), value(c, rate)),
    ]);
    rows.push(['connect → reply, p99, µs, ceiling (direct column) and tunroute', cell(c, (x) => x.p99Us), cell(r.cps?.tunroute, (x) => x.p99Us), ratio(value(c, (x) => x.p99Us), value(r.cps?.tunroute, (x) => x.p99Us))]);
  }
  if (r.udp) {
    const p = r.udp;
    const v = p.direct.ok ? p.direct.value : p.tunroute.ok ? p.tunroute.value : undefined;
    const what = v ? `${fmt(v.offeredMbps)} Mbit/s offered, ${v.datagramBytes} B datagrams, ${s} s` : `${s} s`;
    rows.push([
      `UDP received, Mbit/s (iperf3 -u, ${what})`,
      cell(p.direct, (x) => x.mbps),
      cell(p.tunroute, (x) => x.mbps),
      ratio(value(p.tunroute, (x) => x.mbps), value(p.direct, (x) => x.mbps)),
    ]);
    rows.push(['UDP loss, % of datagrams sent', cell(p.direct, (x) => x.lossPercent, 2), cell(p.tunroute, (x) => x.lossPercent, 2), '']);
  }
  if (r.dns) {
    const p = r.dns;
    rows.push([
      'DNS queries/s, sequential (UDP, a new name each query)',
      cell(p.direct, (x) => x.rate),
      cell(p.tunroute, (x) => x.rate),
      ratio(value(p.tunroute, (x) => x.rate), value(p.direct, (x) => x.rate)),
    ]);
    rows.push(['DNS query → answer, mean, µs', cell(p.direct, (x) => x.meanUs), cell(p.tunroute, (x) => x.meanUs), ratio(value(p.direct, (x) => x.meanUs), value(p.tunroute, (x) => x.meanUs))]);
    rows.push(['DNS query → answer, p99, µs', cell(p.direct, (x) => x.p99Us), cell(p.tunroute, (x) => x.p99Us), ratio(value(p.direct, (x) => x.p99Us), value(p.tunroute, (x) => x.p99Us))]);
  }
  // CPU cost per unit of work, both paths: the lab's processes (tools, servers, proxy, tunroute;
  // blind to other work on the host) and the whole host (with the kernel's softirq time, but
  // also with everybody else's work).
  const secs = sections(r);
  for (const [kind, label] of [
    ['lab', 'lab processes'],
    ['host', 'whole host'],
  ] as const) {
    const cpuS = (w: WindowView): number | undefined => (w.cpu ? (kind === 'lab' ? w.cpu.labS : w.cpu.hostBusyS) : undefined);
    // A whole-host figure is marked when other work kept the host busy in that window.
    const mark = (w: WindowView): string => (kind === 'host' && otherCores(w) >= BUSY_OTHER_CORES ? ' *' : '');
    for (const sec of secs) {
      const d = cost(cpuS(sec.direct), sec.direct, sec.scale);
      const t = cost(cpuS(sec.tunroute), sec.tunroute, sec.scale);
      rows.push([`CPU ${sec.per}, ${label}, ${sec.unit}`, fmt(d) + mark(sec.direct), fmt(t) + mark(sec.tunroute), ratio(d, t)]);
    }
  }
  return { head: ['measure', 'direct (kernel)', 'tunroute', 'tunroute vs direct'], align: 'lrrr', rows };
}

/**
 * The per-flow tests that run in labs of their own (ttfb, flows); undefined when neither ran.
 * Memory figures have no direct path: their direct column is empty.
 */
export function perFlowTable(r: BenchReport): Table | undefined {
  if (!r.ttfb && !r.flows && !r.fakeIpDns && !r.ttfbByName) return undefined;
  const rows: Row[] = [];
  if (r.fakeIpDns) {
    const p = r.fakeIpDns;
    rows.push([
      'DNS queries/s, sequential (A, a new name each query; tunroute: fake-IP answers, direct: dnsmasq over the veth; 1-s windows in turn)',
      cell(p.direct, (x) => x.rate),
      cell(p.tunroute, (x) => x.rate),
      ratio(value(p.tunroute, (x) => x.rate), value(p.direct, (x) => x.rate)),
    ]);
    rows.push(['  query → answer, p50, µs (median of the windows)', cell(p.direct, (x) => x.p50Us), cell(p.tunroute, (x) => x.p50Us), ratio(value(p.direct, (x) => x.p50Us), value(p.tunroute, (x) => x.p50Us))]);
    rows.push(['  query → answer, p99, µs (median of the windows)', cell(p.direct, (x) => x.p99Us), cell(p.tunroute, (x) => x.p99Us), ratio(value(p.direct, (x) => x.p99Us), value(p.tunroute, (x) => x.p99Us))]);
    // Who answers: dnsmasq (the `resolver` watched in the direct windows) or tunroute.
    const perQuery = (o: Outcome<DnsResult>, who: string): number | undefined => {
      const cpuS = o.cpu?.procs[who];
      return o.ok && cpuS !== undefined && o.value.queries > 0 ? (cpuS * 1e6) / o.value.queries : undefined;
    };
    const cpuDirect = perQuery(p.direct, 'resolver');
    const cpuTunroute = perQuery(p.tunroute, 'tunroute');
    rows.push(['  CPU per query of the answering process, µs (tunroute; direct: dnsmasq)', fmt(cpuDirect), fmt(cpuTunroute), ratio(cpuDirect, cpuTunroute)]);
  }
  if (r.ttfbByName) {
    const p = r.ttfbByName;
    const ms = (f: (v: TtfbResult) => number) => (v: TtfbResult): number => f(v) / 1000;
    const p50 = ms((v) => v.p50Us);
    const p99 = ms((v) => v.p99Us);
    rows.push(['connect by name → first byte, median, ms (lookup + HTTP GET; tunroute: fake IP, through the proxy)', cell(p.direct, p50), cell(p.tunroute, p50), ratio(value(p.direct, p50), value(p.tunroute, p50))]);
    rows.push(['connect by name → first byte, p99, ms', cell(p.direct, p99), cell(p.tunroute, p99), ratio(value(p.direct, p99), value(p.tunroute, p99))]);
  }
  if (r.ttfb) {
    const p = r.ttfb;
    const d = r.settings.ttfb?.delayMs ?? 10;
    const ms = (f: (v: TtfbResult) => number) => (v: TtfbResult): number => f(v) / 1000;
    const p50 = ms((v) => v.p50Us);
    const p99 = ms((v) => v.p99Us);
    rows.push([
      `time to first byte, ${d} ms held each way, median, ms (HTTP GET, new connection each)`,
      cell(p.direct, p50),
      cell(p.tunroute, p50),
      ratio(value(p.direct, p50), value(p.tunroute, p50)),
    ]);
    rows.push([`time to first byte, ${d} ms held each way, p99, ms`, cell(p.direct, p99), cell(p.tunroute, p99), ratio(value(p.direct, p99), value(p.tunroute, p99))]);
    rows.push(['time to first byte, median, tunroute ÷ direct (× direct; lower is better)', '', '', ratio(value(p.tunroute, p50), value(p.direct, p50))]);
    rows.push(['HTTP requests measured', cell(p.direct, (v) => v.requests), cell(p.tunroute, (v) => v.requests), '']);
  }
  if (r.flows) {
    const o = r.flows;
    const n = r.settings.flows?.flows ?? (o.ok ? o.value.flows : 10_000);
    const mib = (f: (v: FlowsResult) => number) => (v: FlowsResult): number => f(v) / 1024;
    rows.push([`idle flows open (of ${fmt(n)}; tunroute)`, '—', cell(o, (v) => v.open), '']);
    rows.push([`time to open ${fmt(n)} flows, s`, '—', cell(o, (v) => v.openS), '']);
    rows.push([`RSS per idle flow, KiB (${fmt(n)} flows)`, '—', cell(o, (v) => v.perFlowKiB), '']);
    rows.push(['tunroute RSS, idle, MiB', '—', cell(o, mib((v) => v.idleRssKiB)), '']);
    rows.push(['watchdog RSS, idle, MiB', '—', o.ok && o.value.watchdogRssKiB === null ? 'none' : cell(o, mib((v) => v.watchdogRssKiB ?? 0)), '']);
    rows.push(['idle RSS with the watchdog included, MiB', '—', cell(o, mib((v) => v.idleRssKiB + (v.watchdogRssKiB ?? 0))), '']);
    rows.push([`tunroute RSS with ${fmt(n)} flows open, MiB`, '—', cell(o, mib((v) => v.openRssKiB)), '']);
    const settle = r.settings.flows?.settleS ?? 10;
    rows.push([`tunroute RSS ${settle} s after they all closed, MiB`, '—', cell(o, mib((v) => v.afterCloseRssKiB)), '']);
    rows.push([`  … above idle, MiB`, '—', cell(o, mib((v) => v.afterCloseRssKiB - v.idleRssKiB)), '']);
    if (!o.ok || o.value.idleRssAnonKiB !== undefined) {
      const anon = (f: (v: FlowsResult) => number | undefined) => (v: FlowsResult): number => f(v) ?? NaN;
      rows.push([`RssAnon per idle flow, KiB (${fmt(n)} flows)`, '—', cell(o, anon((v) => (v.openRssAnonKiB === undefined || v.idleRssAnonKiB === undefined || v.open === 0 ? undefined : (v.openRssAnonKiB - v.idleRssAnonKiB) / v.open))), '']);
      rows.push(['tunroute RssAnon, idle, MiB', '—', cell(o, mib(anon((v) => v.idleRssAnonKiB))), '']);
      rows.push([`tunroute RssAnon with ${fmt(n)} flows open, MiB`, '—', cell(o, mib(anon((v) => v.openRssAnonKiB))), '']);
      rows.push([`tunroute RssAnon ${settle} s after they all closed, MiB`, '—', cell(o, mib(anon((v) => v.afterCloseRssAnonKiB))), '']);
      rows.push([`  … above idle, MiB`, '—', cell(o, mib(anon((v) => (v.afterCloseRssAnonKiB === undefined || v.idleRssAnonKiB === undefined ? undefined : v.afterCloseRssAnonKiB - v.idleRssAnonKiB)))), '']);
    }
  }
  return { head: ['per flow (labs of their own)', 'direct (kernel)', 'tunroute', 'tunroute vs direct'], align: 'lrrr', rows };
}

/** What the per-flow tests measured, under their table. */
function perFlowNotes(r: BenchReport): string[] {
  const out: string[] = [];
  const t = r.settings.ttfb;
  if (r.ttfb) {
    const d = t?.delayMs ?? 10;
    out.push(
      `Time to first byte: HTTP/1.1 GET ${t?.path ?? '/health'} (Connection: close), one at a time, each on a new connection;`,
      `connect() to the response's first byte. A relay holds every chunk ${d} ms in each direction (no netem here),`,
      'in front of the HTTP server (direct) and in front of the proxy (tunroute) alike: direct pays one exchange',
      'through it, tunroute also pays each SOCKS5 exchange it waits for (issue #11 target: ≤ 2.2× direct).',
    );
  }
  const f = r.settings.flows;
  if (r.flows) {
    out.push(
      `Memory per flow: a fresh tunroute carries ${fmt(f?.flows ?? 10_000)} TCP connections (${f?.concurrency ?? '?'} being opened at a time) to an`,
      'echo server behind the proxy, each proven by a 1-byte echo, then idle; RSS is VmRSS from /proc/<pid>/status;',
      `per flow = (RSS with all open − idle RSS) / flows open. The watchdog is the process \`up\` spawns.`,
    );
    const v = r.flows.ok ? r.flows.value : undefined;
    if (v?.stoppedBy === 'time') out.push(`The opening was cut off by its time limit (${f?.openLimitS ?? '?'} s) with ${fmt(v.open)} of ${fmt(v.flows)} flows open.`);
    if (v && v.failed > 0) out.push(`${fmt(v.failed)} flows failed to open${v.firstError ? ` (first: ${v.firstError})` : ''}.`);
  }
  return out;
}

export function cpuTable(r: BenchReport): Table {
  const proxy = r.settings.proxy;
  const rows: Row[] = sections(r).map((sec) => {
    const w = sec.tunroute;
    const procCost = (k: string): string => {
      const v = cost(w.cpu?.procs[k], w, sec.scale);
      return v === undefined ? '—' : `${fmt(v)} ${sec.unit}/${sec.workUnit}`;
    };
    const hostShare = w.cpu && w.cpu.wallS > 0 ? w.cpu.hostBusyS / w.cpu.wallS : undefined;
    return [
      sec.name,
      pct(share(w.cpu?.procs.tunroute, w)),
      procCost('tunroute'),
      pct(share(w.cpu?.procs.proxy, w)),
      procCost('proxy'),
      pct(hostShare) + (otherCores(w) >= BUSY_OTHER_CORES ? ' *' : ''),
    ];
  });
  return {
    head: ['through tunroute', 'tunroute, % of a core', 'tunroute CPU per unit', `${proxy}, % of a core`, `${proxy} CPU per unit`, 'host busy, % of a core'],
    align: 'lrrrrr',
    rows,
  };
}

/** The two paths of the wg test, as its table and the failures name them. */
const WG_PATHS = { direct: 'wireguard-go ↔ wireguard-go', tunroute: 'tunroute ↔ wireguard-go' } as const;

/** The wg test's windows (reference and tunroute), upload then download. */
function wgWindows(r: BenchReport): { dir: string; p: Pair<IperfResult>; direct: WindowView; tunroute: WindowView }[] {
  const gb = (v: IperfResult): Work => ({ units: v.bytes / 1e9, activeS: v.seconds });
  const out: { dir: string; p: Pair<IperfResult>; direct: WindowView; tunroute: WindowView }[] = [];
  for (const [p, dir] of [
    [r.wgUp, 'upload'],
    [r.wgDown, 'download'],
  ] as const) {
    if (p) out.push({ dir, p, direct: view(p.direct, gb), tunroute: view(p.tunroute, gb) });
  }
  return out;
}

/**
 * The wg test: tunroute ↔ wireguard-go against wireguard-go ↔ wireguard-go (the reference; the
 * column that is "direct" in the JSON), throughput and CPU; undefined when the test did not run.
 */
export function wgTable(r: BenchReport): Table | undefined {
  const windows = wgWindows(r);
  if (windows.length === 0) return undefined;
  const rows: Row[] = [];
  const s = r.settings.seconds;
  const mbps = (v: IperfResult): number => v.gbps * 1000;
  const mark = (w: WindowView): string => (otherCores(w) >= BUSY_OTHER_CORES ? ' *' : '');
  for (const { dir, p, direct: d, tunroute: t } of windows) {
    const proc = (w: WindowView, k: 'client' | 'server'): number | undefined => w.cpu?.procs[k];
    rows.push([`${dir}, Mbit/s (iperf3, 1 stream, ${s} s)`, cell(p.direct, mbps), cell(p.tunroute, mbps), ratio(value(p.tunroute, mbps), value(p.direct, mbps))]);
    rows.push([`${dir}, retransmits of the sending TCP`, cell(p.direct, (v) => v.retransmits), cell(p.tunroute, (v) => v.retransmits), '']);
    rows.push([`${dir}, client end (wireguard-go, or tunroute), % of a core`, pct(share(proc(d, 'client'), d)), pct(share(proc(t, 'client'), t)), '']);
    const dc = cost(proc(d, 'client'), d, 1);
    const tc = cost(proc(t, 'client'), t, 1);
    rows.push([`${dir}, client end CPU per GB, CPU-s`, fmt(dc), fmt(tc), ratio(dc, tc)]);
    rows.push([`${dir}, server's wireguard-go, % of a core`, pct(share(proc(d, 'server'), d)), pct(share(proc(t, 'server'), t)), '']);
    const dh = cost(d.cpu?.hostBusyS, d, 1);
    const th = cost(t.cpu?.hostBusyS, t, 1);
    rows.push([`${dir}, CPU per GB, whole host, CPU-s`, fmt(dh) + mark(d), fmt(th) + mark(t), ratio(dh, th)]);
  }
  return { head: ['WireGuard tunnel, same tunnel MTU', WG_PATHS.direct, WG_PATHS.tunroute, 'tunroute vs wireguard-go'], align: 'lrrr', rows };
}

/** What the wg test compares, under its table (or why it did not run). */
function wgNotes(r: BenchReport): string[] {
  const w = r.settings.wg;
  if (w?.skipped) return [`WireGuard tunnel (wg test): skipped: ${w.skipped}`];
  if (!r.wgUp && !r.wgDown) return [];
  const version = r.env.tools['wireguard-go'];
  return [
    `WireGuard: one iperf3 stream through a WireGuard tunnel (tunnel MTU ${w?.tunnelMtu ?? '?'} on both paths), each path`,
    `in its own pair of namespaces joined by a veth (MTU ${w?.vethMtu ?? '?'}), iperf3 -s on the server's tunnel address`,
    `behind wireguard-go${version ? ` ${version}` : ''}. The reference is wireguard-go ↔ wireguard-go: userspace at both ends,`,
    "NOT the kernel's WireGuard; tunroute ↔ wireguard-go puts `tunroute up --tunnel wg.conf` (tun0) in place of the",
    'client\'s wireguard-go. "tunroute vs wireguard-go": 1 = as good as wireguard-go, higher is better',
    '(throughput: tunroute/reference; CPU per GB: reference/tunroute). Client end: the client\'s wireguard-go, or',
    "tunroute; CPU is utime+stime from /proc/<pid>/stat as a share of one core while iperf3 ran.",
  ];
}

/** Whether a ratio is within a target, as a table cell. */
function verdict(ok: boolean | undefined): string {
  return ok === undefined ? '' : ok ? 'yes' : 'NO';
}

/** The reliability test's figures (labs of their own); undefined when it did not run. */
export function reliabilityTable(r: BenchReport): Table | undefined {
  const rel = r.reliability;
  if (!rel) return undefined;
  const rows: Row[] = [];
  const failedRow = (what: string): void => {
    rows.push([what, 'failed', '', '']);
  };
  const m = rel.malformed;
  if (m) {
    if (!m.ok) failedRow('malformed packets written into tun0 during downloads');
    else {
      const v = m.value;
      rows.push([`malformed packets written into tun0 (seed ${v.seed}) during ${fmt((r.settings.reliability?.transferBytes ?? 0) / 2 ** 20)} MiB downloads`, fmt(v.sent), fmt(v.packets), '']);
      rows.push(['… written in, s / at packets/s (the script\'s own pace)', `${fmt(v.burstSeconds)} / ${fmt(v.ratePps)}`, '', '']);
      rows.push(['… tunroute still running afterwards (crashes)', v.tunrouteRunning ? 'yes (0)' : `NO: ${v.tunrouteExit ?? '?'}`, 'yes (0)', verdict(v.tunrouteRunning)]);
      rows.push(['… counted by a drop reason, or held as a fragment', fmt(v.counted), fmt(v.sent - v.kernelDropped), verdict(v.uncounted <= 0)]);
      rows.push(['… dropped by the kernel before tunroute (tun0 tx_dropped)', fmt(v.kernelDropped), '0', '']);
      rows.push(['… counted by no counter', fmt(Math.max(0, v.uncounted)), '0', verdict(v.uncounted <= 0)]);
      if (v.byKind) {
        const exact = v.byKind.filter((k) => k.counted >= k.sent).length;
        rows.push(['… kinds counted in full under their own drop reason', `${exact} of ${v.byKind.length}`, `${v.byKind.length} of ${v.byKind.length}`, verdict(exact === v.byKind.length)]);
      }
      rows.push(['downloads during the burst, intact (bytes and sha256) / made', `${fmt(v.transfersIntact)} / ${fmt(v.transfers)}`, 'all', verdict(v.transfers > 0 && v.transfersIntact === v.transfers)]);
      rows.push(['… download throughput meanwhile, Mbit/s', fmt(v.transferMbps), '', '']);
    }
  }
  const p = rel.proxyRestart;
  if (p) {
    if (!p.ok) failedRow('SOCKS5 server killed and restarted');
    else {
      const v = p.value;
      const lim = v.closeLimitS;
      rows.push([`idle flows when the SOCKS5 server was killed (SIGKILL)`, fmt(v.open), fmt(v.flows), '']);
      rows.push([`… reset (ECONNRESET) / ended (FIN) / other error, within ${lim} s`, `${fmt(v.reset)} / ${fmt(v.ended)} / ${fmt(v.otherErrors)}`, 'all closed', verdict(v.stillOpen === 0)]);
      rows.push([`… still open ${lim} s after the kill (hung)`, fmt(v.stillOpen), '0', verdict(v.stillOpen === 0)]);
      rows.push(['… time from the kill to their close, median / max, ms', `${fmt(v.closeMedianMs)} / ${fmt(v.closeMaxMs)}`, '', '']);
      rows.push(['SOCKS5 server restarted: first new flow through tunroute, ms after the server serves again', v.recoveryMs === null ? 'never' : fmt(v.recoveryMs), '≤ 1,000', verdict(v.recoveryMs !== null && v.recoveryMs <= 1000)]);
      const ms = (x: number | null): string => (x === null ? 'never' : fmt(x));
      rows.push(['… ms after the restart: the server accepts / serves / a flow through tunroute works', `${ms(v.proxyUpMs)} / ${ms(v.proxyServesMs)} / ${ms(v.restartToFlowMs)}`, '', '']);
    }
  }
  const c = rel.churn;
  if (c) {
    if (!c.ok) failedRow('flows opened and closed in rounds');
    else {
      const v = c.value;
      const last = v.samples[v.samples.length - 1];
      const first = v.samples[0];
      const ratioOf = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined || b === 0 ? undefined : a / b);
      const fdR = ratioOf(last?.fds, v.start.fds);
      const rssR = ratioOf(last?.rssKiB, v.start.rssKiB);
      const rssR1 = ratioOf(last?.rssKiB, first?.rssKiB);
      rows.push([`${fmt(v.flows)} flows opened and closed, rounds done`, fmt(v.samples.length), fmt(v.rounds), '']);
      rows.push(['… flows that failed to open, all rounds', fmt(v.samples.reduce((s2, x) => s2 + x.failed, 0)), '0', '']);
      rows.push(['tunroute open fds: start → after the last round', `${fmt(v.start.fds)} → ${fmt(last?.fds)}`, '', '']);
      rows.push(['… last ÷ start', fmt(fdR, 3), '≤ 1.1', verdict(fdR === undefined ? undefined : fdR <= 1.1)]);
      rows.push(['tunroute RSS, MiB: start → after round 1 → after the last', `${fmt(v.start.rssKiB / 1024)} → ${fmt((first?.rssKiB ?? 0) / 1024)} → ${fmt((last?.rssKiB ?? 0) / 1024)}`, '', '']);
      rows.push(['… last ÷ start', fmt(rssR, 3), '≤ 1.1', verdict(rssR === undefined ? undefined : rssR <= 1.1)]);
      rows.push(['… last ÷ after round 1 (growth across rounds: a leak)', fmt(rssR1, 3), '', '']);
    }
  }
  const w = rel.wgForgery;
  if (w) {
    if (!w.ok) failedRow('forged and replayed WireGuard datagrams');
    else {
      const v = w.value;
      rows.push(['forged WireGuard datagrams sent to tunroute / replays of captured genuine ones', `${fmt(v.forged)} / ${fmt(v.replayed)}`, `${fmt(r.settings.reliability?.wgDatagrams)} / ${fmt(r.settings.reliability?.wgDatagrams)}`, '']);
      rows.push(['… counted by a drop reason', fmt(v.counted), fmt(v.forged + v.replayed - v.kernelUdpErrors), verdict(v.counted === v.forged + v.replayed - v.kernelUdpErrors)]);
      rows.push(['… accepted: inner packets out of the tunnel / payloads delivered', `${fmt(v.innerPacketsAccepted)} / ${fmt(v.payloadsDelivered)}`, '0 / 0', verdict(v.innerPacketsAccepted === 0 && v.payloadsDelivered === 0)]);
      rows.push(['… genuine datagrams through the tunnel afterwards', `${fmt(v.genuineAfter)} of ${fmt(v.genuineAfterSent)}`, 'all', verdict(v.genuineAfter === v.genuineAfterSent)]);
    }
  }
  const stops = [m, p, c, w].flatMap((o) => (o?.ok && o.value.shutdown ? [o.value.shutdown] : []));
  if (stops.length > 0) {
    const clean = stops.filter((x) => x.clean).length;
    const slowest = Math.max(...stops.map((x) => x.seconds));
    rows.push([`tunroute stopped with SIGTERM after each fault: exit 0 / stops, slowest, s`, `${clean} / ${stops.length}, ${fmt(slowest)}`, 'all', verdict(clean === stops.length)]);
  }
  return { head: ['reliability (labs of their own)', 'measured', 'target', 'met'], align: 'lrrl', rows };
}

/** What the reliability figures mean, under their table. */
function reliabilityNotes(r: BenchReport): string[] {
  const rel = r.reliability;
  if (!rel) return [];
  const out: string[] = [];
  const m = rel.malformed;
  if (m?.ok) {
    const d = Object.entries(m.value.dropsByReason)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${fmt(n)}`)
      .join(', ');
    out.push(
      'Malformed: scripts/malformed-burst.py --mode packet writes every packet as built into tun0 (AF_PACKET on the device), one kind',
      'of damage each (random bytes, truncated, bad version/IHL/lengths/checksums, TCP/UDP header errors, fragments), while',
      `50 MiB downloads through tunroute are checked by sha256. tunroute's counters (status --json) grew by: ${d}; fragments held ${fmt(m.value.fragmentsHeld)}.`,
    );
    if (m.value.byKind) {
      out.push(
        `Per kind, sent → counted where it must land: ${m.value.byKind.map((k) => `${k.kind} ${fmt(k.sent)} → ${fmt(k.counted)}`).join(', ')}`,
        '(random bytes: the IPv4 header reasons beyond their own kinds; fragments: held by the reassembler, or frag_*).',
      );
    }
  }
  if (rel.proxyRestart?.ok) {
    out.push(
      'Proxy restart: idle flows (each proven by an echo) when dante is killed with SIGKILL; a flow "ended" saw a FIN, "reset" an',
      'RST. After the restart a probe in the client namespace tries, every 20 ms, a new flow through tunroute and the same flow by a',
      'SOCKS5 client of its own straight to the proxy: tunroute\'s recovery is from the first flow the proxy served to the first',
      'echo through tunroute.',
    );
  }
  const c = rel.churn;
  if (c?.ok) {
    const per = c.value.samples.map((x) => `${fmt(x.fds)} fds/${fmt(x.rssKiB / 1024)} MiB`).join(', ');
    out.push(
      `Churn: netcli hold opens the flows (64 at a time, each proven by an echo), then exits (the kernel closes them all); fds`,
      `(/proc/PID/fd) and VmRSS are read once tunroute has no flow left, ${r.settings.reliability?.churnSettleS ?? '?'} s later. Start: ${fmt(c.value.start.fds)} fds/${fmt(c.value.start.rssKiB / 1024)} MiB; after each round: ${per}.`,
    );
  }
  const w = rel.wgForgery;
  if (w?.ok) {
    const d = Object.entries(w.value.dropsByReason)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${fmt(n)}`)
      .join(', ');
    out.push(
      'WireGuard: tunroute up --tunnel ↔ wireguard-go through a UDP relay that keeps copies of genuine transport messages; the relay then',
      'sends, from the peer\'s address, forged datagrams (random bytes; type 1/2/3 with random contents; type 4 with a random index; type 4',
      `with tunroute's real receiver index, a new counter and a wrong tag) and replays of the copies, at ${fmt(r.settings.reliability?.wgAttackPps ?? 0)}/s. Drops: ${d}.`,
    );
  }
  return out;
}

/** The reliability parts that failed to run, for the failures list. */
function reliabilityFailures(r: BenchReport): string[] {
  const rel = r.reliability;
  if (!rel) return [];
  const out: string[] = [];
  for (const [name, o] of [
    ['reliability, malformed packets', rel.malformed],
    ['reliability, proxy restart', rel.proxyRestart],
    ['reliability, flow churn', rel.churn],
    ['reliability, forged WireGuard datagrams', rel.wgForgery],
  ] as const) {
    if (o && !o.ok) out.push(`${name}: ${o.error}`);
  }
  return out;
}

/** A markdown table with padded columns (readable as plain text too). */
export function markdownTable(t: Table): string {
  const cols = t.head.length;
  const width = (i: number): number => Math.max(3, ...[t.head, ...t.rows].map((r) => [...(r[i] ?? '')].length));
  const widths = Array.from({ length: cols }, (_, i) => width(i));
  const pad = (s: string, i: number): string => {
    const n = (widths[i] ?? 0) - [...s].length;
    return t.align[i] === 'r' ? ' '.repeat(n) + s : s + ' '.repeat(n);
  };
  const line = (r: Row): string => `| ${Array.from({ length: cols }, (_, i) => pad(r[i] ?? '', i)).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (t.align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(t.head), rule, ...t.rows.map(line)].join('\n');
}

function failures(r: BenchReport): string[] {
  const out: string[] = [];
  const add = (name: string, p: Pair<unknown> | undefined, names: Record<'direct' | 'tunroute', string> = { direct: 'direct', tunroute: 'tunroute' }): void => {
    if (!p) return;
    for (const path of ['direct', 'tunroute'] as const) {
      const runs = p.runs?.[path] ?? [p[path]];
      runs.forEach((o, i) => {
        if (!o.ok) out.push(`${name}, ${names[path]}${runs.length > 1 ? ` (run ${i + 1} of ${runs.length})` : ''}: ${o.error}`);
      });
    }
  };
  add('iperf3 upload', r.iperfUp);
  add('iperf3 download', r.iperfDown);
  add('round trips', r.rr);
  add('connections', r.cps);
  if (r.ceiling && !r.ceiling.ok) out.push(`connections, ceiling (SOCKS5 client straight to the proxy): ${r.ceiling.error}`);
  add('time to first byte', r.ttfb);
  if (r.flows && !r.flows.ok) out.push(`idle flows: ${r.flows.error}`);
  add('fake-IP DNS queries', r.fakeIpDns);
  add('connect by name', r.ttfbByName);
  if (r.namesTunrouteExit) out.push(`tunroute (names test) exited during the run: ${r.namesTunrouteExit}`);
  add('UDP', r.udp);
  add('DNS', r.dns);
  add('WireGuard upload', r.wgUp, WG_PATHS);
  add('WireGuard download', r.wgDown, WG_PATHS);
  if (r.tunrouteExit) out.push(`tunroute exited during the run: ${r.tunrouteExit}`);
  if (r.ttfbTunrouteExit) out.push(`tunroute (ttfb test) exited during the run: ${r.ttfbTunrouteExit}`);
  if (r.wgTunrouteExit) out.push(`tunroute (wg test) exited during the run: ${r.wgTunrouteExit}`);
  out.push(...reliabilityFailures(r));
  return out;
}

export function anyFailed(r: BenchReport): boolean {
  return failures(r).length > 0;
}

function machine(r: BenchReport): string {
  const e = r.env;
  return `${e.cpus} vCPU (${e.cpuModel}), ${fmt(e.memGiB, 2)} GiB, Linux ${e.kernel}, Node ${e.node}`;
}

/** How the UDP and DNS tests were set up: a paragraph (of lines) each, none when neither ran. */
function testNotes(r: BenchReport): string[][] {
  const out: string[][] = [];
  if (r.udp) {
    const v = r.udp.direct.ok ? r.udp.direct.value : r.udp.tunroute.ok ? r.udp.tunroute.value : undefined;
    const rcvbuf = r.settings.proxyUdpRcvbuf;
    const flags = v ? ` (-b ${fmt(v.offeredMbps)}M -l ${v.datagramBytes} -w ${fmt(v.bufferBytes / 2 ** 20, 2)}M)` : '';
    out.push([
      `UDP: iperf3 -u at a fixed offered rate${flags}, each server bound to the address it is`,
      'reached at; "received" is what the server counted, loss is (sent - received) / sent. Through',
      `tunroute the datagrams go by SOCKS5 UDP ASSOCIATE; ${r.settings.proxy} ran with ` +
        (rcvbuf === undefined || rcvbuf === null
          ? 'its default UDP socket buffers'
          : `${fmt(rcvbuf / 2 ** 20, 2)} MiB UDP receive buffers asked`),
      rcvbuf === undefined || rcvbuf === null
        ? '(net.core.rmem_default, 208 KiB on most hosts), which drop bursts: part of the loss is the proxy\'s.'
        : '(internal/external.udp.so_rcvbuf, capped at net.core.rmem_max; its 208 KiB default drops bursts).',
    ]);
  }
  if (r.dns) {
    const v = r.dns.direct.ok ? r.dns.direct.value : r.dns.tunroute.ok ? r.dns.tunroute.value : undefined;
    out.push([
      `DNS: one query at a time (node dgram client) to dnsmasq, ${v ? v.query : 'a new name each query, TTL 0'},`,
      "so tunroute's answer cache never answers and every query makes the whole trip. tunroute runs with",
      'dns hijack, its upstream dnsmasq reached through the proxy (UDP ASSOCIATE; DNS over TCP when the',
      'proxy refuses UDP); direct asks dnsmasq over the veth.',
    ]);
  }
  return out;
}

function setup(r: BenchReport): string {
  const s = r.settings;
  const mtu = s.tunMtu === null ? 'tun0 MTU unknown' : `tun0 MTU ${s.tunMtu}`;
  const runs = s.repeat > 1 ? `, median of ${s.repeat} runs each` : '';
  if (!socksLabRan(r)) return `tunroute ${r.env.commit}, ${s.seconds} s per test${runs}`;
  return `tunroute ${r.env.commit}, proxy ${s.proxy}${r.env.tools[s.proxy] ? ` (${r.env.tools[s.proxy]})` : ''}, ${mtu}, veth MTU ${s.vethMtu ?? '?'}, ${s.seconds} s per test${runs}`;
}

/** What the terminal shows. */
export function renderText(r: BenchReport): string {
  const busyNote = `* the host was busy with other work in that window (≥ ${fmt(BUSY_OTHER_CORES * 100, 2)} % of a core beyond the lab's processes).`;
  const lines = [
    `tunroute benchmark, ${r.date}`,
    `machine: ${machine(r)}`,
    `setup:   ${setup(r)}`,
    `tools:   ${Object.entries(r.env.tools)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `background load before the run: ${fmt(r.backgroundCores * 100, 2)} % of a core (everything else on this host)`,
  ];
  if (socksLabRan(r)) {
    lines.push(
      '',
      markdownTable(summaryTable(r)),
      '',
      '"tunroute vs direct": 1 = as good as the kernel alone; higher is better (throughput: tunroute/direct;',
      'times and CPU costs: direct/tunroute). CPU of the "lab processes": utime+stime of everything the lab',
      'runs (tool client and server, proxy, tunroute), blind to other work; "whole host": busy time of all',
      'cores from /proc/stat (with softirq time, and with everybody else\'s work).',
      ...(marked(sections(r)) ? [busyNote] : []),
      ...testNotes(r).flat(),
      '',
      markdownTable(cpuTable(r)),
      '',
      'CPU of tunroute and of the proxy (with its workers): utime+stime from /proc/<pid>/stat, as a share of one',
      'core while the tool ran and per unit of work; host busy: all cores, everything, over the window.',
    );
  }
  const pf = perFlowTable(r);
  if (pf) lines.push('', markdownTable(pf), '', ...perFlowNotes(r));
  const wg = wgTable(r);
  if (wg) lines.push('', markdownTable(wg), '', ...wgNotes(r), ...(marked(wgWindows(r)) ? [busyNote] : []));
  else lines.push(...wgNotes(r).flatMap((l) => ['', l]));
  const rel = reliabilityTable(r);
  if (rel) lines.push('', markdownTable(rel), '', ...reliabilityNotes(r));
  const f = failures(r);
  if (f.length > 0) lines.push('', 'failures:', ...f.map((x) => `  - ${x}`));
  return lines.join('\n') + '\n';
}

export const README_START = '<!-- bench:start -->';
export const README_END = '<!-- bench:end -->';

/** The README block between the markers (markers excluded). */
/** The command behind a report (rebuilt from its settings when it predates `command`). */
function commandOf(s: BenchSettings): string {
  if (s.command) return s.command;
  const flags: string[] = [];
  if (s.seconds !== 5) flags.push('--seconds', String(s.seconds));
  if (s.repeat > 1) flags.push('--repeat', String(s.repeat));
  if (s.requestedMtu !== null) flags.push('--mtu', String(s.requestedMtu));
  if (s.proxy !== 'dante') flags.push('--proxy', s.proxy);
  if (s.tests.length < 4) flags.push('--only', s.tests.join(','));
  return ['npm run bench', ...(flags.length ? ['--', ...flags] : [])].join(' ');
}

export function renderReadme(r: BenchReport): string {
  const command = commandOf(r.settings);
  const f = failures(r);
  const busyNote = `\\* the host was busy with other work in that window (≥ ${fmt(BUSY_OTHER_CORES * 100, 2)} % of a core beyond the lab's processes).`;
  const socks = socksLabRan(r);
  const lines = [
    '',
    socks
      ? "### Benchmark: tunroute vs the kernel's direct path"
      : r.ttfb || r.flows || r.fakeIpDns || r.ttfbByName
        ? '### Benchmark: the cost of a flow, tunroute vs the kernel'
        : r.wgUp || r.wgDown
          ? '### Benchmark: WireGuard tunnel, tunroute vs wireguard-go'
          : '### Benchmark: reliability under faults',
    '',
    `- run: ${r.date.slice(0, 10)}, \`${command}\``,
    `- machine: ${machine(r)}`,
    `- noise: a shared machine (other work just before the run: ${fmt(r.backgroundCores * 100, 2)} % of a core); read the figures for direction`,
    `- setup: ${setup(r)}`,
  ];
  if (socks) {
    lines.push(
      '',
      'Both columns come from the same run in the same lab: "direct" is the tool in the client',
      'namespace talking to the server over a veth pair (kernel only); "tunroute" is the same tool',
      'talking to an address routed into tun0, carried by tunroute through the SOCKS5 proxy.',
      '',
      markdownTable(summaryTable(r)),
      '',
      '"tunroute vs direct": 1 = as good as the kernel alone, higher is better (throughput:',
      'tunroute/direct; times and CPU costs: direct/tunroute). CPU of the "lab processes" is',
      'utime+stime of everything the lab runs (tool client and server, proxy, tunroute), blind to',
      'other work; "whole host" is the busy time of all cores from /proc/stat (with softirq time, and',
      "with everybody else's work).",
      ...(marked(sections(r)) ? ['', busyNote] : []),
      ...testNotes(r).flatMap((para) => ['', ...para]),
      '',
      'CPU of tunroute and of the proxy (with its workers) in each window through tunroute',
      '(utime+stime from /proc/<pid>/stat), as a share of one core while the tool ran and per unit',
      'of work:',
      '',
      markdownTable(cpuTable(r)),
    );
  }
  const pf = perFlowTable(r);
  if (pf) lines.push('', ...(socks ? ['#### Per flow: time to first byte over a delay, memory per idle flow', ''] : []), markdownTable(pf), '', ...perFlowNotes(r));
  const wg = wgTable(r);
  if (wg) {
    lines.push(
      '',
      ...(socks || pf ? ['#### WireGuard tunnel: tunroute ↔ wireguard-go against wireguard-go ↔ wireguard-go (not the kernel)', ''] : []),
      markdownTable(wg),
      '',
      ...wgNotes(r),
      ...(marked(wgWindows(r)) ? ['', busyNote] : []),
    );
  } else if (r.settings.wg?.skipped) {
    lines.push('', ...wgNotes(r));
  }
  const rel = reliabilityTable(r);
  if (rel) lines.push('', ...(socks || pf || wg ? ['#### Reliability under faults', ''] : []), markdownTable(rel), '', ...reliabilityNotes(r));
  lines.push('', ...(f.length > 0 ? ['Failures in this run:', '', ...f.map((x) => `- ${x}`), ''] : []), '');
  return lines.join('\n');
}

/**
 * Replace what is between the markers in the README (re-read just before writing, written
 * atomically); if there are no markers yet, put them at the end of the `## Performance`
 * section. Nothing else in the file changes.
 */
export function writeReadme(file: string, block: string): void {
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf(README_START);
  const end = text.indexOf(README_END);
  let next: string;
  if (start >= 0 && end > start) {
    next = text.slice(0, start + README_START.length) + '\n' + block + text.slice(end);
  } else if (start < 0 && end < 0) {
    const heading = /^## Performance[^\n]*\n/m.exec(text);
    if (!heading) throw new Error(`${file} has no "## Performance" heading and no ${README_START} markers`);
    const after = heading.index + heading[0].length;
    const nextHeading = /^## /m.exec(text.slice(after));
    const at = nextHeading ? after + nextHeading.index : text.length;
    const before = text.slice(0, at).replace(/\n*$/, '\n\n');
    next = `${before}${README_START}\n${block}${README_END}\n${at < text.length ? '\n' : ''}${text.slice(at)}`;
  } else {
    throw new Error(`${file}: found only one of ${README_START} / ${README_END}; fix the markers by hand`);
  }
  const tmp = `${file}.bench-tmp-${process.pid}`;
  writeFileSync(tmp, next);
  renameSync(tmp, file);
}
