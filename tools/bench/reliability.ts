/**
 * The benchmark's reliability test (issue #13, item 8): four faults, each in a lab of its own,
 * each bounded in count and time, each lab removed at the end, also after an error.
 *
 *   proxy labs (malformed, proxy restart, churn):
 *     c: tun0 + tunroute --route 10.66.3.0/24        s: dante on 10.96.0.2:1080, 10.66.3.7 on lo,
 *        --proxy socks5://10.96.0.2:1080                an HTTP server on :8080, an echo server on :7000
 *     10.96.0.1 ───────────── veth ─────────────── 10.96.0.2
 *
 *   malformed: scripts/malformed-burst.py writes N malformed packets (seeded; random, truncated,
 *   bit-flipped, lying lengths, fragments) straight into tun0 (an AF_PACKET socket on the device,
 *   so that nothing is repaired or refused by the kernel's IP layer) while sha256-checked HTTP
 *   downloads run through tunroute, one after another. Reported: whether tunroute survived, the
 *   increase of its drop counters by reason against what the script sent by kind, and the
 *   transfers' bytes and hashes.
 *
 *   proxy restart: FLOWS_WATCHED idle flows through tunroute; dante is killed (SIGKILL, its
 *   whole PID namespace with it); the flows' clients record how each ended (ECONNRESET, FIN, or
 *   not at all within CLOSE_LIMIT_S); after at least DOWN_MIN_S dante is started again on the
 *   same port while a probe in c tries, every 20 ms, a new flow through tunroute and the same
 *   flow by a SOCKS5 client of its own straight to the proxy: tunroute's recovery is the time
 *   from the first flow the proxy served to the first one through tunroute that worked.
 *
 *   churn: a fresh tunroute carries FLOWS connections (netcli hold: each proven by an echo, held
 *   idle, then all closed at once), ROUNDS times; its open fds (/proc/PID/fd) and VmRSS are read
 *   before the first round and after each (once tunroute has no flow left, plus CHURN_SETTLE_S).
 *
 *   wg lab:
 *     wc: tunroute up --tunnel wg.conf (tun0),          ws: wireguard-go 10.8.0.1/24 on :51820,
 *         Endpoint = 10.95.0.2:51821, listens on :51820     the relay on 10.95.0.2:51821 → :51820
 *     10.95.0.1 ─────────────── veth ─────────────── 10.95.0.2
 *
 *   wg forgery: genuine UDP datagrams go from ws (10.8.0.1) through the tunnel to a counter in wc;
 *   the relay keeps copies of the encrypted transport messages; then it sends tunroute N forged
 *   datagrams and N replays of the copies from the address tunroute knows as its peer's.
 *   Reported: what tunroute counted by drop reason, and that no forged or replayed payload came
 *   out of the tunnel (the counter in wc, tunroute's inner packet count); then a few genuine
 *   datagrams again, to show that the tunnel still works.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Lab,
  requireBinary,
  startDante,
  startHttpServer,
  startWireguardGo,
  labBytesSha256,
  type LabProcess,
  type Namespace,
} from '../lab/index.js';
import { statusSnapshotSchema, type StatusSnapshot } from '../../src/control/protocol.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import type {
  BenchReport,
  ChurnResult,
  ChurnSample,
  MalformedKind,
  MalformedResult,
  Outcome,
  ProxyRestartResult,
  ReliabilitySettings,
  Shutdown,
  WgForgeryResult,
} from './report.js';
import { CpuWatch, type CpuTotals } from './cpu.js';
import { fdCount, openFilesLimit, rssKiB } from './proc.js';
import { errText, oneUserConfig, sleep } from './util.js';
import { tunrouteStatus } from './tools.js';
import type { HoldResult } from './netcli.js';
import type { ProbeResult, WatchOpenResult, WatchResult, WgAttackResult } from './faultcli.js';

const CLIENT_IP = '10.96.0.1';
const SERVER_IP = '10.96.0.2';
const ROUTED_CIDR = '10.66.3.0/24';
const ROUTED_IP = '10.66.3.7';
const PROXY_PORT = 1080;
const HTTP_PORT = 8080;
const ECHO_PORT = 7000;

/** The issue's figures: the defaults of the options. */
export const RELIABILITY_DEFAULTS = { malformed: 1_000_000, churnFlows: 10_000, churnRounds: 10, wgDatagrams: 10_000 } as const;

/** malformed: the burst's seed, and its bound in time. */
const BURST_SEED = 1;
const BURST_LIMIT_S = 1200;
/** malformed: each download through tunroute while the burst runs, and the bound on their count. */
const TRANSFER_BYTES = 50 * 1024 * 1024;
const TRANSFER_LIMIT_S = 180;
const TRANSFERS_MAX = 200;

/** proxy restart: idle flows watched, how long they get to close, the least downtime. */
const FLOWS_WATCHED = 50;
const CLOSE_LIMIT_S = 10;
const DOWN_MIN_S = 2;
const PROBE_LIMIT_S = 60;
/** The issue's target: new flows work within this long of the proxy's return. */
export const RECOVERY_TARGET_MS = 1000;

/**
 * churn: connections being opened at a time, the bound on one opening, on draining, and the
 * settle before a reading (10 s, as the flows test: tunroute gives memory back 2 s after a burst
 * of closes, relay/trim-after-burst.ts; read 3 s after the drain, RSS was 76-79 or 106-113 MiB
 * from round to round, depending on whether that trim came after the last closes).
 */
const CHURN_CONCURRENCY = 64;
const CHURN_OPEN_LIMIT_S = 300;
const CHURN_DRAIN_LIMIT_S = 120;
const CHURN_SETTLE_S = 10;
/** churn: the whole test gives up starting new rounds after this long. */
const CHURN_LIMIT_S = 3600;
/** The issue's target: fds and RSS back within 10 % of the start. */
export const CHURN_TARGET_RATIO = 1.1;

/** wg: addresses of its lab, the genuine datagrams, the attack's pace. */
const WG = { clientVeth: '10.95.0.1', serverVeth: '10.95.0.2', clientTun: '10.8.0.2', serverTun: '10.8.0.1' } as const;
const WG_PORT = 51820;
const RELAY_PORT = 51821;
const WG_MTU = 1420;
const COUNTER_PORT = 9000;
const GENUINE = 500;
const GENUINE_AFTER = 100;
const GENUINE_PPS = 2000;
const ATTACK_PPS = 20_000;
const ATTACK_SEED = 13;

export interface ReliabilityOptions {
  /** dist/cli/main.js */
  cli: string;
  /** dist-tools/tools/bench/netcli.js and faultcli.js */
  netcli: string;
  faultcli: string;
  /** scripts/malformed-burst.py */
  burstScript: string;
  malformed: number;
  churnFlows: number;
  churnRounds: number;
  wgDatagrams: number;
  tunrouteArgs: readonly string[];
  progress: (msg: string) => void;
}

/** `tunroute status --json`, parsed; throws when it does not answer. */
async function status(cli: string, control: string): Promise<StatusSnapshot> {
  const raw = await tunrouteStatus(cli, control);
  const r = statusSnapshotSchema.safeParse(raw);
  if (!r.success) throw new Error(`tunroute status --json did not answer on ${control}`);
  return r.data;
}

/** How a lab process ended, for the report. */
function exitText(p: LabProcess): string {
  const st = p.exitStatus;
  return `${st?.signal ?? `code ${st?.code ?? '?'}`}; last output: ${p.outputTail(600)}`;
}

/** Counter increases from `a` to `b`, non-zero only. */
function increase(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

function sum(r: Record<string, number>): number {
  return Object.values(r).reduce((s, v) => s + v, 0);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : (s[Math.floor((s.length - 1) / 2)] ?? 0);
}

// ---------------------------------------------------------------------------------------------
// the proxy lab

interface ProxyLab {
  lab: Lab;
  c: Namespace;
  s: Namespace;
  proxy: LabProcess;
  tunroute: LabProcess;
  control: string;
  tunrouteArgs: string[];
}

/** Two namespaces, dante, the echo (and HTTP) server, and a running tunroute with --control. */
async function proxyLab(prefix: string, opts: ReliabilityOptions, http: boolean): Promise<ProxyLab> {
  const lab = await Lab.create({ prefix });
  try {
    const nsOpts = { tcpTwReuse: true, wideLocalPortRange: true };
    const c = await lab.addNamespace('c', nsOpts);
    const s = await lab.addNamespace('s', nsOpts);
    await lab.link(c, s, { cidrA: `${CLIENT_IP}/24`, cidrB: `${SERVER_IP}/24` });
    await s.exec(['ip', 'addr', 'add', `${ROUTED_IP}/32`, 'dev', 'lo'], { timeoutMs: 10_000 });
    const proxy = await startDante(s, { listen: SERVER_IP, port: PROXY_PORT });
    if (http) await startHttpServer(s, { port: HTTP_PORT });
    const echo = s.spawn([process.execPath, opts.netcli, 'serve', '0.0.0.0', String(ECHO_PORT)], { name: 'echo-server' });
    await echo.waitForLine(/^listening /, 10_000);
    const control = join(lab.tmpDir, 'tunroute.sock');
    // One user (the bench's netcli) opens every flow of the churn.
    const config = oneUserConfig(lab.tmpDir);
    const args = ['up', '-c', config, '--route', ROUTED_CIDR, '--proxy', `socks5://${SERVER_IP}:${PROXY_PORT}`, '--control', control, ...opts.tunrouteArgs];
    opts.progress(`starting tunroute ${args.join(' ')}`);
    const tunroute = c.spawn([process.execPath, opts.cli, ...args], { name: 'tunroute', logFile: join(lab.tmpDir, 'tunroute.log') });
    await tunroute.waitForLine(/"msg":"tunroute is up"/, 20_000);
    return { lab, c, s, proxy, tunroute, control, tunrouteArgs: args.map((a) => (a.startsWith(lab.tmpDir) ? a.replace(lab.tmpDir, '<lab tmp>') : a)) };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/** How long tunroute takes to exit on SIGTERM once the fault is over, and how it exits. */
const SHUTDOWN_LIMIT_S = 15;

async function shutdown(tunroute: LabProcess): Promise<Shutdown> {
  if (tunroute.exited) return { seconds: 0, exit: `already exited: ${exitText(tunroute)}`, clean: false };
  const t0 = performance.now();
  const st = await tunroute.stop('SIGTERM', SHUTDOWN_LIMIT_S * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const clean = st.code === 0 && st.signal === null;
  return { seconds, exit: st.signal ?? `code ${st.code ?? '?'}`, clean };
}

/** Run `fn` in a fresh proxy lab; any error becomes a failed outcome; the lab always goes. */
async function inProxyLab<T extends object>(
  what: string,
  prefix: string,
  opts: ReliabilityOptions,
  http: boolean,
  settings: ReliabilitySettings,
  fn: (l: ProxyLab) => Promise<T>,
): Promise<Outcome<T & { shutdown: Shutdown }>> {
  let l: ProxyLab;
  try {
    l = await proxyLab(prefix, opts, http);
  } catch (e) {
    opts.progress(`${what}: setup failed: ${errText(e)}`);
    return { ok: false, error: `setup failed: ${errText(e)}` };
  }
  settings.tunrouteArgs ??= l.tunrouteArgs;
  try {
    opts.progress(`lab ${l.lab.id}: ${what}`);
    const watch = new CpuWatch({ tunroute: l.tunroute.pid, proxy: l.proxy.pid }, l.lab.processes().map((p) => p.pid));
    watch.start();
    const value = await fn(l);
    const cpu = watch.stop();
    return { ok: true, value: { ...value, shutdown: await shutdown(l.tunroute) }, cpu };
  } catch (e) {
    const gone = l.tunroute.exited ? ` (tunroute exited: ${exitText(l.tunroute)})` : '';
    opts.progress(`${what}: failed: ${errText(e)}${gone}`);
    return { ok: false, error: errText(e) + gone };
  } finally {
    opts.progress(`removing the ${what} lab`);
    await l.lab.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// 1. malformed packets during a transfer

/** What malformed-burst.py prints (the fields used here). */
interface BurstSummary {
  mode: string;
  count: number;
  sent: Record<string, number>;
  refused_by_kernel: Record<string, number>;
  total_sent: number;
  total_refused_by_kernel: number;
  seconds: number;
}

/** A counter of tun0 as the kernel keeps it (inside `ns`), or 0 when unreadable. */
async function tunCounter(ns: Namespace, name: string): Promise<number> {
  const r = await ns.exec(['cat', `/sys/class/net/tun0/statistics/${name}`], { allowFail: true, timeoutMs: 5000 });
  const n = Number(r.stdout.trim());
  return r.code === 0 && Number.isFinite(n) ? n : 0;
}

/** Drop reasons a random packet lands on: it fails one of the IPv4 header's checks. */
const IP_HEADER_REASONS = ['too_short', 'bad_version', 'ipv6', 'bad_ihl', 'bad_total_length', 'bad_header_checksum'];

/**
 * What tunroute counted for each kind the script sent. A damaged kind is named after the drop
 * reason it must land on (packet mode: nothing repaired on the way); random bytes land on one
 * of the IPv4 header's reasons, on top of the kinds of the same name; a fragment is held by the
 * reassembler, or dropped by it (frag_*).
 */
function perKind(sent: Record<string, number>, drops: Record<string, number>, fragmentsHeld: number): MalformedKind[] {
  const out: MalformedKind[] = [];
  for (const [kind, n] of Object.entries(sent)) {
    if (kind === 'random_bytes') {
      const extra = IP_HEADER_REASONS.reduce((s, r) => s + (drops[r] ?? 0) - (sent[r] ?? 0), 0);
      out.push({ kind, sent: n, reasons: 'IPv4 header reasons beyond their own kinds', counted: extra });
    } else if (kind === 'fragment') {
      const frag = Object.entries(drops).reduce((s, [r, v]) => s + (r.startsWith('frag_') ? v : 0), 0);
      out.push({ kind, sent: n, reasons: 'held by the reassembler, or frag_*', counted: fragmentsHeld + frag });
    } else {
      out.push({ kind, sent: n, reasons: kind, counted: drops[kind] ?? 0 });
    }
  }
  return out;
}

async function malformed(l: ProxyLab, opts: ReliabilityOptions): Promise<MalformedResult> {
  const { c, tunroute } = l;
  const before = await status(opts.cli, l.control);
  const txDropped0 = await tunCounter(c, 'tx_dropped');
  opts.progress(`writing ${opts.malformed.toLocaleString('en')} malformed packets into tun0 while ${TRANSFER_BYTES / 2 ** 20} MiB downloads run through tunroute ...`);
  const burst = c.spawn(
    ['python3', opts.burstScript, '--dst', ROUTED_IP, '--count', String(opts.malformed), '--seed', String(BURST_SEED), '--mode', 'packet', '--dev', 'tun0', '--pps', '0'],
    { name: 'malformed-burst' },
  );
  const t0 = performance.now();
  const want = labBytesSha256(TRANSFER_BYTES);
  const transfers = { count: 0, ok: 0, bytes: 0, seconds: 0, firstError: undefined as string | undefined };
  // Downloads one after another for as long as the burst runs (at least one).
  while ((transfers.count === 0 || !burst.exited) && transfers.count < TRANSFERS_MAX && !tunroute.exited) {
    if ((performance.now() - t0) / 1000 > BURST_LIMIT_S) break;
    transfers.count++;
    const ts = performance.now();
    const r = await c
      .sh(`set -o pipefail; curl -sS --max-time ${TRANSFER_LIMIT_S} http://${ROUTED_IP}:${HTTP_PORT}/bytes/${TRANSFER_BYTES} | sha256sum`, {
        allowFail: true,
        timeoutMs: (TRANSFER_LIMIT_S + 10) * 1000,
      })
      .catch((e: unknown) => ({ code: -1, stdout: '', stderr: errText(e) }));
    transfers.seconds += (performance.now() - ts) / 1000;
    const got = r.stdout.trim().split(/\s+/)[0] ?? '';
    if (r.code === 0 && got === want) {
      transfers.ok++;
      transfers.bytes += TRANSFER_BYTES;
    } else {
      transfers.firstError ??= r.code !== 0 ? `curl: ${r.stderr.trim().slice(0, 200) || `exit ${r.code}`}` : `sha256 ${got.slice(0, 16)}… instead of ${want.slice(0, 16)}…`;
    }
  }
  const left = Math.max(1000, BURST_LIMIT_S * 1000 - (performance.now() - t0));
  const st = await burst.waitForExit(left).catch(async () => {
    await burst.stop('SIGTERM', 2000);
    throw new Error(`the malformed burst did not finish within ${BURST_LIMIT_S} s`);
  });
  if (st.code !== 0) throw new Error(`malformed-burst.py exited with ${st.signal ?? `code ${st.code}`}: ${burst.outputTail(400)}`);
  const summary = JSON.parse(burst.output().stdout) as BurstSummary;
  await sleep(1000);
  const alive = !tunroute.exited;
  const txDropped = (await tunCounter(c, 'tx_dropped')) - txDropped0;
  const after = alive ? await status(opts.cli, l.control) : undefined;
  const drops = after ? increase(before.packets.drops, after.packets.drops) : {};
  const fragmentsHeld = after ? after.packets.fragments - before.packets.fragments : 0;
  const counted = sum(drops) + fragmentsHeld;
  const delivered = summary.total_sent - txDropped;
  const byKind = perKind(summary.sent, drops, fragmentsHeld);
  const result: MalformedResult = {
    packets: summary.count,
    seed: BURST_SEED,
    sent: summary.total_sent,
    sentByKind: summary.sent,
    refusedByKernel: summary.total_refused_by_kernel,
    kernelDropped: txDropped,
    burstSeconds: summary.seconds,
    ratePps: summary.seconds > 0 ? summary.total_sent / summary.seconds : 0,
    tunrouteRunning: alive,
    tunrouteExit: alive ? null : exitText(tunroute),
    dropsByReason: drops,
    fragmentsHeld,
    byKind,
    counted,
    uncounted: delivered - counted,
    transfers: transfers.count,
    transfersIntact: transfers.ok,
    transferBytes: transfers.bytes,
    transferSeconds: transfers.seconds,
    transferMbps: transfers.seconds > 0 ? (transfers.bytes * 8) / transfers.seconds / 1e6 : 0,
  };
  if (transfers.firstError !== undefined) result.transferError = transfers.firstError;
  return result;
}

// ---------------------------------------------------------------------------------------------
// 2. the SOCKS5 server killed and restarted

async function proxyRestart(l: ProxyLab, opts: ReliabilityOptions): Promise<ProxyRestartResult> {
  const { c, s } = l;
  const watcher = c.spawn([process.execPath, opts.faultcli, 'watch', ROUTED_IP, String(ECHO_PORT), String(FLOWS_WATCHED), '600'], { name: 'flow-watch' });
  const opened = JSON.parse(await watcher.waitForLine(/^\{"mode":"watch-open"/, 60_000)) as WatchOpenResult;
  if (opened.open === 0) throw new Error(`no flow opened through tunroute: ${opened.firstError ?? 'unknown error'}`);
  await sleep(1000);
  opts.progress(`${opened.open} idle flows open; killing dante (SIGKILL) ...`);
  const killAt = Date.now();
  l.proxy.signal('SIGKILL');
  await l.proxy.waitForExit(10_000);
  const probe = c.spawn([process.execPath, opts.faultcli, 'probe', ROUTED_IP, String(ECHO_PORT), SERVER_IP, String(PROXY_PORT), String(PROBE_LIMIT_S)], { name: 'flow-probe' });
  let watchLine: string;
  try {
    watchLine = await watcher.waitForLine(/^\{"mode":"watch"/, CLOSE_LIMIT_S * 1000);
  } catch {
    watcher.signal('SIGTERM');
    watchLine = await watcher.waitForLine(/^\{"mode":"watch"/, 10_000);
  }
  const watched = JSON.parse(watchLine) as WatchResult;
  const downFor = Date.now() - killAt;
  if (downFor < DOWN_MIN_S * 1000) await sleep(DOWN_MIN_S * 1000 - downFor);
  opts.progress(`flows: ${watched.reset} reset, ${watched.end} ended, ${watched.error} other errors, ${watched.stillOpen} still open; restarting dante ...`);
  const restartAt = Date.now();
  l.proxy = await startDante(s, { listen: SERVER_IP, port: PROXY_PORT });
  const probed = JSON.parse(await probe.waitForLine(/^\{"mode":"probe"/, (PROBE_LIMIT_S + 10) * 1000)) as ProbeResult;
  const delays = watched.closedAtMs.map((t) => t - killAt);
  const result: ProxyRestartResult = {
    flows: FLOWS_WATCHED,
    open: opened.open,
    reset: watched.reset,
    ended: watched.end,
    otherErrors: watched.error,
    stillOpen: watched.stillOpen,
    closeLimitS: CLOSE_LIMIT_S,
    closeMedianMs: median(delays),
    closeMaxMs: delays.length > 0 ? Math.max(...delays) : 0,
    downS: (restartAt - killAt) / 1000,
    proxyUpMs: probed.proxyUpAtMs === null ? null : probed.proxyUpAtMs - restartAt,
    proxyServesMs: probed.proxyServesAtMs === null ? null : probed.proxyServesAtMs - restartAt,
    // Both clients try every 20 ms: tunroute may even be first (then its delay is 0).
    recoveryMs: probed.flowOkAtMs === null || probed.proxyServesAtMs === null ? null : Math.max(0, probed.flowOkAtMs - probed.proxyServesAtMs),
    restartToFlowMs: probed.flowOkAtMs === null ? null : probed.flowOkAtMs - restartAt,
    probeAttempts: probed.attempts,
    probeFailures: probed.failures,
    tunrouteRunning: !l.tunroute.exited,
  };
  if (watched.firstError !== undefined) result.firstError = watched.firstError;
  if (probed.flowOkAtMs === null && probed.lastError !== undefined) result.probeError = probed.lastError;
  return result;
}

// ---------------------------------------------------------------------------------------------
// 3. many flows opened and closed, rounds of

async function churn(l: ProxyLab, opts: ReliabilityOptions): Promise<ChurnResult> {
  const { c, tunroute } = l;
  const pid = tunroute.pid;
  const sample = (round: number, extra: Partial<ChurnSample> = {}): ChurnSample => {
    const fds = fdCount(pid);
    const rss = rssKiB(pid);
    if (fds === undefined || rss === undefined) throw new Error(`tunroute exited (round ${round})`);
    return { round, fds, rssKiB: rss, open: 0, failed: 0, openS: 0, drainS: 0, ...extra };
  };
  // Start-up garbage settles before "the start".
  await sleep(3000);
  const start = sample(0);
  const samples: ChurnSample[] = [];
  const t0 = performance.now();
  let stoppedBy: ChurnResult['stoppedBy'] = 'rounds';
  for (let round = 1; round <= opts.churnRounds; round++) {
    if ((performance.now() - t0) / 1000 > CHURN_LIMIT_S) {
      stoppedBy = 'time';
      break;
    }
    opts.progress(`churn round ${round}/${opts.churnRounds}: opening ${opts.churnFlows.toLocaleString('en')} flows ...`);
    const client = c.spawn(
      [process.execPath, opts.netcli, 'hold', ROUTED_IP, String(ECHO_PORT), String(opts.churnFlows), String(CHURN_OPEN_LIMIT_S), String(CHURN_CONCURRENCY)],
      { name: `churn-${round}` },
    );
    let held: HoldResult;
    try {
      held = JSON.parse(await client.waitForLine(/^\{"mode":"hold"/, (CHURN_OPEN_LIMIT_S + 30) * 1000)) as HoldResult;
    } finally {
      await client.stop('SIGTERM', 5000);
    }
    // Closed by the kernel at the client's exit: wait until tunroute has let every flow go.
    const d0 = performance.now();
    for (;;) {
      const st = await status(opts.cli, l.control);
      if (st.tcp.flowsOpen === 0) break;
      if ((performance.now() - d0) / 1000 > CHURN_DRAIN_LIMIT_S) throw new Error(`round ${round}: ${st.tcp.flowsOpen} flows still open ${CHURN_DRAIN_LIMIT_S} s after the client closed them`);
      await sleep(1000);
    }
    const drainS = (performance.now() - d0) / 1000;
    await sleep(CHURN_SETTLE_S * 1000);
    const s = sample(round, { open: held.open, failed: held.failed, openS: held.openS, drainS });
    if (held.firstError !== undefined) s.firstError = held.firstError;
    samples.push(s);
    opts.progress(`churn round ${round}: ${held.open} open (${held.failed} failed) in ${held.openS.toFixed(1)} s; drained in ${drainS.toFixed(1)} s; fds ${s.fds}, RSS ${Math.round(s.rssKiB / 1024)} MiB`);
  }
  return { flows: opts.churnFlows, rounds: opts.churnRounds, start, samples, stoppedBy, tunrouteRunning: !tunroute.exited };
}

// ---------------------------------------------------------------------------------------------
// 4. forged and replayed WireGuard datagrams

/** Udp counters of a namespace (/proc/net/snmp): datagrams the kernel dropped. */
async function udpErrors(ns: Namespace): Promise<number> {
  const r = await ns.exec(['cat', '/proc/net/snmp'], { allowFail: true, timeoutMs: 5000 });
  const lines = r.stdout.split('\n').filter((x) => x.startsWith('Udp:'));
  const head = lines[0]?.split(/\s+/) ?? [];
  const vals = lines[1]?.split(/\s+/) ?? [];
  const at = (k: string): number => Number(vals[head.indexOf(k)] ?? 0) || 0;
  // InErrors includes RcvbufErrors (a full socket buffer) and bad checksums.
  return at('InErrors');
}

/** The tunnels' drop counters (a tunnel's own include the sum over its peers'). */
function tunnelDrops(st: StatusSnapshot): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of st.tunnels ?? []) {
    for (const [k, v] of Object.entries(t.drops)) out[k] = (out[k] ?? 0) + v;
  }
  return out;
}

function tunnelRx(st: StatusSnapshot): number {
  return (st.tunnels ?? []).reduce((s, t) => s + t.rxPackets, 0);
}

async function counterReading(counter: LabProcess, seq: number): Promise<number> {
  counter.signal('SIGUSR2');
  const line = await counter.waitForLine(new RegExp(`^\\{"mode":"udp-count","seq":${seq},`), 10_000);
  return (JSON.parse(line) as { received: number }).received;
}

async function wgForgery(opts: ReliabilityOptions, settings: ReliabilitySettings): Promise<{ value: WgForgeryResult; cpu: CpuTotals }> {
  requireBinary('wireguard-go', 'wireguard-go');
  requireBinary('wg', 'wireguard-tools');
  const lab = await Lab.create({ prefix: 'tr-wgfault-' });
  try {
    opts.progress(`lab ${lab.id}: forged and replayed WireGuard datagrams against tunroute up --tunnel`);
    const id = lab.id.slice(-4);
    const wc = await lab.addNamespace('wc');
    const ws = await lab.addNamespace('ws');
    await lab.link(wc, ws, { cidrA: `${WG.clientVeth}/24`, cidrB: `${WG.serverVeth}/24` });
    const [serverKey, clientKey] = [generatePrivateKey(), generatePrivateKey()];
    await startWireguardGo(ws, `wgf${id}`, {
      privateKey: serverKey,
      listenPort: WG_PORT,
      address: `${WG.serverTun}/24`,
      mtu: WG_MTU,
      peers: [{ publicKey: publicKeyOf(clientKey), allowedIPs: `${WG.clientTun}/32` }],
    });
    const n = opts.wgDatagrams;
    const relay = ws.spawn(
      [process.execPath, opts.faultcli, 'wg-relay', WG.serverVeth, String(RELAY_PORT), WG.serverVeth, String(WG_PORT), String(n), String(n), String(ATTACK_PPS), String(ATTACK_SEED)],
      { name: 'wg-relay' },
    );
    await relay.waitForLine(/^listening /, 10_000);
    const confFile = join(lab.tmpDir, 'wg.conf');
    writeFileSync(
      confFile,
      [
        '# written by the benchmark (tools/bench/reliability.ts); the peer is reached through a relay',
        '[Interface]',
        `PrivateKey = ${formatKey(clientKey)}`,
        `Address = ${WG.clientTun}/24`,
        `ListenPort = ${WG_PORT}`,
        `MTU = ${WG_MTU}`,
        '',
        '[Peer]',
        `PublicKey = ${formatKey(publicKeyOf(serverKey))}`,
        `Endpoint = ${WG.serverVeth}:${RELAY_PORT}`,
        `AllowedIPs = ${WG.serverTun}/24`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const control = join(lab.tmpDir, 'tunroute-wg.sock');
    const args = ['up', '--tunnel', confFile, '--control', control, ...opts.tunrouteArgs];
    settings.wgTunrouteArgs = args.map((a) => (a.startsWith(lab.tmpDir) ? a.replace(lab.tmpDir, '<lab tmp>') : a));
    const tunroute = wc.spawn([process.execPath, opts.cli, ...args], { name: 'tunroute-wg', logFile: join(lab.tmpDir, 'tunroute-wg.log') });
    await tunroute.waitForLine(/"msg":"tunroute is up"/, 20_000);
    const watch = new CpuWatch({ tunroute: tunroute.pid }, lab.processes().map((p) => p.pid));
    watch.start();
    const counter = wc.spawn([process.execPath, opts.faultcli, 'udp-count', '0.0.0.0', String(COUNTER_PORT)], { name: 'udp-counter' });
    await counter.waitForLine(/^listening /, 10_000);
    // The handshake, then genuine datagrams from the server's side through the tunnel.
    const ping = await wc.exec(['ping', '-c', '3', '-i', '0.2', '-W', '3', WG.serverTun], { allowFail: true, timeoutMs: 20_000 });
    if (ping.code !== 0) throw new Error(`no ping through the tunnel to ${WG.serverTun}: ${(ping.stdout + ping.stderr).trim().split('\n').slice(-2).join(' / ')}`);
    const send = (count: number): Promise<unknown> =>
      ws.exec([process.execPath, opts.faultcli, 'udp-send', WG.clientTun, String(COUNTER_PORT), String(count), String(GENUINE_PPS)], { timeoutMs: 60_000 });
    await send(GENUINE);
    await sleep(1000);
    const genuine = await counterReading(counter, 1);
    const before = await status(opts.cli, control);
    const udpErr0 = await udpErrors(wc);
    opts.progress(`${genuine} of ${GENUINE} genuine datagrams came through; sending ${n.toLocaleString('en')} forged and ${n.toLocaleString('en')} replayed datagrams ...`);
    relay.signal('SIGUSR1');
    const attack = JSON.parse(await relay.waitForLine(/^\{"mode":"wg-attack"/, Math.max(60_000, ((2 * n) / ATTACK_PPS) * 4000))) as WgAttackResult;
    if (attack.captured === 0) throw new Error('the relay captured no genuine transport message to replay');
    await sleep(1500);
    const afterAttack = await counterReading(counter, 2);
    const after = await status(opts.cli, control);
    const udpErr = (await udpErrors(wc)) - udpErr0;
    // The tunnel must still carry genuine traffic.
    await send(GENUINE_AFTER);
    await sleep(1000);
    const final = await counterReading(counter, 3);
    const drops = increase(tunnelDrops(before), tunnelDrops(after));
    const value: WgForgeryResult = {
      forged: attack.forgedSent,
      forgedByKind: attack.forged,
      replayed: attack.replayedSent,
      captured: attack.captured,
      sendErrors: attack.sendErrors,
      attackSeconds: attack.seconds,
      ratePps: attack.seconds > 0 ? (attack.forgedSent + attack.replayedSent) / attack.seconds : 0,
      dropsByReason: drops,
      counted: sum(drops),
      kernelUdpErrors: udpErr,
      innerPacketsAccepted: tunnelRx(after) - tunnelRx(before),
      payloadsDelivered: afterAttack - genuine,
      genuineBefore: genuine,
      genuineSent: GENUINE,
      genuineAfterSent: GENUINE_AFTER,
      genuineAfter: final - afterAttack,
      tunrouteRunning: !tunroute.exited,
    };
    const cpu = watch.stop();
    value.shutdown = await shutdown(tunroute);
    return { value, cpu };
  } finally {
    opts.progress('removing the wg forgery lab');
    await lab.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

/** The reliability test: into report.reliability (and settings.reliability). */
export async function benchReliability(report: BenchReport, opts: ReliabilityOptions): Promise<void> {
  const settings: ReliabilitySettings = {
    malformed: opts.malformed,
    burstSeed: BURST_SEED,
    transferBytes: TRANSFER_BYTES,
    flowsWatched: FLOWS_WATCHED,
    closeLimitS: CLOSE_LIMIT_S,
    churnFlows: opts.churnFlows,
    churnRounds: opts.churnRounds,
    churnSettleS: CHURN_SETTLE_S,
    wgDatagrams: opts.wgDatagrams,
    wgAttackPps: ATTACK_PPS,
  };
  report.settings.reliability = settings;
  const r: NonNullable<BenchReport['reliability']> = {};
  report.reliability = r;
  if (opts.malformed > 0) {
    r.malformed = await inProxyLab('malformed packets during a transfer', 'tr-rmal-', opts, true, settings, (l) => malformed(l, opts));
  }
  r.proxyRestart = await inProxyLab('SOCKS5 server killed and restarted', 'tr-rprx-', opts, false, settings, (l) => proxyRestart(l, opts));
  if (opts.churnRounds > 0) {
    const limit = openFilesLimit();
    if (limit < opts.churnFlows + 1000) {
      r.churn = { ok: false, error: `the open-file limit is ${limit}: ${opts.churnFlows} flows need more than ${opts.churnFlows + 1000} (raise ulimit -n)` };
    } else {
      r.churn = await inProxyLab(`${opts.churnFlows} flows opened and closed ${opts.churnRounds} times`, 'tr-rchn-', opts, false, settings, (l) => churn(l, opts));
    }
  }
  if (opts.wgDatagrams > 0) {
    try {
      const { value, cpu } = await wgForgery(opts, settings);
      r.wgForgery = { ok: true, value, cpu };
    } catch (e) {
      opts.progress(`forged and replayed WireGuard datagrams: failed: ${errText(e)}`);
      r.wgForgery = { ok: false, error: errText(e) };
    }
  }
}
