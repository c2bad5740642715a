/**
 * The benchmark's wg test: one iperf3 stream up and down (-R) through a WireGuard tunnel, by
 * tunroute and by the reference, in a lab of its own (nothing on the host is touched):
 *
 *   tunroute path                                   reference path
 *   wc: tunroute up --tunnel wg.conf (tun0)         gc: wireguard-go wgc… 10.9.0.2/24
 *       10.97.0.1 ── veth ── 10.97.0.2                  10.97.1.1 ── veth ── 10.97.1.2
 *   ws: wireguard-go wgs… 10.8.0.1/24, :51820       gs: wireguard-go wgr… 10.9.0.1/24, :51820
 *       iperf3 -s -B 10.8.0.1                           iperf3 -s -B 10.9.0.1
 *
 * The reference is wireguard-go ↔ wireguard-go: userspace at both ends, not the kernel's
 * WireGuard. Every tunnel has the same MTU (WG_MTU: wg-quick's and tunroute's default, set
 * explicitly on both sides). The report keeps the shape of the other pairs: `direct` is the
 * reference, `tunroute` is tunroute ↔ wireguard-go; windows alternate between the two, `repeat`
 * times each, and the median run is shown. CPU per window: `client` (tunroute, or the client's
 * wireguard-go) and `server` (the server's wireguard-go).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Lab,
  requireBinary,
  startIperf3,
  startWireguardGo,
  type LabProcess,
  type Namespace,
} from '../lab/index.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { CpuWatch } from './cpu.js';
import { medianRun, type BenchReport, type Outcome, type Pair } from './report.js';
import { readMtu, runIperf3, tunrouteStatus, type IperfResult } from './tools.js';
import { errText, sleep } from './util.js';

/** Tunnel MTU of both paths: wg-quick's default, wireguard-go's, and tunroute's (config/schema.ts). */
export const WG_MTU = 1420;
const WG_PORT = 51820;
const IPERF_PORT = 5201;

/** Addresses of one path: the veth between client and server, and the tunnel. */
const PATHS = {
  tunroute: { clientVeth: '10.97.0.1', serverVeth: '10.97.0.2', clientTun: '10.8.0.2', serverTun: '10.8.0.1' },
  reference: { clientVeth: '10.97.1.1', serverVeth: '10.97.1.2', clientTun: '10.9.0.2', serverTun: '10.9.0.1' },
} as const;

export interface WgBenchOptions {
  /** dist/cli/main.js */
  cli: string;
  seconds: number;
  repeat: number;
  /** More `tunroute up` arguments (the benchmark's --mtu and --tunroute-arg). */
  tunrouteArgs: readonly string[];
  progress: (msg: string) => void;
}

type Path = 'direct' | 'tunroute';
const PATH_NAMES: Record<Path, string> = { direct: 'wireguard-go ↔ wireguard-go', tunroute: 'tunroute ↔ wireguard-go' };

/** One path as measured: where iperf3 runs, the processes whose CPU is counted. */
interface Side {
  client: Namespace;
  server: Namespace;
  /** iperf3 -s on the server's tunnel address (replaced after a failed test). */
  iperf: LabProcess;
  /** tunroute, or the client's wireguard-go. */
  clientProc: LabProcess;
  serverProc: LabProcess;
  host: string;
}

/** Why the test cannot run here (a tool missing, or a tunroute without --tunnel), or undefined. */
function missing(cli: string): string | undefined {
  try {
    requireBinary('wireguard-go', 'wireguard-go');
    requireBinary('wg', 'wireguard-tools');
  } catch (e) {
    return errText(e);
  }
  const r = spawnSync(process.execPath, [cli, 'up', '--help'], { encoding: 'utf8', timeout: 15_000 });
  const help = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (!help.includes('--tunnel') || !help.includes('--control')) return 'this build of tunroute has no `up --tunnel` / `--control`';
  return undefined;
}

/** A pair whose every run failed with `error` (the lab could not be set up). */
function failedPair(error: string, repeat: number): Pair<IperfResult> {
  const o: Outcome<IperfResult> = { ok: false, error };
  const p: Pair<IperfResult> = { direct: o, tunroute: o };
  if (repeat > 1) p.runs = { direct: Array<Outcome<IperfResult>>(repeat).fill(o), tunroute: Array<Outcome<IperfResult>>(repeat).fill(o) };
  return p;
}

/** Fail with what the client saw when `ns` cannot ping `host` through the tunnel. */
async function ping(ns: Namespace, host: string, what: string): Promise<void> {
  const r = await ns.exec(['ping', '-c', '3', '-i', '0.2', '-W', '3', host], { allowFail: true, timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`${what}: no ping through the tunnel to ${host}: ${(r.stdout + r.stderr).trim().split('\n').slice(-2).join(' / ')}`);
}

/**
 * Run the wg test and put it into `report` (wgUp, wgDown, settings.wg; the tunroute's status
 * and, if it died, how). Without wireguard-go or wg the test is skipped, and says so.
 */
export async function benchWg(report: BenchReport, opts: WgBenchOptions): Promise<void> {
  const { progress } = opts;
  const why = missing(opts.cli);
  if (why !== undefined) {
    progress(`wg test SKIPPED: ${why}`);
    report.settings.wg = { skipped: why };
    return;
  }
  requireBinary('iperf3', 'iperf3');
  const lab = await Lab.create({ prefix: 'tr-wgbench-' });
  try {
    progress(`lab ${lab.id}: tunroute ↔ wireguard-go and wireguard-go ↔ wireguard-go, tunnel MTU ${WG_MTU}`);
    const id = lab.id.slice(-4);
    const wc = await lab.addNamespace('wc');
    const ws = await lab.addNamespace('ws');
    const gc = await lab.addNamespace('gc');
    const gs = await lab.addNamespace('gs');
    const t = PATHS.tunroute;
    const g = PATHS.reference;
    const link = await lab.link(wc, ws, { cidrA: `${t.clientVeth}/24`, cidrB: `${t.serverVeth}/24` });
    await lab.link(gc, gs, { cidrA: `${g.clientVeth}/24`, cidrB: `${g.serverVeth}/24` });

    const controlPath = join(lab.tmpDir, 'tunroute-wg.sock');
    const confFile = join(lab.tmpDir, 'wg.conf');
    const tunrouteArgs = ['up', '--tunnel', confFile, '--control', controlPath, ...opts.tunrouteArgs];
    report.settings.wg = {
      tunnelMtu: WG_MTU,
      tunrouteArgs: tunrouteArgs.map((a) => (a.startsWith(lab.tmpDir) ? a.replace(lab.tmpDir, '<lab tmp>') : a)),
    };

    let sides: Record<Path, Side>;
    try {
      // The reference: wireguard-go at both ends.
      const [rs, rc] = [generatePrivateKey(), generatePrivateKey()];
      const refServer = await startWireguardGo(gs, `wgr${id}`, {
        privateKey: rs,
        listenPort: WG_PORT,
        address: `${g.serverTun}/24`,
        mtu: WG_MTU,
        peers: [{ publicKey: publicKeyOf(rc), allowedIPs: `${g.clientTun}/32` }],
      });
      const refClient = await startWireguardGo(gc, `wgc${id}`, {
        privateKey: rc,
        listenPort: WG_PORT,
        address: `${g.clientTun}/24`,
        mtu: WG_MTU,
        peers: [{ publicKey: publicKeyOf(rs), allowedIPs: `${g.serverTun}/24`, endpoint: `${g.serverVeth}:${WG_PORT}` }],
      });
      const refIperf = await startIperf3(gs, IPERF_PORT, { listen: g.serverTun });

      // tunroute ↔ wireguard-go, with a wg-quick file as a user would write it.
      const [ts, tc] = [generatePrivateKey(), generatePrivateKey()];
      const wgServer = await startWireguardGo(ws, `wgs${id}`, {
        privateKey: ts,
        listenPort: WG_PORT,
        address: `${t.serverTun}/24`,
        mtu: WG_MTU,
        peers: [{ publicKey: publicKeyOf(tc), allowedIPs: `${t.clientTun}/32` }],
      });
      const tIperf = await startIperf3(ws, IPERF_PORT, { listen: t.serverTun });
      writeFileSync(
        confFile,
        [
          '# written by the benchmark (tools/bench/wg.ts)',
          '[Interface]',
          `PrivateKey = ${formatKey(tc)}`,
          `Address = ${t.clientTun}/24`,
          `MTU = ${WG_MTU}`,
          '',
          '[Peer]',
          `PublicKey = ${formatKey(publicKeyOf(ts))}`,
          `Endpoint = ${t.serverVeth}:${WG_PORT}`,
          `AllowedIPs = ${t.serverTun}/24`,
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      progress(`starting tunroute ${report.settings.wg.tunrouteArgs?.join(' ')}`);
      const tunroute = wc.spawn([process.execPath, opts.cli, ...tunrouteArgs], { name: 'tunroute-wg', logFile: join(lab.tmpDir, 'tunroute-wg.log') });
      await tunroute.waitForLine(/"msg":"tunroute is up"/, 20_000);
      report.settings.wg.tunMtu = await readMtu(wc, 'tun0');
      report.settings.wg.vethMtu = await readMtu(wc, link.a.ifname);

      // Handshakes first, so that no window pays for one.
      await ping(gc, g.serverTun, PATH_NAMES.direct);
      await ping(wc, t.serverTun, PATH_NAMES.tunroute);
      sides = {
        direct: { client: gc, server: gs, iperf: refIperf, clientProc: refClient, serverProc: refServer, host: g.serverTun },
        tunroute: { client: wc, server: ws, iperf: tIperf, clientProc: tunroute, serverProc: wgServer, host: t.serverTun },
      };
    } catch (e) {
      const error = `setup failed: ${errText(e)}`;
      progress(`wg test: ${error}`);
      report.wgUp = failedPair(error, opts.repeat);
      report.wgDown = failedPair(error, opts.repeat);
      return;
    }

    const tunroute = sides.tunroute.clientProc;
    /** One window: CPU watched around iperf3; a failure is recorded, not thrown. */
    const measure = async (label: string, path: Path, reverse: boolean): Promise<Outcome<IperfResult>> => {
      const side = sides[path];
      if (path === 'tunroute' && tunroute.exited) return { ok: false, error: 'tunroute is not running' };
      progress(`${label}, ${PATH_NAMES[path]} ...`);
      const watch = new CpuWatch(
        { client: side.clientProc.pid, server: side.serverProc.pid },
        lab.processes().map((p) => p.pid),
      );
      watch.start();
      try {
        const value = await runIperf3(side.client, side.host, opts.seconds, reverse);
        return { ok: true, value, cpu: watch.stop() };
      } catch (e) {
        const cpu = watch.stop();
        const gone = path === 'tunroute' && tunroute.exited ? ' (tunroute exited)' : '';
        progress(`${label}, ${PATH_NAMES[path]}: failed: ${errText(e)}${gone}`);
        // iperf3 -s may be stuck after a failed test: start a new one.
        await side.iperf.stop('SIGTERM', 1000).catch(() => undefined);
        try {
          side.iperf = await startIperf3(side.server, IPERF_PORT, { listen: side.host });
        } catch (e2) {
          progress(`could not restart iperf3 -s on ${side.host}: ${errText(e2)}`);
        }
        return { ok: false, error: errText(e) + gone, cpu };
      } finally {
        await sleep(500);
      }
    };
    /** Reference and tunroute, alternating, `repeat` times each; the median run shown. */
    const pair = async (label: string, reverse: boolean): Promise<Pair<IperfResult>> => {
      const runs: Record<Path, Outcome<IperfResult>[]> = { direct: [], tunroute: [] };
      for (let i = 0; i < opts.repeat; i++) {
        const suffix = opts.repeat > 1 ? ` [${i + 1}/${opts.repeat}]` : '';
        for (const path of ['direct', 'tunroute'] as const) runs[path].push(await measure(label + suffix, path, reverse));
      }
      const gbps = (v: IperfResult): number => v.gbps;
      const out: Pair<IperfResult> = { direct: medianRun(runs.direct, gbps), tunroute: medianRun(runs.tunroute, gbps) };
      if (opts.repeat > 1) out.runs = runs;
      return out;
    };
    report.wgUp = await pair('WireGuard upload', false);
    report.wgDown = await pair('WireGuard download', true);

    if (!tunroute.exited) report.wgTunrouteStatus = await tunrouteStatus(opts.cli, controlPath);
    else {
      const st = tunroute.exitStatus;
      report.wgTunrouteExit = `${st?.signal ?? `code ${st?.code ?? '?'}`}; last output: ${tunroute.outputTail(600)}`;
    }
  } finally {
    progress('removing the wg lab');
    await lab.destroy();
  }
}
