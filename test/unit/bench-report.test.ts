import { describe, expect, it } from 'vitest';
import type { CpuTotals } from '../../tools/bench/cpu.js';
import { mergeDnsWindows } from '../../tools/bench/names.js';
import type { DnsResult } from '../../tools/bench/tools.js';
import {
  anyFailed,
  medianRun,
  perFlowTable,
  reliabilityTable,
  renderReadme,
  renderText,
  summaryTable,
  wgTable,
  type BenchReport,
  type ChurnResult,
  type FlowsResult,
  type MalformedResult,
  type Outcome,
  type ProxyRestartResult,
  type WgForgeryResult,
  type Pair,
} from '../../tools/bench/report.js';
import type { CpsResult, IperfResult, TtfbResult } from '../../tools/bench/tools.js';

function cpu(client: number, server: number, hostBusyS = 8, labS = 7): CpuTotals {
  return { wallS: 5, procs: { client, server }, labS, hostBusyS };
}

/** An iperf3 window: `mbps` over 5 s. */
function run(mbps: number, c: CpuTotals = cpu(3, 2)): Outcome<IperfResult> {
  return { ok: true, value: { gbps: mbps / 1000, bytes: (mbps * 1e6 * 5) / 8, retransmits: 12, seconds: 5 }, cpu: c };
}

function report(tests: string[], extra: Partial<BenchReport> = {}): BenchReport {
  return {
    version: 1,
    date: '2026-01-02T03:04:05.000Z',
    env: { kernel: '6.1', node: 'v20', cpus: 2, cpuModel: 'test cpu', memGiB: 4, clkTck: 100, commit: 'abc1234', tools: { 'wireguard-go': '0.0.20220316' } },
    settings: {
      seconds: 5,
      repeat: 1,
      proxy: 'dante',
      tunMtu: null,
      requestedMtu: null,
      vethMtu: null,
      tests,
      tunrouteArgs: [],
      cpsMaxConnections: 30_000,
      cpsMsgBytes: 32,
      wg: { tunnelMtu: 1420, tunMtu: 1500, vethMtu: 1500, tunrouteArgs: ['up', '--tunnel', '<lab tmp>/wg.conf'] },
    },
    backgroundCores: 0.01,
    ...extra,
  };
}

const wgUp: Pair<IperfResult> = { direct: run(700, cpu(3.5, 3)), tunroute: run(350, cpu(4, 2)) };
const wgDown: Pair<IperfResult> = { direct: run(800), tunroute: run(400) };

/** The rows of every markdown table in `text`, split into cells. */
function tableRows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .map((l) => l.split('|').slice(1, -1).map((c) => c.trim()));
}

describe('bench report: the wg test', () => {
  it('has its own table: wireguard-go ↔ wireguard-go against tunroute ↔ wireguard-go, with the ratio', () => {
    const t = wgTable(report(['wg'], { wgUp, wgDown }))!;
    expect(t.head).toEqual(['WireGuard tunnel, same tunnel MTU', 'wireguard-go ↔ wireguard-go', 'tunroute ↔ wireguard-go', 'tunroute vs wireguard-go']);
    const up = t.rows.find((r) => r[0]?.startsWith('upload, Mbit/s'));
    expect(up).toEqual(['upload, Mbit/s (iperf3, 1 stream, 5 s)', '700', '350', '0.50']);
    const down = t.rows.find((r) => r[0]?.startsWith('download, Mbit/s'));
    expect(down?.slice(1)).toEqual(['800', '400', '0.50']);
    // Client end CPU: 3.5 CPU-s for 0.4375 GB against 4 CPU-s for 0.21875 GB.
    expect(t.rows.find((r) => r[0] === 'upload, client end CPU per GB, CPU-s')?.slice(1)).toEqual(['8', '18.3', '0.44']);
    expect(t.rows.find((r) => r[0] === 'upload, client end (wireguard-go, or tunroute), % of a core')?.slice(1, 3)).toEqual(['70 %', '80 %']);
  });

  it('is left out when the test did not run', () => {
    expect(wgTable(report(['iperf']))).toBeUndefined();
    expect(renderText(report(['iperf']))).not.toContain('wireguard-go ↔ wireguard-go');
  });

  it('says on the terminal that the reference is wireguard-go, not the kernel, and shows no SOCKS5 table in a wg-only run', () => {
    const text = renderText(report(['wg'], { wgUp, wgDown }));
    expect(text).toContain("NOT the kernel's WireGuard");
    expect(text).toContain('tunnel MTU 1420 on both paths');
    expect(text).not.toContain('direct (kernel)');
    expect(text).toContain('setup:   tunroute abc1234, 5 s per test\n');
    for (const row of tableRows(text)) expect(row).toHaveLength(4);
  });

  it('writes a README block with the same table (its own heading in a wg-only run, a sub-heading after the SOCKS5 tables)', () => {
    const only = renderReadme(report(['wg'], { wgUp, wgDown }));
    expect(only).toContain('### Benchmark: WireGuard tunnel, tunroute vs wireguard-go');
    expect(only).toContain('| upload, Mbit/s (iperf3, 1 stream, 5 s)');
    for (const row of tableRows(only)) expect(row).toHaveLength(4);
    const all = renderReadme(report(['iperf', 'wg'], { wgUp, wgDown, iperfUp: { direct: run(9000), tunroute: run(3000) } }));
    expect(all).toContain("### Benchmark: tunroute vs the kernel's direct path");
    expect(all).toContain('#### WireGuard tunnel: tunroute ↔ wireguard-go against wireguard-go ↔ wireguard-go (not the kernel)');
    expect(all.indexOf('direct (kernel)')).toBeLessThan(all.indexOf('#### WireGuard tunnel'));
  });

  it('shows a skipped test with why, and does not count it as a failure', () => {
    const r = report(['wg']);
    r.settings.wg = { skipped: 'wireguard-go is not installed (not on PATH): apt-get install -y wireguard-go' };
    expect(renderText(r)).toContain('WireGuard tunnel (wg test): skipped: wireguard-go is not installed');
    expect(renderReadme(r)).toContain('skipped: wireguard-go is not installed');
    expect(anyFailed(r)).toBe(false);
  });

  it('names the path of a failed run', () => {
    const r = report(['wg'], { wgUp: { direct: run(700), tunroute: { ok: false, error: 'iperf3: timeout' } }, wgDown });
    expect(anyFailed(r)).toBe(true);
    expect(renderText(r)).toContain('WireGuard upload, tunroute ↔ wireguard-go: iperf3: timeout');
    expect(wgTable(r)!.rows[0]).toEqual(['upload, Mbit/s (iperf3, 1 stream, 5 s)', '700', 'failed', '—']);
  });

  it('marks a whole-host figure when other work kept the host busy in that window', () => {
    const busy: Pair<IperfResult> = { direct: run(700, cpu(3, 3, 9, 5)), tunroute: run(350) };
    const t = wgTable(report(['wg'], { wgUp: busy }))!;
    const host = t.rows.find((r) => r[0] === 'upload, CPU per GB, whole host, CPU-s');
    expect(host?.[1]).toMatch(/ \*$/);
    expect(host?.[2]).not.toMatch(/\*/);
    expect(renderText(report(['wg'], { wgUp: busy }))).toContain('* the host was busy with other work');
  });
});

describe('bench report: medianRun', () => {
  it('shows the successful run with the median figure (the lower one for an even count), else the first failure', () => {
    const key = (v: IperfResult): number => v.gbps;
    expect(medianRun([run(300), run(100), run(200)], key)).toEqual(run(200));
    expect(medianRun([run(300), { ok: false, error: 'x' }, run(100)], key)).toEqual(run(100));
    expect(medianRun([{ ok: false, error: 'first' }, { ok: false, error: 'second' }], key)).toEqual({ ok: false, error: 'first' });
  });
});

/** A connection window: `rate` connections/s over 5 s. */
function cps(rate: number, p99Us = 2000): Outcome<CpsResult> {
  return { ok: true, value: { connections: rate * 5, errors: 0, rate, meanUs: 1e6 / rate, p50Us: 1e6 / rate, p99Us, stoppedBy: 'time', activeS: 5 }, cpu: cpu(1, 1) };
}

/** A time-to-first-byte window: median and p99 in ms. */
function ttfbRun(p50Ms: number, p99Ms: number): Outcome<TtfbResult> {
  return {
    ok: true,
    value: { requests: 100, errors: 0, meanUs: p50Ms * 1000, p50Us: p50Ms * 1000, p99Us: p99Ms * 1000, maxUs: p99Ms * 1000, stoppedBy: 'time', activeS: 5 },
    cpu: cpu(1, 1),
  };
}

const flowsValue: FlowsResult = {
  flows: 10_000,
  open: 10_000,
  failed: 0,
  openS: 13.7,
  stoppedBy: 'count',
  idleRssKiB: 80 * 1024,
  watchdogRssKiB: 60 * 1024,
  watchdogs: 1,
  openRssKiB: 80 * 1024 + 310_000,
  perFlowKiB: 31,
  afterCloseRssKiB: 400 * 1024,
};

describe('bench report: the cost of a flow', () => {
  it('puts the SOCKS5-straight-to-the-proxy ceiling in the direct column, with tunroute as a ratio to it', () => {
    const t = summaryTable(report(['cps', 'ceiling'], { cps: { direct: cps(2200), tunroute: cps(450, 10_200) }, ceiling: cps(990, 2500) }));
    const row = t.rows.find((r) => r[0]?.startsWith('connections/s, ceiling: SOCKS5 client straight to dante'));
    expect(row?.[0]).toContain('pipelined');
    expect(row?.slice(1)).toEqual(['990', '450', '0.45']);
    expect(t.rows.find((r) => r[0]?.startsWith('connect → reply, p99, µs, ceiling'))?.slice(1)).toEqual(['2,500', '10,200', '0.25']);
  });

  it('shows the ceiling alone when cps did not run, and names a failed ceiling', () => {
    const alone = summaryTable(report(['ceiling'], { ceiling: cps(990) }));
    expect(alone.rows.find((r) => r[0]?.startsWith('connections/s, ceiling'))?.slice(1)).toEqual(['990', '—', '—']);
    const failed = report(['ceiling'], { ceiling: { ok: false, error: 'proxy refused CONNECT (reply 2)' } });
    expect(anyFailed(failed)).toBe(true);
    expect(renderText(failed)).toContain('connections, ceiling (SOCKS5 client straight to the proxy): proxy refused CONNECT (reply 2)');
  });

  it('has a per-flow table: time to first byte (median, p99, tunroute ÷ direct) and memory per idle flow', () => {
    const r = report(['ttfb', 'flows'], { ttfb: { direct: ttfbRun(20, 25), tunroute: ttfbRun(60, 80) }, flows: { ok: true, value: flowsValue, cpu: cpu(1, 1) } });
    r.settings.ttfb = { delayMs: 10, path: '/health', maxRequests: 2000, tunrouteArgs: [] };
    r.settings.flows = { flows: 10_000, concurrency: 64, openLimitS: 120, settleS: 10, tunrouteArgs: [] };
    const t = perFlowTable(r)!;
    const get = (label: string): readonly string[] | undefined => t.rows.find((x) => x[0]?.startsWith(label))?.slice(1);
    expect(get('time to first byte, 10 ms held each way, median, ms')).toEqual(['20', '60', '0.33']);
    expect(get('time to first byte, 10 ms held each way, p99, ms')).toEqual(['25', '80', '0.31']);
    expect(get('time to first byte, median, tunroute ÷ direct')).toEqual(['', '', '3']);
    expect(get('idle flows open (of 10,000')).toEqual(['—', '10,000', '']);
    expect(get('time to open 10,000 flows, s')).toEqual(['—', '13.7', '']);
    expect(get('RSS per idle flow, KiB (10,000 flows)')).toEqual(['—', '31', '']);
    expect(get('tunroute RSS, idle, MiB')).toEqual(['—', '80', '']);
    expect(get('watchdog RSS, idle, MiB')).toEqual(['—', '60', '']);
    expect(get('idle RSS with the watchdog included, MiB')).toEqual(['—', '140', '']);
    expect(get('tunroute RSS 10 s after they all closed, MiB')).toEqual(['—', '400', '']);
    expect(get('  … above idle, MiB')).toEqual(['—', '320', '']);
    const text = renderText(r);
    expect(text).toContain('A relay holds every chunk 10 ms in each direction');
    expect(text).not.toContain('| measure ');
    for (const row of tableRows(text)) expect(row).toHaveLength(4);
    const readme = renderReadme(r);
    expect(readme).toContain('### Benchmark: the cost of a flow, tunroute vs the kernel');
    expect(readme).toContain('| RSS per idle flow, KiB (10,000 flows)');
  });

  it('is left out when neither test ran, and a failed flows test is a failure row', () => {
    expect(perFlowTable(report(['cps']))).toBeUndefined();
    const r = report(['flows'], { flows: { ok: false, error: 'the flows client did not report within 150 s' } });
    expect(perFlowTable(r)!.rows.find((x) => x[0]?.startsWith('RSS per idle flow'))?.slice(1)).toEqual(['—', 'failed', '']);
    expect(anyFailed(r)).toBe(true);
    expect(renderText(r)).toContain('idle flows: the flows client did not report within 150 s');
  });

  it('shows the per-flow table under a sub-heading after the main tables in the README', () => {
    const r = report(['cps', 'ttfb'], { cps: { direct: cps(2200), tunroute: cps(450) }, ttfb: { direct: ttfbRun(20, 25), tunroute: ttfbRun(40, 50) } });
    const readme = renderReadme(r);
    expect(readme).toContain("### Benchmark: tunroute vs the kernel's direct path");
    expect(readme.indexOf('| measure')).toBeLessThan(readme.indexOf('#### Per flow'));
  });
});

describe('bench report: the reliability test', () => {
  const c = cpu(1, 0);
  const malformed: MalformedResult = {
    packets: 20_000,
    seed: 1,
    sent: 20_000,
    sentByKind: { bad_tcp_offset: 10_000, random_bytes: 10_000 },
    refusedByKernel: 0,
    kernelDropped: 0,
    burstSeconds: 2,
    ratePps: 10_000,
    tunrouteRunning: true,
    tunrouteExit: null,
    dropsByReason: { bad_tcp_offset: 10_000, bad_version: 10_001 },
    fragmentsHeld: 0,
    byKind: [
      { kind: 'bad_tcp_offset', sent: 10_000, reasons: 'bad_tcp_offset', counted: 10_000 },
      { kind: 'random_bytes', sent: 10_000, reasons: 'IPv4 header reasons beyond their own kinds', counted: 10_001 },
    ],
    counted: 20_001,
    uncounted: -1,
    transfers: 2,
    transfersIntact: 2,
    transferBytes: 2 * 50 * 2 ** 20,
    transferSeconds: 5,
    transferMbps: 168,
  };
  const restart: ProxyRestartResult = {
    flows: 50, open: 50, reset: 0, ended: 50, otherErrors: 0, stillOpen: 0, closeLimitS: 10, closeMedianMs: 120, closeMaxMs: 121,
    downS: 2, proxyUpMs: 132, proxyServesMs: 689, recoveryMs: 6, restartToFlowMs: 695, probeAttempts: 107, probeFailures: 84, tunrouteRunning: true,
  };
  const sample = (round: number, fds: number, rssMiB: number): ChurnResult['start'] => ({ round, fds, rssKiB: rssMiB * 1024, open: round ? 500 : 0, failed: 0, openS: 1, drainS: 1 });
  const churn: ChurnResult = { flows: 500, rounds: 2, start: sample(0, 24, 70), samples: [sample(1, 24, 85), sample(2, 24, 90)], stoppedBy: 'rounds', tunrouteRunning: true };
  const wg: WgForgeryResult = {
    forged: 1000, forgedByKind: { random_bytes: 1000 }, replayed: 1000, captured: 500, sendErrors: 0, attackSeconds: 1, ratePps: 2000,
    dropsByReason: { unknown_type: 1000, replayed: 1000 }, counted: 2000, kernelUdpErrors: 0, innerPacketsAccepted: 0, payloadsDelivered: 0,
    genuineSent: 500, genuineBefore: 500, genuineAfterSent: 100, genuineAfter: 100, tunrouteRunning: true,
  };
  const rel = (extra: Partial<NonNullable<BenchReport['reliability']>> = {}): BenchReport =>
    report(['reliability'], {
      reliability: { malformed: { ok: true, value: malformed, cpu: c }, proxyRestart: { ok: true, value: restart, cpu: c }, churn: { ok: true, value: churn, cpu: c }, wgForgery: { ok: true, value: wg, cpu: c }, ...extra },
    });
  const row = (r: BenchReport, start: string): string[] | undefined => reliabilityTable(r)!.rows.find((x) => x[0]?.startsWith(start))?.slice();

  it('has a table of every figure with its target and whether it was met', () => {
    const r = rel();
    expect(row(r, '… tunroute still running')?.slice(1)).toEqual(['yes (0)', 'yes (0)', 'yes']);
    expect(row(r, '… kinds counted in full')?.slice(1)).toEqual(['2 of 2', '2 of 2', 'yes']);
    expect(row(r, '… still open 10 s after the kill')?.slice(1)).toEqual(['0', '0', 'yes']);
    expect(row(r, 'SOCKS5 server restarted')?.slice(1)).toEqual(['6', '≤ 1,000', 'yes']);
    expect(row(r, '… last ÷ start')?.slice(1)).toEqual(['1', '≤ 1.1', 'yes']);
    expect(row(r, '… accepted')?.slice(1)).toEqual(['0 / 0', '0 / 0', 'yes']);
    expect(row(r, 'tunroute stopped with SIGTERM')).toBeUndefined();
    // RSS: 90 / 70 is over the target.
    expect(reliabilityTable(r)!.rows.filter((x) => x[0] === '… last ÷ start')[1]?.slice(1)).toEqual(['1.29', '≤ 1.1', 'NO']);
    expect(anyFailed(r)).toBe(false);
  });

  it('shows how tunroute exited on SIGTERM after the faults, when that was measured', () => {
    const r = rel({
      proxyRestart: { ok: true, value: { ...restart, shutdown: { seconds: 0.3, exit: 'code 0', clean: true } }, cpu: c },
      churn: { ok: true, value: { ...churn, shutdown: { seconds: 15, exit: 'SIGKILL', clean: false } }, cpu: c },
    });
    expect(row(r, 'tunroute stopped with SIGTERM')?.slice(1)).toEqual(['1 / 2, 15', 'all', 'NO']);
  });

  it('is left out when it did not run, and names a part that failed', () => {
    expect(reliabilityTable(report(['cps']))).toBeUndefined();
    const r = rel({ churn: { ok: false, error: 'the open-file limit is 1024' } });
    expect(row(r, 'flows opened and closed in rounds')?.slice(1)).toEqual(['failed', '', '']);
    expect(anyFailed(r)).toBe(true);
    expect(renderText(r)).toContain('reliability, flow churn: the open-file limit is 1024');
  });

  it('has a heading of its own in a reliability-only README block', () => {
    const readme = renderReadme(rel());
    expect(readme).toContain('### Benchmark: reliability under faults');
    expect(readme).toContain('| reliability (labs of their own)');
  });
});

describe('mergeDnsWindows (the names test: 1-s windows, direct and tunroute in turn)', () => {
  const cpu = (s: number): CpuTotals => ({ wallS: 1, procs: { tunroute: s }, labS: 2 * s, hostBusyS: 3 * s });
  const win = (queries: number, activeS: number, p50Us: number, maxUs: number): DnsResult => ({
    query: 'A q<N>.bench.test',
    queries,
    errors: 0,
    rate: queries / activeS,
    meanUs: 1e6 / (queries / activeS),
    p50Us,
    p99Us: p50Us * 3,
    maxUs,
    stoppedBy: 'time',
    activeS,
  });

  it('sums queries, time and CPU, weights the mean, takes the median p50/p99 and the largest maximum', () => {
    const m = mergeDnsWindows([
      { ok: true, value: win(20_000, 1, 40, 900), cpu: cpu(0.5) },
      { ok: true, value: win(10_000, 1, 80, 5000), cpu: cpu(0.25) },
      { ok: true, value: win(15_000, 1, 60, 700), cpu: cpu(0.25) },
    ]);
    expect(m.ok).toBe(true);
    if (!m.ok) return;
    expect(m.value.queries).toBe(45_000);
    expect(m.value.rate).toBe(15_000);
    expect(m.value.meanUs).toBeCloseTo(1e6 / 15_000, 6);
    expect(m.value.p50Us).toBe(60);
    expect(m.value.p99Us).toBe(180);
    expect(m.value.maxUs).toBe(5000);
    expect(m.cpu).toEqual({ wallS: 3, procs: { tunroute: 1 }, labS: 2, hostBusyS: 3 });
  });

  it('fails as a whole when a window failed, keeping the CPU of those that ran', () => {
    const m = mergeDnsWindows([
      { ok: true, value: win(20_000, 1, 40, 900), cpu: cpu(0.5) },
      { ok: false, error: 'tunroute is not running' },
    ]);
    expect(m).toEqual({ ok: false, error: 'tunroute is not running', cpu: cpu(0.5) });
  });
});
