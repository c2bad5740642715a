/**
 * The benchmark's names test, in a lab of its own:
 *
 *   c: tun0 + tunroute --dns fakeip               s: dante 10.97.0.2:1080, HTTP :8080
 *      --route-domain bench.test (split by name)     dnsmasq 10.97.0.3 (c's resolv.conf: routed
 *   10.97.0.1 ─────────── veth ──────────────────    into tun0 by the plan) and 10.97.0.4 (the
 *                                                    same answers, never routed: the direct path)
 *
 *   fake-IP DNS: sequential A queries for q<N>.bench.test, a new name each query (netcli dns, a
 *   bounded loop: NAMES_DNS_MAX), in 1-s windows, direct and tunroute in turn, --seconds pairs. tunroute: to 10.97.0.3, answered locally with a
 *   fake address; direct: to dnsmasq at 10.97.0.4 over the veth. The target is ≥ 1.0×: the fake
 *   answer never leaves the machine, so it should beat the network.
 *   connect by name → first byte: HTTP GET /health, a new connection each, the name resolved
 *   each time (netcli ttfb HOST=name). tunroute: web.bench.test (fake address, flow by name
 *   through dante, which asks dnsmasq); direct: direct.other.test, which dnsmasq answers with
 *   the server's address and the client reaches over the veth.
 *
 * The fake-IP table goes to the lab's temporary dir (--state-dir); the lab is removed at the
 * end, also after an error.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, startDante, startDnsmasq, startHttpServer, type LabProcess, type Namespace } from '../lab/index.js';
import { CpuWatch, type CpuTotals } from './cpu.js';
import { errText, sleep } from './util.js';
import { medianRun, type BenchReport, type Outcome, type Pair } from './report.js';
import { runDns, runTtfb, type DnsResult, type TtfbResult } from './tools.js';
import type { PerFlowOptions } from './perflow.js';

const CLIENT_IP = '10.97.0.1';
const SERVER_IP = '10.97.0.2';
const SYSTEM_DNS = '10.97.0.3';
const DIRECT_DNS = '10.97.0.4';
const WEB_IP = '10.66.4.7';
const HTTP_PORT = 8080;
const DOMAIN = 'bench.test';
/** Bound on the queries of one window, besides --seconds. */
const NAMES_DNS_MAX = 200_000;
/** Bound on the requests of one window. */
const NAMES_TTFB_MAX = 5000;

interface NamesLab {
  lab: Lab;
  c: Namespace;
  s: Namespace;
  proxy: LabProcess;
  dns: LabProcess[];
}

async function namesLab(): Promise<NamesLab> {
  const lab = await Lab.create({ prefix: 'tr-names-' });
  try {
    const nsOpts = { tcpTwReuse: true, wideLocalPortRange: true };
    const c = await lab.addNamespace('c', nsOpts);
    const s = await lab.addNamespace('s', nsOpts);
    const l = await lab.link(c, s, { cidrA: `${CLIENT_IP}/24`, cidrB: `${SERVER_IP}/24` });
    for (const ip of [SYSTEM_DNS, DIRECT_DNS, WEB_IP]) await s.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo'], { timeoutMs: 10_000 });
    await c.exec(['ip', 'route', 'add', 'default', 'via', SERVER_IP, 'dev', l.a.ifname], { timeoutMs: 10_000 });
    for (const ns of [c, s]) {
      const etc = lab.etcOverlayDir(ns);
      mkdirSync(etc, { recursive: true });
      writeFileSync(join(etc, 'resolv.conf'), `nameserver ${SYSTEM_DNS}\n`);
    }
    const records = { [DOMAIN]: WEB_IP, 'direct.other.test': WEB_IP };
    // TTL 0: no resolver on the way (there is none in the direct path) may cache the answers.
    const dns = [
      await startDnsmasq(s, { listen: SYSTEM_DNS, records, extraArgs: ['--local-ttl=0'] }),
      await startDnsmasq(s, { listen: DIRECT_DNS, records, extraArgs: ['--local-ttl=0'] }),
    ];
    const proxy = await startDante(s, { listen: SERVER_IP, port: 1080 });
    await startHttpServer(s, { port: HTTP_PORT });
    return { lab, c, s, proxy, dns };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/** The sum of CPU totals over several windows. */
function sumCpu(list: readonly CpuTotals[]): CpuTotals {
  const out: CpuTotals = { wallS: 0, procs: {}, labS: 0, hostBusyS: 0 };
  for (const c of list) {
    out.wallS += c.wallS;
    out.labS += c.labS;
    out.hostBusyS += c.hostBusyS;
    for (const [k, v] of Object.entries(c.procs)) out.procs[k] = (out.procs[k] ?? 0) + v;
  }
  return out;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)];
}

/**
 * Windows of one path as one result: queries, errors, time and CPU summed (so the rate is all
 * queries over all active time), the mean weighted by queries, the largest maximum, and the
 * median of the windows' p50 and p99 (the windows keep no latencies to merge exactly). A failed
 * window fails the whole.
 */
export function mergeDnsWindows(windows: readonly Outcome<DnsResult>[]): Outcome<DnsResult> {
  const cpu = sumCpu(windows.flatMap((w) => (w.cpu === undefined ? [] : [w.cpu])));
  const failed = windows.find((w) => !w.ok);
  if (failed !== undefined && !failed.ok) return { ok: false, error: failed.error, cpu };
  const values = windows.flatMap((w) => (w.ok ? [w.value] : []));
  if (values.length === 0) return { ok: false, error: 'no window ran', cpu };
  const queries = values.reduce((n, v) => n + v.queries, 0);
  const activeS = values.reduce((n, v) => n + v.activeS, 0);
  const value: DnsResult = {
    query: values[0].query,
    queries,
    errors: values.reduce((n, v) => n + v.errors, 0),
    rate: activeS > 0 ? queries / activeS : 0,
    meanUs: queries > 0 ? values.reduce((n, v) => n + v.meanUs * v.queries, 0) / queries : 0,
    p50Us: median(values.map((v) => v.p50Us)),
    p99Us: median(values.map((v) => v.p99Us)),
    maxUs: Math.max(...values.map((v) => v.maxUs)),
    stoppedBy: values[values.length - 1].stoppedBy,
    activeS,
  };
  const firstError = values.find((v) => v.firstError !== undefined)?.firstError;
  if (firstError !== undefined) value.firstError = firstError;
  return { ok: true, value, cpu };
}

function failedPair<T>(error: string): Pair<T> {
  const o: Outcome<T> = { ok: false, error };
  return { direct: o, tunroute: o };
}

/** The names test: into report.fakeIpDns and report.ttfbByName. */
export async function benchNames(report: BenchReport, opts: PerFlowOptions): Promise<void> {
  const { progress } = opts;
  let l: NamesLab;
  try {
    l = await namesLab();
  } catch (e) {
    const error = `setup failed: ${errText(e)}`;
    report.fakeIpDns = failedPair(error);
    report.ttfbByName = failedPair(error);
    return;
  }
  try {
    progress(`lab ${l.lab.id}: fake-IP DNS queries and connect by name`);
    const args = [
      'up',
      '--dns',
      'fakeip',
      '--route-domain',
      DOMAIN,
      '--proxy',
      `socks5://${SERVER_IP}:1080`,
      '--control',
      join(l.lab.tmpDir, 'names.sock'),
      '--state-dir',
      join(l.lab.tmpDir, 'state'),
      ...opts.tunrouteArgs,
    ];
    let tunroute: LabProcess;
    try {
      progress(`starting tunroute ${args.join(' ')}`);
      tunroute = l.c.spawn([process.execPath, ...(opts.nodeArgs ?? []), opts.cli, ...args], { name: 'tunroute-names', logFile: join(l.lab.tmpDir, 'tunroute-names.log') });
      await tunroute.waitForLine(/"msg":"tunroute is up"/, 20_000);
      report.settings.names = { domain: DOMAIN, maxQueries: NAMES_DNS_MAX, maxRequests: NAMES_TTFB_MAX, tunrouteArgs: args.map((a) => a.replace(l.lab.tmpDir, '<lab tmp>')) };
      // Warm both paths once (ARP, the proxy's first connection).
      await runTtfb(l.c, opts.netcli, `web.${DOMAIN}`, HTTP_PORT, 1, 3, '/health');
      await runTtfb(l.c, opts.netcli, 'direct.other.test', HTTP_PORT, 1, 3, '/health');
      // And both DNS paths for a second each, with names of their own (q<N>.warm.bench.test, so
      // no timed query finds its name in the pool): the figure is a running tunroute's, whose
      // answer path is compiled, not the first half second of a fresh process.
      for (const dns of [DIRECT_DNS, SYSTEM_DNS]) await runDns(l.c, opts.netcli, dns, 53, 1, NAMES_DNS_MAX, `warm.${DOMAIN}`, 'warm-up');
    } catch (e) {
      const error = `setup failed: ${errText(e)}`;
      progress(`names test: ${error}`);
      report.fakeIpDns = failedPair(error);
      report.ttfbByName = failedPair(error);
      return;
    }
    const window = async <T>(label: string, path: 'direct' | 'tunroute', run: () => Promise<T>, settleMs = 500): Promise<Outcome<T>> => {
      if (path === 'tunroute' && tunroute.exited) return { ok: false, error: 'tunroute is not running' };
      progress(`${label}, ${path} ...`);
      // resolver: the dnsmasq that answers the direct path's queries.
      const watch = new CpuWatch({ tunroute: tunroute.pid, proxy: l.proxy.pid, resolver: l.dns[1].pid }, l.lab.processes().map((p) => p.pid));
      watch.start();
      try {
        const value = await run();
        return { ok: true, value, cpu: watch.stop() };
      } catch (e) {
        const cpu = watch.stop();
        progress(`${label}, ${path}: failed: ${errText(e)}`);
        return { ok: false, error: errText(e), cpu };
      } finally {
        await sleep(settleMs);
      }
    };
    const what = `A q<N>.${DOMAIN}, a new name each query`;
    const dnsRuns: { direct: Outcome<DnsResult>[]; tunroute: Outcome<DnsResult>[] } = { direct: [], tunroute: [] };
    const ttfbRuns: { direct: Outcome<TtfbResult>[]; tunroute: Outcome<TtfbResult>[] } = { direct: [], tunroute: [] };
    for (let i = 0; i < opts.repeat; i++) {
      const suffix = opts.repeat > 1 ? ` [${i + 1}/${opts.repeat}]` : '';
      // Interleaved 1-s windows, merged per path (see mergeDnsWindows): the host's speed drifts
      // by tens of per cent between minutes here, and windows a second apart see the same host.
      const slices = Math.max(1, Math.round(opts.seconds));
      const parts: { direct: Outcome<DnsResult>[]; tunroute: Outcome<DnsResult>[] } = { direct: [], tunroute: [] };
      for (let k = 0; k < slices; k++) {
        for (const path of k % 2 === 0 ? (['direct', 'tunroute'] as const) : (['tunroute', 'direct'] as const)) {
          const label = `fake-IP DNS queries${suffix} (${k + 1}/${slices})`;
          parts[path].push(await window(label, path, () => runDns(l.c, opts.netcli, path === 'direct' ? DIRECT_DNS : SYSTEM_DNS, 53, 1, NAMES_DNS_MAX, DOMAIN, what), 100));
        }
      }
      for (const path of ['direct', 'tunroute'] as const) dnsRuns[path].push(mergeDnsWindows(parts[path]));
      for (const path of ['direct', 'tunroute'] as const) {
        const host = path === 'direct' ? 'direct.other.test' : `web.${DOMAIN}`;
        ttfbRuns[path].push(await window(`connect by name → first byte${suffix}`, path, () => runTtfb(l.c, opts.netcli, host, HTTP_PORT, opts.seconds, NAMES_TTFB_MAX, '/health')));
      }
    }
    report.fakeIpDns = { direct: medianRun(dnsRuns.direct, (v) => v.rate), tunroute: medianRun(dnsRuns.tunroute, (v) => v.rate) };
    report.ttfbByName = { direct: medianRun(ttfbRuns.direct, (v) => v.p50Us), tunroute: medianRun(ttfbRuns.tunroute, (v) => v.p50Us) };
    if (opts.repeat > 1) {
      report.fakeIpDns.runs = dnsRuns;
      report.ttfbByName.runs = ttfbRuns;
    }
    if (tunroute.exited) {
      const st = tunroute.exitStatus;
      report.namesTunrouteExit = `${st?.signal ?? `code ${st?.code ?? '?'}`}; last output: ${tunroute.outputTail(600)}`;
    }
  } finally {
    progress('removing the names lab');
    await l.lab.destroy();
  }
}
