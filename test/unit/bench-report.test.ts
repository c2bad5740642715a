import { describe, expect, it } from 'vitest';
import type { CpuTotals } from '../../tools/bench/cpu.js';
import { anyFailed, medianRun, renderReadme, renderText, wgTable, type BenchReport, type Outcome, type Pair } from '../../tools/bench/report.js';
import type { IperfResult } from '../../tools/bench/tools.js';

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
