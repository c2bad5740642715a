/**
 * The benchmark's per-flow tests that need a lab of their own (a tunroute set up differently
 * from the main lab's, or one whose memory no earlier test has touched):
 *
 *   ttfb: time to first byte of a small HTTP request with 10 ms held each way. This kernel has
 *   no netem, so a delay relay (tools/lab/delay-relay.ts) holds every chunk 10 ms in each
 *   direction, in front of the HTTP server (direct) and in front of the proxy (tunroute) alike:
 *
 *     c: tun0 + tunroute --route 10.66.2.0/24     s: http server on 0.0.0.0:8080 (10.66.2.7 on lo)
 *        --proxy socks5://10.98.0.2:1081             dante on 10.98.0.2:1080
 *     10.98.0.1 ─────────── veth ───────────────  10.98.0.2:8081 relay → 10.98.0.2:8080 (direct)
 *                                                  10.98.0.2:1081 relay → 10.98.0.2:1080 (dante)
 *
 *   direct: GET /health from 10.98.0.2:8081 (one exchange through the relay, ~2 × 10 ms);
 *   tunroute: GET /health from 10.66.2.7:8080 (tun0 → tunroute → relay → dante → server: the
 *   SOCKS5 handshake's exchanges pay the relay too, before the request's own).
 *
 *   flows: memory per idle flow. tunroute (fresh: this lab's own) carries FLOWS connections from
 *   a client in c to an echo server behind dante, each proven by a 1-byte echo and then left
 *   idle; tunroute's VmRSS (and RssAnon, which leaves out the node binary's file-backed pages)
 *   is read before, with all of them open, and FLOWS_SETTLE_S after they all closed; the
 *   watchdog's (the child process `up` spawns) idle RSS too.
 *
 * Both are bounded in time and count; each lab is removed at the end, also after an error.
 */
import { join } from 'node:path';
import { Lab, startDante, startDelayRelay, startHttpServer, type LabProcess, type Namespace } from '../lab/index.js';
import { CpuWatch } from './cpu.js';
import { childrenOf, openFilesLimit, rss, rssKiB } from './proc.js';
import { errText, oneUserConfig, sleep } from './util.js';
import { medianRun, type BenchReport, type FlowsResult, type Outcome, type Pair } from './report.js';
import { runTtfb, type TtfbResult } from './tools.js';

const CLIENT_IP = '10.98.0.1';
const SERVER_IP = '10.98.0.2';
const ROUTED_CIDR = '10.66.2.0/24';
const ROUTED_IP = '10.66.2.7';
const PROXY_PORT = 1080;
const RELAYED_PROXY_PORT = 1081;
const HTTP_PORT = 8080;
const RELAYED_HTTP_PORT = 8081;
const ECHO_PORT = 7000;
/** Held by the relay in each direction, ms. */
export const TTFB_DELAY_MS = 10;
/** Bound on the requests of one ttfb window, besides --seconds. */
const TTFB_MAX = 2000;
const TTFB_PATH = '/health';
/** Idle flows held open at once. */
export const FLOWS = 10_000;
/** Connections of the flows client being set up at a time. */
const FLOWS_CONCURRENCY = 64;
/** Give up opening the flows after this long (10,000 took ~14 s on a quiet 2-core lab, 95 s with the host saturated). */
const FLOWS_OPEN_LIMIT_S = 180;
/** RSS is read this long after the flows closed. */
export const FLOWS_SETTLE_S = 10;

export interface PerFlowOptions {
  cli: string;
  netcli: string;
  seconds: number;
  repeat: number;
  tunrouteArgs: readonly string[];
  /** Node's own flags for the lab's tunroute (e.g. --cpu-prof); only the names lab uses them so far. */
  nodeArgs?: readonly string[];
  progress: (msg: string) => void;
}

interface ProxyLab {
  lab: Lab;
  c: Namespace;
  s: Namespace;
  proxy: LabProcess;
}

/** Two namespaces joined by a veth, dante in s, the routed address on s's lo. */
async function proxyLab(prefix: string): Promise<ProxyLab> {
  const lab = await Lab.create({ prefix });
  try {
    const nsOpts = { tcpTwReuse: true, wideLocalPortRange: true };
    const c = await lab.addNamespace('c', nsOpts);
    const s = await lab.addNamespace('s', nsOpts);
    await lab.link(c, s, { cidrA: `${CLIENT_IP}/24`, cidrB: `${SERVER_IP}/24` });
    await s.exec(['ip', 'addr', 'add', `${ROUTED_IP}/32`, 'dev', 'lo'], { timeoutMs: 10_000 });
    const proxy = await startDante(s, { listen: SERVER_IP, port: PROXY_PORT });
    return { lab, c, s, proxy };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/** `tunroute up` in c, routing ROUTED_CIDR through the proxy at `proxyPort`. */
async function startTunroute(l: ProxyLab, opts: PerFlowOptions, proxyPort: number, name: string, configArgs: string[] = []): Promise<{ proc: LabProcess; args: string[] }> {
  const args = ['up', ...configArgs, '--route', ROUTED_CIDR, '--proxy', `socks5://${SERVER_IP}:${proxyPort}`, '--control', join(l.lab.tmpDir, `${name}.sock`), ...opts.tunrouteArgs];
  opts.progress(`starting tunroute ${args.join(' ')}`);
  const proc = l.c.spawn([process.execPath, opts.cli, ...args], { name, logFile: join(l.lab.tmpDir, `${name}.log`) });
  await proc.waitForLine(/"msg":"tunroute is up"/, 20_000);
  return { proc, args: args.map((a) => (a.startsWith(l.lab.tmpDir) ? a.replace(l.lab.tmpDir, '<lab tmp>') : a)) };
}

function failedPair<T>(error: string, repeat: number): Pair<T> {
  const o: Outcome<T> = { ok: false, error };
  const p: Pair<T> = { direct: o, tunroute: o };
  if (repeat > 1) p.runs = { direct: Array<Outcome<T>>(repeat).fill(o), tunroute: Array<Outcome<T>>(repeat).fill(o) };
  return p;
}

/** The ttfb test: into report.ttfb (and settings.ttfb). */
export async function benchTtfb(report: BenchReport, opts: PerFlowOptions): Promise<void> {
  const { progress } = opts;
  let l: ProxyLab;
  try {
    l = await proxyLab('tr-ttfb-');
  } catch (e) {
    report.ttfb = failedPair(`setup failed: ${errText(e)}`, opts.repeat);
    return;
  }
  try {
    progress(`lab ${l.lab.id}: time to first byte, ${TTFB_DELAY_MS} ms held each way by a relay in front of the server and of the proxy`);
    let tunroute: LabProcess;
    try {
      await startHttpServer(l.s, { port: HTTP_PORT });
      await startDelayRelay(l.s, { listen: SERVER_IP, port: RELAYED_HTTP_PORT, target: SERVER_IP, targetPort: HTTP_PORT, delayMs: TTFB_DELAY_MS });
      await startDelayRelay(l.s, { listen: SERVER_IP, port: RELAYED_PROXY_PORT, target: SERVER_IP, targetPort: PROXY_PORT, delayMs: TTFB_DELAY_MS });
      const t = await startTunroute(l, opts, RELAYED_PROXY_PORT, 'tunroute-ttfb');
      tunroute = t.proc;
      report.settings.ttfb = { delayMs: TTFB_DELAY_MS, path: TTFB_PATH, maxRequests: TTFB_MAX, tunrouteArgs: t.args };
      // One request each way first, so that no window pays for ARP or a first connection.
      for (const [host, port] of [
        [SERVER_IP, RELAYED_HTTP_PORT],
        [ROUTED_IP, HTTP_PORT],
      ] as const) {
        await runTtfb(l.c, opts.netcli, host, port, 1, 3, TTFB_PATH);
      }
    } catch (e) {
      const error = `setup failed: ${errText(e)}`;
      progress(`ttfb test: ${error}`);
      report.ttfb = failedPair(error, opts.repeat);
      return;
    }
    const measure = async (label: string, path: 'direct' | 'tunroute'): Promise<Outcome<TtfbResult>> => {
      if (path === 'tunroute' && tunroute.exited) return { ok: false, error: 'tunroute is not running' };
      progress(`${label}, ${path} ...`);
      const watch = new CpuWatch({ tunroute: tunroute.pid, proxy: l.proxy.pid }, l.lab.processes().map((p) => p.pid));
      watch.start();
      try {
        const value =
          path === 'direct'
            ? await runTtfb(l.c, opts.netcli, SERVER_IP, RELAYED_HTTP_PORT, opts.seconds, TTFB_MAX, TTFB_PATH)
            : await runTtfb(l.c, opts.netcli, ROUTED_IP, HTTP_PORT, opts.seconds, TTFB_MAX, TTFB_PATH);
        return { ok: true, value, cpu: watch.stop() };
      } catch (e) {
        const cpu = watch.stop();
        const gone = path === 'tunroute' && tunroute.exited ? ' (tunroute exited)' : '';
        progress(`${label}, ${path}: failed: ${errText(e)}${gone}`);
        return { ok: false, error: errText(e) + gone, cpu };
      } finally {
        await sleep(500);
      }
    };
    const runs: { direct: Outcome<TtfbResult>[]; tunroute: Outcome<TtfbResult>[] } = { direct: [], tunroute: [] };
    for (let i = 0; i < opts.repeat; i++) {
      const suffix = opts.repeat > 1 ? ` [${i + 1}/${opts.repeat}]` : '';
      for (const path of ['direct', 'tunroute'] as const) runs[path].push(await measure(`time to first byte, ${TTFB_DELAY_MS} ms each way${suffix}`, path));
    }
    // The median run by its median: lower is better, but medianRun only needs an order.
    const p50 = (v: TtfbResult): number => v.p50Us;
    report.ttfb = { direct: medianRun(runs.direct, p50), tunroute: medianRun(runs.tunroute, p50) };
    if (opts.repeat > 1) report.ttfb.runs = runs;
    if (tunroute.exited) {
      const st = tunroute.exitStatus;
      report.ttfbTunrouteExit = `${st?.signal ?? `code ${st?.code ?? '?'}`}; last output: ${tunroute.outputTail(600)}`;
    }
  } finally {
    progress('removing the ttfb lab');
    await l.lab.destroy();
  }
}

/** The flows test: into report.flows. */
export async function benchFlows(report: BenchReport, opts: PerFlowOptions): Promise<void> {
  const { progress } = opts;
  const limit = openFilesLimit();
  if (limit < FLOWS + 1000) {
    report.flows = { ok: false, error: `the open-file limit is ${limit}: ${FLOWS} flows need more than ${FLOWS + 1000} (raise ulimit -n)` };
    return;
  }
  let l: ProxyLab;
  try {
    l = await proxyLab('tr-flows-');
  } catch (e) {
    report.flows = { ok: false, error: `setup failed: ${errText(e)}` };
    return;
  }
  let watch: CpuWatch | undefined;
  try {
    progress(`lab ${l.lab.id}: ${FLOWS} idle flows through tunroute`);
    const echo = l.s.spawn([process.execPath, opts.netcli, 'serve', '0.0.0.0', String(ECHO_PORT)], { name: 'echo-server' });
    await echo.waitForLine(/^listening /, 10_000);
    // One user (the flows client) holds all 10,000.
    const { proc: tunroute, args } = await startTunroute(l, opts, PROXY_PORT, 'tunroute-flows', ['-c', oneUserConfig(l.lab.tmpDir)]);
    report.settings.flows = { flows: FLOWS, concurrency: FLOWS_CONCURRENCY, openLimitS: FLOWS_OPEN_LIMIT_S, settleS: FLOWS_SETTLE_S, tunrouteArgs: args };
    // Let start-up garbage settle before "idle".
    await sleep(3000);
    const idle = rss(tunroute.pid);
    const watchdogs = childrenOf(tunroute.pid);
    const watchdogRss = watchdogs.reduce<number | undefined>((sum, pid) => {
      const r = rssKiB(pid);
      return r === undefined ? sum : (sum ?? 0) + r;
    }, undefined);
    if (idle === undefined) throw new Error('tunroute exited before the flows opened');
    const idleRss = idle.vm;

    progress(`opening ${FLOWS} flows (${FLOWS_CONCURRENCY} at a time, at most ${FLOWS_OPEN_LIMIT_S} s) ...`);
    watch = new CpuWatch({ tunroute: tunroute.pid, proxy: l.proxy.pid }, l.lab.processes().map((p) => p.pid));
    watch.start();
    const client = l.c.spawn(
      [process.execPath, opts.netcli, 'hold', ROUTED_IP, String(ECHO_PORT), String(FLOWS), String(FLOWS_OPEN_LIMIT_S), String(FLOWS_CONCURRENCY)],
      { name: 'flows-client' },
    );
    let line: string;
    try {
      line = await client.waitForLine(/^\{"mode":"hold"/, (FLOWS_OPEN_LIMIT_S + 30) * 1000);
    } catch (e) {
      throw new Error(`the flows client did not report within ${FLOWS_OPEN_LIMIT_S + 30} s: ${errText(e)}`, { cause: e });
    }
    const cpu = watch.stop();
    watch = undefined;
    const held = JSON.parse(line) as { open: number; failed: number; firstError?: string; openS: number; stoppedBy: 'count' | 'time' };
    await sleep(1000);
    const open = rss(tunroute.pid);
    if (open === undefined) throw new Error(`tunroute exited with ${held.open} flows open`);
    const openRss = open.vm;
    progress(`${held.open} flows open in ${held.openS.toFixed(1)} s; tunroute RSS ${Math.round(openRss / 1024)} MiB; closing them, reading RSS ${FLOWS_SETTLE_S} s later`);
    await client.stop('SIGTERM', 5000);
    await sleep(FLOWS_SETTLE_S * 1000);
    const after = rss(tunroute.pid);
    if (after === undefined) throw new Error('tunroute exited after the flows closed');
    const afterRss = after.vm;
    const value: FlowsResult = {
      flows: FLOWS,
      open: held.open,
      failed: held.failed,
      openS: held.openS,
      stoppedBy: held.stoppedBy,
      idleRssKiB: idleRss,
      watchdogRssKiB: watchdogRss ?? null,
      watchdogs: watchdogs.length,
      openRssKiB: openRss,
      perFlowKiB: held.open > 0 ? (openRss - idleRss) / held.open : 0,
      afterCloseRssKiB: afterRss,
      idleRssAnonKiB: idle.anon,
      openRssAnonKiB: open.anon,
      afterCloseRssAnonKiB: after.anon,
    };
    if (held.firstError !== undefined) value.firstError = held.firstError;
    report.flows = held.open > 0 ? { ok: true, value, cpu } : { ok: false, error: `no flow opened: ${held.firstError ?? 'unknown error'}`, cpu };
  } catch (e) {
    const cpu = watch?.stop();
    progress(`flows test: failed: ${errText(e)}`);
    report.flows = cpu ? { ok: false, error: errText(e), cpu } : { ok: false, error: errText(e) };
  } finally {
    progress('removing the flows lab');
    await l.lab.destroy();
  }
}
