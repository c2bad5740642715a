/**
 * `npm run bench`: tunroute against the kernel's direct path, measured in the same run, in a
 * lab of two network namespaces (nothing on the host is touched):
 *
 *   c (client) ── veth 10.99.0.1/24 ── 10.99.0.2/24 ── s (server)
 *   tun0 + tunroute (--route 10.66.1.0/24)            dante or microsocks on 10.99.0.2:1080,
 *                                                      10.66.1.7/32 on lo, iperf3, sockperf,
 *                                                      an echo server; dnsmasq on 10.66.1.53
 *                                                      (on lo) and 10.99.0.2
 *
 * "direct" runs a tool in c against 10.99.0.2 (veth, kernel only); "tunroute" runs the same
 * tool against 10.66.1.7 (tun0 → tunroute → SOCKS5 proxy → server). Measured: iperf3 upload and
 * download, request/response round trips over one connection, sequential connections per
 * second, UDP at a fixed offered rate (received throughput and loss; through SOCKS5 UDP
 * ASSOCIATE), sequential DNS queries per second (tunroute: dns hijack), and CPU (tunroute's,
 * the proxy's, the host's) over every window. The wg test (wg.ts) runs in a lab of its own:
 * iperf3 through a WireGuard tunnel, tunroute ↔ wireguard-go against wireguard-go ↔
 * wireguard-go. Every load is bounded in time and count; each lab is removed at the end, also
 * after an error or a signal.
 *
 * The cost of a flow (issue #11): the ceiling test runs the connection loop with a SOCKS5 client
 * straight to the same proxy (no tunroute; greeting and CONNECT pipelined) and reports tunroute's
 * connections/s against it. Two tests have labs of their own (perflow.ts): ttfb, the time to the
 * first byte of a small HTTP request with a relay holding every chunk 10 ms each way in front of
 * the server (direct) and of the proxy (tunroute); flows, tunroute's RSS with 10,000 idle flows,
 * 10 s after they closed, and its watchdog's.
 */
import { measureLargeRouteFile, measureRouteApply, type LargeRouteMeasurement, type RouteApplyMeasurement } from './measure-routes.js';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, stripVTControlCharacters } from 'node:util';
import {
  Lab,
  LabError,
  labAvailable,
  requireBinary,
  startDante,
  startDnsmasq,
  startIperf3,
  startMicrosocks,
  waitForPort,
  type LabProcess,
  type Namespace,
} from '../lab/index.js';
import { CLI_PATH, REPO_ROOT } from '../repo-root.js';
import { clockTicksPerSecond, CpuWatch } from './cpu.js';
import { benchFlows, benchTtfb } from './perflow.js';
import { benchNames } from './names.js';
import { benchReliability, RELIABILITY_DEFAULTS } from './reliability.js';
import { benchWg } from './wg.js';
import {
  anyFailed,
  fmt,
  medianRun,
  OWN_LAB_TESTS,
  renderReadme,
  renderText,
  writeReadme,
  type BenchEnv,
  type BenchReport,
  type Outcome,
  type Pair,
} from './report.js';
import {
  readMtu,
  runCps,
  runDns,
  runIperf3,
  runIperf3Udp,
  runNodeRr,
  runSockperf,
  runSocksCps,
  tunrouteStatus,
  type CpsResult,
  type DnsResult,
  type IperfResult,
  type RrResult,
  type UdpResult,
} from './tools.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = REPO_ROOT;
const CLI = CLI_PATH;
const NETCLI = join(HERE, 'netcli.js');
const FAULTCLI = join(HERE, 'faultcli.js');

const CLIENT_CIDR = '10.99.0.1/24';
const SERVER_CIDR = '10.99.0.2/24';
const SERVER_IP = '10.99.0.2';
/** Routed into tun0 on the client, local (on lo) on the server. */
const ROUTED_CIDR = '10.66.1.0/24';
const ROUTED_IP = '10.66.1.7';
const PROXY_PORT = 1080;
const SOCKPERF_PORT = 11111;
const ECHO_PORT = 7000;
/** Bounds of the round-trip and connection loops, besides --seconds. */
const RR_MAX = 2_000_000;
const CPS_MAX = 30_000;
const CPS_MSG_BYTES = 32;
/** UDP test: iperf3 -u servers (one bound to each address, so replies leave from it). */
const UDP_IPERF_PORT = 5202;
/** iperf3 -w, and the UDP receive buffer the benchmark's dante asks for (startDante's udpRcvbuf). */
const UDP_BUFFER = 4 * 1024 * 1024;
/** Largest UDP payload per datagram (smaller when an MTU asks for it). */
const UDP_DATAGRAM_MAX = 1400;
/** DNS test: dnsmasq here (on s's lo, routed into tun0) and on SERVER_IP (direct). */
const DNS_IP = '10.66.1.53';
const DNS_DOMAIN = 'bench.lab';
const DNS_MAX = 500_000;
/** Host load (busy cores) from other work under which the machine counts as quiet. */
const QUIET_CORES = 0.3;
const TESTS = ['iperf', 'rr', 'cps', 'ceiling', 'udp', 'dns', 'ttfb', 'flows', 'names', 'wg', 'routes', 'reliability'] as const;
type Test = (typeof TESTS)[number];

interface Options {
  seconds: number;
  /** Offered rate of the UDP test, Mbit/s. */
  udpRate: number;
  mtu: number | null;
  tests: Test[];
  json: boolean;
  proxy: 'dante' | 'microsocks';
  writeReadme: boolean;
  rrTool: 'auto' | 'sockperf' | 'node';
  waitIdle: number;
  repeat: number;
  /** Extra arguments for `tunroute up`. */
  tunrouteArgs: string[];
  /** Node's own flags for the main lab's tunroute (e.g. --cpu-prof), before its script. */
  nodeArgs: string[];
  /** The reliability test's counts (issue #13's figures by default). */
  malformed: number;
  churnFlows: number;
  churnRounds: number;
  wgDatagrams: number;
  /** Print (and with --write-readme, write) a report saved with --json instead of measuring. */
  render: string | null;
  /** How this run was asked for, for the README. */
  command: string;
}

const USAGE = `usage: node dist-tools/tools/bench/main.js [options]     (npm run bench -- [options]; needs root)

  --seconds N        length of each measurement window (default 5)
  --mtu N            passed to tunroute up --mtu
  --repeat N         run each pair N times, alternating, and show the median run (default 1)
  --only T[,T]       run only these tests (repeatable): iperf, rr, cps, ceiling, udp, dns, ttfb,
                     flows, names, wg, routes;
                     ceiling: connections/s of a SOCKS5 client straight to the proxy, no tunroute
                     (greeting + CONNECT pipelined); with cps, tunroute's ratio to it (dante only:
                     microsocks hangs on a pipelined greeting);
                     ttfb: time to first byte of a small HTTP request, a relay holding every chunk
                     10 ms each way in front of the server and of the proxy alike (own lab);
                     flows: tunroute's RSS at 10,000 idle flows, 10 s after they closed, and its
                     watchdog's; the time to open them (own lab; needs ulimit -n > 11,000);
                     names: fake-IP DNS queries/s (answered by tunroute) against dnsmasq over the
                     veth, and connect by name → first byte through the proxy (own lab);
                     wg: iperf3 through a WireGuard tunnel, tunroute ↔ wireguard-go against
                     wireguard-go ↔ wireguard-go, in a lab of its own (needs wireguard-go, wg);
                     reliability: faults, each in a lab of its own: malformed packets into tun0
                     during downloads, the SOCKS5 server killed and restarted under open flows,
                     flows opened and closed in rounds (fds, RSS), forged and replayed WireGuard
                     datagrams (needs python3, curl, wireguard-go, wg; ulimit -n > 11,000);
                     not run unless asked for with --only
  --malformed N      reliability: malformed packets written into tun0 (default 1000000; 0: skip)
  --churn-flows N    reliability: flows per round (default 10000)
  --churn-rounds N   reliability: rounds of opening and closing them (default 10; 0: skip)
  --wg-datagrams N   reliability: forged, and replayed, WireGuard datagrams (default 10000 each; 0: skip)
  --udp-rate N       offered rate of the udp test, Mbit/s (default 200)
  --proxy P          the SOCKS5 server in the lab: dante (default) or microsocks
  --rr-tool T        round trips with sockperf (default when installed) or node
  --wait-idle N      first wait up to N s (default 60; 0: no wait) for other work on the host
                     to drop under ${QUIET_CORES * 100} % of a core
  --tunroute-arg A   pass A to tunroute up as well, e.g. --tunroute-arg=--no-offload (repeatable)
  --node-arg A       start the main lab's (and the names lab's) tunroute with node flag A, e.g. to profile it:
                     --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof (repeatable)
  --json             print the report as JSON instead of tables
  --write-readme     write the tables into README.md between the bench markers
  --render FILE      measure nothing: show a report saved with --json (and with --write-readme,
                     put it into README.md)
  -h, --help         this text
`;

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string' },
      'udp-rate': { type: 'string' },
      mtu: { type: 'string' },
      only: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      proxy: { type: 'string' },
      'rr-tool': { type: 'string' },
      'write-readme': { type: 'boolean' },
      'wait-idle': { type: 'string' },
      repeat: { type: 'string' },
      'tunroute-arg': { type: 'string', multiple: true },
      'node-arg': { type: 'string', multiple: true },
      render: { type: 'string' },
      malformed: { type: 'string' },
      'churn-flows': { type: 'string' },
      'churn-rounds': { type: 'string' },
      'wg-datagrams': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const seconds = values.seconds === undefined ? 5 : Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 120) throw new UsageError(`--seconds must be a whole number from 1 to 120, got ${values.seconds}`);
  let mtu: number | null = null;
  if (values.mtu !== undefined) {
    mtu = Number(values.mtu);
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw new UsageError(`--mtu must be a whole number from 576 to 65535, got ${values.mtu}`);
  }
  const tests: Test[] = [];
  for (const item of (values.only ?? []).flatMap((o) => o.split(','))) {
    const t = item.trim();
    if (!(TESTS as readonly string[]).includes(t)) throw new UsageError(`--only takes ${TESTS.join(', ')}; got "${t}"`);
    if (!tests.includes(t as Test)) tests.push(t as Test);
  }
  const proxy = values.proxy ?? 'dante';
  if (proxy !== 'dante' && proxy !== 'microsocks') throw new UsageError(`--proxy must be dante or microsocks, got "${proxy}"`);
  if (proxy === 'microsocks' && tests.includes('udp')) throw new UsageError('--only udp needs --proxy dante: microsocks refuses UDP ASSOCIATE');
  if (proxy === 'microsocks' && tests.includes('ceiling')) throw new UsageError('--only ceiling needs --proxy dante: microsocks hangs on a pipelined greeting');
  const udpRate = values['udp-rate'] === undefined ? 200 : Number(values['udp-rate']);
  if (!Number.isInteger(udpRate) || udpRate < 1 || udpRate > 10_000) throw new UsageError(`--udp-rate must be a whole number of Mbit/s from 1 to 10000, got ${values['udp-rate']}`);
  const rrTool = values['rr-tool'] ?? 'auto';
  if (rrTool !== 'auto' && rrTool !== 'sockperf' && rrTool !== 'node') throw new UsageError(`--rr-tool must be sockperf or node, got "${rrTool}"`);
  const waitIdle = values['wait-idle'] === undefined ? 60 : Number(values['wait-idle']);
  if (!Number.isInteger(waitIdle) || waitIdle < 0 || waitIdle > 3600) throw new UsageError(`--wait-idle must be a whole number of seconds from 0 to 3600, got ${values['wait-idle']}`);
  const repeat = values.repeat === undefined ? 1 : Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20) throw new UsageError(`--repeat must be a whole number from 1 to 20, got ${values.repeat}`);
  const extra = values['tunroute-arg'] ?? [];
  const count = (v: string | undefined, flag: string, def: number, max: number): number => {
    const n = v === undefined ? def : Number(v);
    if (!Number.isInteger(n) || n < 0 || n > max) throw new UsageError(`--${flag} must be a whole number from 0 to ${max}, got ${v}`);
    return n;
  };
  const malformed = count(values.malformed, 'malformed', RELIABILITY_DEFAULTS.malformed, 1_000_000);
  const churnFlows = count(values['churn-flows'], 'churn-flows', RELIABILITY_DEFAULTS.churnFlows, 18_000);
  const churnRounds = count(values['churn-rounds'], 'churn-rounds', RELIABILITY_DEFAULTS.churnRounds, 100);
  const wgDatagrams = count(values['wg-datagrams'], 'wg-datagrams', RELIABILITY_DEFAULTS.wgDatagrams, 1_000_000);
  if (churnFlows < 1 && churnRounds > 0) throw new UsageError('--churn-flows must be at least 1 (or --churn-rounds 0 to skip the churn)');
  // Without --only, every test runs but udp and ceiling with microsocks (it refuses UDP
  // ASSOCIATE, and hangs on the ceiling client's pipelined greeting), and reliability (its
  // faults take many minutes; ask for it with --only reliability).
  const chosen =
    tests.length > 0 ? TESTS.filter((t) => tests.includes(t)) : TESTS.filter((t) => t !== 'reliability' && ((t !== 'udp' && t !== 'ceiling') || proxy !== 'microsocks'));
  for (const a of extra) {
    if (/^--(route|proxy|control|tun|tunnel)\b/.test(a)) throw new UsageError(`--tunroute-arg ${a}: the benchmark sets that itself`);
    if (chosen.includes('dns') && /^(-c|--config|--dns)\b/.test(a)) throw new UsageError(`--tunroute-arg ${a}: the dns test gives tunroute its own config file (dns hijack)`);
  }
  const flags = argv.filter((a) => a !== '--write-readme' && a !== '--json');
  return {
    command: ['npm run bench', ...(flags.length ? ['--', ...flags] : [])].join(' '),
    render: values.render ?? null,
    tunrouteArgs: extra,
    nodeArgs: values['node-arg'] ?? [],
    malformed,
    churnFlows,
    churnRounds,
    wgDatagrams,
    repeat,
    waitIdle,
    seconds,
    udpRate,
    mtu,
    tests: chosen,
    json: values.json ?? false,
    proxy,
    writeReadme: values['write-readme'] ?? false,
    rrTool,
  };
}

function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split('\n')[0]?.slice(0, 400) ?? s;
}

function firstLine(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error) return undefined;
  const text = stripVTControlCharacters(`${r.stdout ?? ''}\n${r.stderr ?? ''}`); // some tools colour their banner
  return text.split('\n').find((l) => l.trim())?.trim();
}

function hasBinary(name: string): boolean {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0;
}

function gitCommit(): string {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 5000 });
  if (head.status !== 0) return 'unknown';
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', timeout: 10_000 });
  return `${head.stdout.trim()}${dirty.status === 0 && dirty.stdout.trim() ? '-dirty' : ''}`;
}

function environment(opts: Options): BenchEnv {
  const tools: Record<string, string> = {};
  const ver = (name: string, line: string | undefined, re: RegExp): void => {
    const m = line ? re.exec(line) : null;
    if (m?.[1]) tools[name] = m[1];
  };
  if (opts.tests.some((t) => t === 'iperf' || t === 'udp' || t === 'wg')) ver('iperf3', firstLine('iperf3', ['--version']), /iperf ([\d.]+)/);
  if (opts.tests.includes('wg') || opts.tests.includes('reliability')) ver('wireguard-go', firstLine('wireguard-go', ['--version']), /wireguard-go v?([\w.-]+)/);
  if (opts.tests.includes('dns') || opts.tests.includes('names')) ver('dnsmasq', firstLine('dnsmasq', ['--version']), /version ([\d.]+)/i);
  if (opts.tests.includes('rr') && opts.rrTool !== 'node') ver('sockperf', firstLine('sockperf', ['--version']), /version ([\w.-]+)/);
  // The proxy serves every test but wg (which has a lab of its own).
  const proxied = opts.tests.some((t) => !OWN_LAB_TESTS.includes(t));
  // ttfb and flows have labs of their own, always with dante.
  if ((proxied && opts.proxy === 'dante') || opts.tests.includes('ttfb') || opts.tests.includes('flows') || opts.tests.includes('names') || opts.tests.includes('reliability')) ver('dante', firstLine('danted', ['-v']), /Dante v(\d+(?:\.\d+)*)/);
  if (proxied && opts.proxy === 'microsocks') {
    const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'microsocks'], { encoding: 'utf8', timeout: 5000 });
    if (r.status === 0 && r.stdout.trim()) tools.microsocks = r.stdout.trim();
  }
  const cpus = os.cpus();
  return {
    kernel: os.release(),
    node: process.version,
    cpus: cpus.length,
    cpuModel: (cpus[0]?.model ?? 'unknown').replace(/\s+/g, ' ').trim(),
    memGiB: os.totalmem() / 2 ** 30,
    clkTck: clockTicksPerSecond(),
    commit: gitCommit(),
    tools,
  };
}

/** Whether this build of tunroute knows `up --control`. */
function supportsControl(): boolean {
  const r = spawnSync(process.execPath, [CLI, 'up', '--help'], { encoding: 'utf8', timeout: 15_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.includes('--control');
}

/** Busy cores of the host over one second (all processes: before the lab exists, others' work). */
async function hostLoad(ms = 1000): Promise<number> {
  const w = new CpuWatch({});
  w.start();
  await sleep(ms);
  const t = w.stop();
  return t.wallS > 0 ? t.hostBusyS / t.wallS : 0;
}

/** Wait (bounded) until other work on the host calms down; the figures are noisy otherwise. */
async function waitForQuiet(maxS: number): Promise<void> {
  if (maxS <= 0) return;
  const deadline = Date.now() + maxS * 1000;
  let warned = false;
  for (;;) {
    const load = await hostLoad();
    if (load < QUIET_CORES) return;
    if (Date.now() >= deadline) {
      progress(`the host stays busy (${fmt(load * 100, 2)} % of a core from other work): measuring anyway, figures will be noisy`);
      return;
    }
    if (!warned) progress(`the host is busy (${fmt(load * 100, 2)} % of a core from other work): waiting up to ${maxS} s for it to calm down`);
    warned = true;
  }
}

interface Ctx {
  opts: Options;
  lab: Lab;
  c: Namespace;
  s: Namespace;
  tunroute: LabProcess;
  proxy: LabProcess;
  iperf?: LabProcess;
  /** UDP test: iperf3 -u servers by the address they are bound to. */
  udpIperf: Map<string, LabProcess>;
  /** UDP payload per datagram, bytes. */
  udpDatagram: number;
  rrPort: number;
  rrTool: 'sockperf' | 'node';
}

/** One window: CPU watched around `fn`; a failure is recorded, not thrown. */
async function measure<T>(ctx: Ctx, label: string, path: 'direct' | 'tunroute', fn: () => Promise<T>): Promise<Outcome<T>> {
  if (path === 'tunroute' && ctx.tunroute.exited) return { ok: false, error: 'tunroute is not running' };
  progress(`${label}, ${path} ...`);
  const watch = new CpuWatch(
    { tunroute: ctx.tunroute.pid, proxy: ctx.proxy.pid },
    ctx.lab.processes().map((p) => p.pid),
  );
  watch.start();
  try {
    const value = await fn();
    const cpu = watch.stop();
    return { ok: true, value, cpu };
  } catch (e) {
    const cpu = watch.stop();
    const gone = path === 'tunroute' && ctx.tunroute.exited ? ' (tunroute exited)' : '';
    progress(`${label}, ${path}: failed: ${errText(e)}${gone}`);
    return { ok: false, error: errText(e) + gone, cpu };
  } finally {
    await sleep(500);
  }
}

/** Direct and tunroute, alternating, `repeat` times each. */
async function pair<T>(
  ctx: Ctx,
  label: string,
  key: (v: T) => number,
  fn: (host: string) => Promise<T>,
  after?: (o: Outcome<T>) => Promise<void>,
): Promise<Pair<T>> {
  const runs: { direct: Outcome<T>[]; tunroute: Outcome<T>[] } = { direct: [], tunroute: [] };
  const n = ctx.opts.repeat;
  for (let i = 0; i < n; i++) {
    const suffix = n > 1 ? ` [${i + 1}/${n}]` : '';
    const direct = await measure(ctx, label + suffix, 'direct', () => fn(SERVER_IP));
    if (after) await after(direct);
    runs.direct.push(direct);
    const tunroute = await measure(ctx, label + suffix, 'tunroute', () => fn(ROUTED_IP));
    if (after) await after(tunroute);
    runs.tunroute.push(tunroute);
  }
  const out: Pair<T> = { direct: medianRun(runs.direct, key), tunroute: medianRun(runs.tunroute, key) };
  if (n > 1) out.runs = runs;
  return out;
}

/** iperf3 -s serves one test at a time; after a failed test it may be stuck: start a new one. */
async function restartIperfIfFailed(ctx: Ctx, o: Outcome<IperfResult>): Promise<void> {
  if (o.ok) return;
  progress('restarting the iperf3 server after a failed test');
  await ctx.iperf?.stop('SIGTERM', 1000).catch(() => undefined);
  ctx.iperf = await startIperf3(ctx.s, 5201);
}

/** The UDP test's iperf3 servers, one bound to each address (the reply must leave from it). */
async function startUdpIperfs(ctx: Pick<Ctx, 's' | 'udpIperf'>): Promise<void> {
  for (const ip of [SERVER_IP, ROUTED_IP]) {
    await ctx.udpIperf.get(ip)?.stop('SIGTERM', 1000).catch(() => undefined);
    ctx.udpIperf.set(ip, await startIperf3(ctx.s, UDP_IPERF_PORT, { listen: ip }));
  }
}

async function runTests(ctx: Ctx, report: BenchReport): Promise<void> {
  const { opts, c } = ctx;
  const secs = opts.seconds;
  if (opts.tests.includes('iperf')) {
    const restart = (o: Outcome<IperfResult>): Promise<void> => restartIperfIfFailed(ctx, o);
    const gbps = (v: IperfResult): number => v.gbps;
    report.iperfUp = await pair(ctx, 'iperf3 upload', gbps, (h) => runIperf3(c, h, secs, false), restart);
    report.iperfDown = await pair(ctx, 'iperf3 download', gbps, (h) => runIperf3(c, h, secs, true), restart);
  }
  if (opts.tests.includes('rr')) {
    report.rr = await pair<RrResult>(ctx, `round trips (${ctx.rrTool})`, (v) => v.rate, (h) =>
      ctx.rrTool === 'sockperf' ? runSockperf(c, h, ctx.rrPort, secs) : runNodeRr(c, NETCLI, h, ctx.rrPort, secs, RR_MAX),
    );
  }
  if (opts.tests.includes('cps')) {
    report.cps = await pair<CpsResult>(ctx, 'sequential connections', (v) => v.rate, (h) => runCps(c, NETCLI, h, ECHO_PORT, secs, CPS_MAX, CPS_MSG_BYTES));
  }
  if (opts.tests.includes('ceiling')) {
    // The same loop, made by a SOCKS5 client in c straight to the proxy, which connects to the
    // same echo server tunroute's flows reach (ROUTED_IP, on s's lo).
    const runs: Outcome<CpsResult>[] = [];
    for (let i = 0; i < opts.repeat; i++) {
      const suffix = opts.repeat > 1 ? ` [${i + 1}/${opts.repeat}]` : '';
      runs.push(
        await measure(ctx, `sequential connections, SOCKS5 client straight to ${opts.proxy} (ceiling)${suffix}`, 'direct', () =>
          runSocksCps(c, NETCLI, ROUTED_IP, ECHO_PORT, SERVER_IP, PROXY_PORT, secs, CPS_MAX, CPS_MSG_BYTES),
        ),
      );
    }
    report.ceiling = medianRun(runs, (v) => v.rate);
  }
  if (opts.tests.includes('udp')) {
    const restart = async (o: Outcome<UdpResult>): Promise<void> => {
      if (o.ok) return;
      progress('restarting the UDP iperf3 servers after a failed test');
      await startUdpIperfs(ctx);
    };
    report.udp = await pair<UdpResult>(
      ctx,
      `UDP, iperf3 -u ${opts.udpRate} Mbit/s`,
      (v) => v.mbps,
      (h) => runIperf3Udp(c, h, UDP_IPERF_PORT, secs, opts.udpRate, ctx.udpDatagram, UDP_BUFFER),
      restart,
    );
  }
  if (opts.tests.includes('dns')) {
    // dnsmasq answers every name under DNS_DOMAIN with TTL 0 (--local-ttl=0); the client asks a
    // new name each query, so tunroute's cache (which stores no TTL-0 answer anyway) never answers.
    const what = `A q<N>.${DNS_DOMAIN}, a new name each query, TTL 0`;
    report.dns = await pair<DnsResult>(ctx, 'DNS queries', (v) => v.rate, (h) =>
      runDns(c, NETCLI, h === ROUTED_IP ? DNS_IP : h, 53, secs, DNS_MAX, DNS_DOMAIN, what),
    );
  }
}

/**
 * Every chosen test: those of the SOCKS5 lab (all but wg), then the wg test in a lab of its
 * own, once the first is gone (so that no idle daemon of one shares the other's windows).
 */
async function bench(opts: Options): Promise<BenchReport> {
  const env = environment(opts);
  const report = opts.tests.some((t) => !OWN_LAB_TESTS.includes(t)) ? await benchSocks(opts, env) : await ownLabsOnlyReport(opts, env);
  const tunrouteArgs = [...(opts.mtu === null ? [] : ['--mtu', String(opts.mtu)]), ...opts.tunrouteArgs];
  const perFlow = { cli: CLI, netcli: NETCLI, seconds: opts.seconds, repeat: opts.repeat, tunrouteArgs, nodeArgs: opts.nodeArgs, progress };
  if (opts.tests.includes('ttfb')) await benchTtfb(report, perFlow);
  if (opts.tests.includes('flows')) await benchFlows(report, perFlow);
  if (opts.tests.includes('names')) await benchNames(report, perFlow);
  if (opts.tests.includes('wg')) {
    await benchWg(report, { cli: CLI, seconds: opts.seconds, repeat: opts.repeat, tunrouteArgs, progress });
  }
  if (opts.tests.includes('reliability')) {
    await benchReliability(report, {
      cli: CLI,
      netcli: NETCLI,
      faultcli: FAULTCLI,
      burstScript: join(ROOT, 'scripts', 'malformed-burst.py'),
      malformed: opts.malformed,
      churnFlows: opts.churnFlows,
      churnRounds: opts.churnRounds,
      wgDatagrams: opts.wgDatagrams,
      tunrouteArgs,
      progress,
    });
  }
  return report;
}

/** The report's frame: the run's settings; the SOCKS5 lab fills in what it measured of itself. */
function reportFrame(
  opts: Options,
  env: BenchEnv,
  lab: { tunMtu: number | null; vethMtu: number | null; tunrouteArgs: string[] },
  backgroundCores: number,
): BenchReport {
  return {
    version: 1,
    date: new Date().toISOString(),
    env,
    settings: {
      command: opts.command,
      seconds: opts.seconds,
      repeat: opts.repeat,
      proxy: opts.proxy,
      tunMtu: lab.tunMtu,
      requestedMtu: opts.mtu,
      vethMtu: lab.vethMtu,
      tests: opts.tests,
      tunrouteArgs: lab.tunrouteArgs,
      cpsMaxConnections: CPS_MAX,
      cpsMsgBytes: CPS_MSG_BYTES,
    },
    backgroundCores,
  };
}

/** The report's frame when only tests with labs of their own run: no main lab, so no tun0 or veth of its own. */
async function ownLabsOnlyReport(opts: Options, env: BenchEnv): Promise<BenchReport> {
  await waitForQuiet(opts.waitIdle);
  return reportFrame(opts, env, { tunMtu: null, vethMtu: null, tunrouteArgs: [] }, await hostLoad(1500));
}

async function benchSocks(opts: Options, env: BenchEnv): Promise<BenchReport> {
  const rrTool: 'sockperf' | 'node' =
    opts.rrTool === 'node' ? 'node' : opts.rrTool === 'sockperf' || hasBinary('sockperf') ? 'sockperf' : 'node';
  if (opts.tests.includes('rr') && rrTool === 'sockperf') requireBinary('sockperf', 'sockperf');
  if (opts.tests.includes('iperf') || opts.tests.includes('udp')) requireBinary('iperf3', 'iperf3');
  if (opts.tests.includes('dns')) requireBinary('dnsmasq', 'dnsmasq-base');
  if (opts.tests.includes('rr') && rrTool === 'node' && opts.rrTool === 'auto') {
    progress('sockperf is not installed (apt-get install -y sockperf): round trips with the node client instead');
  }
  const useControl = supportsControl();
  await waitForQuiet(opts.waitIdle);
  const lab = await Lab.create({ prefix: 'tr-bench-' });
  try {
    progress(`lab ${lab.id}: namespaces, veth, ${opts.proxy}, servers`);
    const nsOpts = { tcpTwReuse: true, wideLocalPortRange: true };
    const c = await lab.addNamespace('c', nsOpts);
    const s = await lab.addNamespace('s', nsOpts);
    const link = await lab.link(c, s, { cidrA: CLIENT_CIDR, cidrB: SERVER_CIDR });
    await s.exec(['ip', 'addr', 'add', `${ROUTED_IP}/32`, 'dev', 'lo'], { timeoutMs: 10_000 });
    // With the udp test, dante asks larger UDP socket buffers (udpRcvbuf); TCP is the same.
    const udpDante = opts.proxy === 'dante' && opts.tests.includes('udp');
    const proxy =
      opts.proxy === 'microsocks'
        ? await startMicrosocks(s, { listen: SERVER_IP, port: PROXY_PORT })
        : udpDante
          ? await startDante(s, { listen: SERVER_IP, port: PROXY_PORT, udpRcvbuf: UDP_BUFFER })
          : await startDante(s, { listen: SERVER_IP, port: PROXY_PORT });
    const udpIperf = new Map<string, LabProcess>();
    if (opts.tests.includes('udp')) await startUdpIperfs({ s, udpIperf });
    if (opts.tests.includes('dns')) {
      await s.exec(['ip', 'addr', 'add', `${DNS_IP}/32`, 'dev', 'lo'], { timeoutMs: 10_000 });
      await startDnsmasq(s, {
        listen: DNS_IP,
        records: { [DNS_DOMAIN]: ROUTED_IP },
        extraArgs: [`--listen-address=${SERVER_IP}`, '--local-ttl=0'],
      });
    }
    let iperf: LabProcess | undefined;
    if (opts.tests.includes('iperf')) iperf = await startIperf3(s, 5201);
    let rrPort = ECHO_PORT;
    if (opts.tests.includes('rr') && rrTool === 'sockperf') {
      rrPort = SOCKPERF_PORT;
      s.spawn(['sockperf', 'server', '--tcp', '-i', '0.0.0.0', '-p', String(SOCKPERF_PORT)], { name: 'sockperf-server' });
      await waitForPort(s, SERVER_IP, SOCKPERF_PORT, 10_000);
    }
    if (opts.tests.includes('cps') || opts.tests.includes('ceiling') || (opts.tests.includes('rr') && rrTool === 'node')) {
      const echo = s.spawn([process.execPath, NETCLI, 'serve', '0.0.0.0', String(ECHO_PORT)], { name: 'echo-server' });
      await echo.waitForLine(/^listening /, 10_000);
    }

    const tunrouteArgs = ['up', '--route', ROUTED_CIDR, '--proxy', `socks5://${SERVER_IP}:${PROXY_PORT}`];
    // The dns test: every query routed into tun0 is answered from dnsmasq through the proxy.
    // Hijacking touches only UDP to port 53, so the other tests see the same tunroute.
    let tunrouteConfig: Record<string, unknown> | undefined;
    if (opts.tests.includes('dns')) {
      tunrouteConfig = { dns: { mode: 'hijack', upstream: `${DNS_IP}:53` } };
      const file = join(lab.tmpDir, 'tunroute-bench.json');
      writeFileSync(file, JSON.stringify(tunrouteConfig, null, 2) + '\n');
      tunrouteArgs.push('-c', file);
    }
    if (opts.mtu !== null) tunrouteArgs.push('--mtu', String(opts.mtu));
    const controlPath = join(lab.tmpDir, 'tunroute.sock');
    if (useControl) tunrouteArgs.push('--control', controlPath);
    tunrouteArgs.push(...opts.tunrouteArgs);
    progress(`starting tunroute ${tunrouteArgs.join(' ')}`);
    const tunroute = c.spawn([process.execPath, ...opts.nodeArgs, CLI, ...tunrouteArgs], { name: 'tunroute', logFile: join(lab.tmpDir, 'tunroute.log') });
    await tunroute.waitForLine(/"msg":"tunroute is up"/, 20_000);

    const report = reportFrame(
      opts,
      env,
      {
        tunMtu: await readMtu(c, 'tun0'),
        vethMtu: await readMtu(c, link.a.ifname),
        tunrouteArgs: tunrouteArgs.map((a) => (a.startsWith(lab.tmpDir) ? a.replace(lab.tmpDir, '<lab tmp>') : a)),
      },
      0,
    );

    // Everybody else's load, for judging the host CPU figures.
    report.backgroundCores = await hostLoad(1500);
    if (report.backgroundCores >= QUIET_CORES) {
      progress(`other work keeps ${fmt(report.backgroundCores * 100, 2)} % of a core busy: the figures will be noisy`);
    }

    if (opts.tests.includes('udp')) report.settings.proxyUdpRcvbuf = udpDante ? UDP_BUFFER : null;
    if (tunrouteConfig) report.settings.tunrouteConfig = tunrouteConfig;
    // UDP payload that fits tun0 and, with the SOCKS5 UDP header (10 B), the veth unfragmented.
    const mtu = Math.min(report.settings.tunMtu ?? 1500, (report.settings.vethMtu ?? 1500) - 10);
    const udpDatagram = Math.max(64, Math.min(UDP_DATAGRAM_MAX, mtu - 28));
    const ctx: Ctx = { opts, lab, c, s, tunroute, proxy, udpIperf, udpDatagram, rrPort, rrTool };
    if (iperf) ctx.iperf = iperf;
    await runTests(ctx, report);
    if (useControl && !tunroute.exited) report.tunrouteStatus = await tunrouteStatus(CLI, controlPath);
    if (tunroute.exited) {
      const st = tunroute.exitStatus;
      report.tunrouteExit = `${st?.signal ?? `code ${st?.code ?? '?'}`}; last output: ${tunroute.outputTail(600)}`;
    }
    return report;
  } finally {
    progress('removing the lab');
    await lab.destroy();
  }
}

/** A report saved with --json. */
function loadReport(file: string): BenchReport {
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new LabError(`cannot read the report ${file}: ${errText(e)}`);
  }
  if (typeof j !== 'object' || j === null || !('version' in j) || j.version !== 1 || !('settings' in j) || !('env' in j)) {
    throw new LabError(`${file} is not a report saved by \`npm run bench -- --json\` (version 1)`);
  }
  return j as BenchReport;
}

async function main(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`bench: ${errText(e)}\n${USAGE}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  let report: BenchReport;
  if (opts.render !== null) {
    report = loadReport(opts.render);
  } else {
    const avail = labAvailable();
    if (!avail.ok) {
      process.stderr.write(`bench: ${avail.reason ?? 'the lab cannot run here'}\n`);
      return 2;
    }
    report = await bench(opts);
  }
  // Route management: a 10,000-CIDR file applied and removed the way `up` and `down` do it.
  // And a million-line file (random, with duplicates and overlaps) in a process of its own, for
  // its peak RSS: planning, applying and removing it is bounded in time and memory.
  let routes: RouteApplyMeasurement | undefined;
  let routes1m: LargeRouteMeasurement | undefined;
  if (opts.render === null && opts.tests.includes('routes')) {
    progress('route plan: applying and removing 10,000 CIDRs');
    routes = await measureRouteApply(10_000);
    progress('route plan: planning, applying and removing a 1,000,000-line CIDR file (minutes)');
    routes1m = await measureLargeRouteFile(1_000_000);
  }
  if (opts.json) process.stdout.write(JSON.stringify(routes ? { ...report, routes, routes1m } : report, null, 2) + '\n');
  else {
    process.stdout.write(renderText(report));
    if (routes) {
      process.stdout.write(
        `\nroutes: ${routes.cidrs} CIDRs → ${routes.routes} routes: plan ${routes.planMs.toFixed(0)} ms, ` +
          `apply ${routes.applyMs.toFixed(0)} ms, remove ${routes.removeMs.toFixed(0)} ms (target: < 2000 ms each)\n`,
      );
    }
    if (routes1m) {
      process.stdout.write(
        `routes: ${routes1m.cidrs} lines (random /24…/32, duplicates, overlaps) → ${routes1m.routes} routes: plan ${(routes1m.planMs / 1000).toFixed(1)} s, ` +
          `apply ${(routes1m.applyMs / 1000).toFixed(1)} s, remove ${(routes1m.removeMs / 1000).toFixed(1)} s, peak RSS ${routes1m.peakRssMiB} MiB ` +
          `(${routes1m.kernelRoutesAfterApply} in the kernel after apply, ${routes1m.kernelRoutesAfterRemove} after remove)\n`,
      );
    }
  }
  if (opts.writeReadme) {
    const readme = join(ROOT, 'README.md');
    writeReadme(readme, renderReadme(report));
    progress(`wrote the figures into ${readme}`);
  }
  return anyFailed(report) ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    // Lab errors explain themselves (what is missing, which command failed); others get a stack.
    const text = e instanceof LabError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
    process.stderr.write(`bench: ${text}\n`);
    process.exit(1);
  },
);
