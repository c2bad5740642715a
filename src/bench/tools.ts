/**
 * The measuring tools the benchmark drives inside the lab's client namespace, and parsers for
 * what they print: iperf3 (bulk throughput), sockperf (request/response round trips, C, so the
 * figure is the path's and not the client's) and our own Node client (netcli.ts: sequential
 * connections, and round trips when sockperf is not installed).
 */
import type { Namespace } from '../lab/index.js';
import type { ClientResult } from './netcli.js';

export interface IperfResult {
  /** Received payload rate, Gbit/s. */
  gbps: number;
  /** Payload bytes received. */
  bytes: number;
  /** TCP retransmits of the sending side (the server's with -R). */
  retransmits: number;
  seconds: number;
}

export interface RrResult {
  tool: 'sockperf' | 'node';
  /** Size of the request and of the reply, bytes. */
  msgBytes: number;
  /** Round trips in the measured part of the run (sockperf: without its warm-up). */
  roundTrips: number;
  /** Round trips in the whole run (sockperf: with warm-up), for CPU per round trip. */
  totalRoundTrips: number;
  /** Seconds of the whole run (the tool's own clock), for CPU shares. */
  activeS: number;
  /** Round trips per second. */
  rate: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export interface CpsResult {
  connections: number;
  errors: number;
  firstError?: string;
  /** Connections per second (each: connect, request, reply, close). */
  rate: number;
  /** connect() to the whole reply, µs. */
  meanUs: number;
  p50Us: number;
  p99Us: number;
  stoppedBy: ClientResult['stoppedBy'];
  /** Seconds of the whole run (the client's own clock), for CPU shares. */
  activeS: number;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function path(v: unknown, ...keys: string[]): unknown {
  let cur = v;
  for (const k of keys) {
    if (!isRecord(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

function numAt(v: unknown, ...keys: string[]): number | undefined {
  const n = path(v, ...keys);
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
}

/** Parse `iperf3 -J` output; throws with iperf3's own error message when it reports one. */
export function parseIperf3(stdout: string): IperfResult {
  let j: unknown;
  try {
    j = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stdout.slice(0, 300).trim() || '(nothing)'}`);
  }
  const err = path(j, 'error');
  if (typeof err === 'string') throw new Error(`iperf3: ${err}`);
  const bps = numAt(j, 'end', 'sum_received', 'bits_per_second');
  const bytes = numAt(j, 'end', 'sum_received', 'bytes');
  const seconds = numAt(j, 'end', 'sum_received', 'seconds');
  if (bps === undefined || bytes === undefined || seconds === undefined) throw new Error('iperf3 JSON has no end.sum_received');
  return { gbps: bps / 1e9, bytes, seconds, retransmits: numAt(j, 'end', 'sum_sent', 'retransmits') ?? 0 };
}

export async function runIperf3(c: Namespace, host: string, seconds: number, reverse: boolean): Promise<IperfResult> {
  const r = await c.exec(
    [
      'iperf3',
      '-c',
      host,
      '-p',
      '5201',
      '-t',
      String(seconds),
      '-J',
      '--connect-timeout',
      '5000',
      // The receiving side gives up after 10 s without data (a stalled path ends the test).
      ...(reverse ? ['-R', '--rcv-timeout', '10000'] : []),
    ],
    { allowFail: true, timeoutMs: (seconds + 30) * 1000 },
  );
  const parsed = parseIperf3(r.stdout);
  if (r.code !== 0) throw new Error(`iperf3 exited with code ${r.code}: ${r.stderr.slice(0, 300)}`);
  return parsed;
}

const ANSI_RE = /\u001b\[[0-9;]*m/g;

/** Parse the report of `sockperf ping-pong --full-rtt`. */
export function parseSockperf(output: string, msgBytes: number): RrResult {
  const text = output.replace(ANSI_RE, '');
  const valid = /\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)/.exec(text);
  const avg = /avg-rtt=([\d.]+)/.exec(text);
  const pct = (p: string): number | undefined => {
    const m = new RegExp(`percentile ${p.replace('.', '\\.')} =\\s*([\\d.]+)`).exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const max = /<MAX> observation =\s*([\d.]+)/.exec(text);
  const p50 = pct('50.000');
  const p99 = pct('99.000');
  if (!valid || !avg || p50 === undefined || p99 === undefined) {
    const why = text
      .split('\n')
      .filter((l) => /error|fail|refused|timed? ?out|invalid/i.test(l))
      .slice(0, 3)
      .join(' / ');
    throw new Error(`sockperf gave no round-trip report${why ? `: ${why}` : ''}`);
  }
  const total = /\[Total Run\] RunTime=([\d.]+) sec; Warm up time=(\d+) msec; SentMessages=(\d+); ReceivedMessages=(\d+)/.exec(text);
  const runtime = Number(valid[1]);
  const received = Number(valid[3]);
  if (received === 0) throw new Error('sockperf: no replies received');
  return {
    tool: 'sockperf',
    msgBytes,
    roundTrips: received,
    totalRoundTrips: total ? Number(total[4]) : received,
    activeS: total ? Number(total[1]) + Number(total[2]) / 1000 : runtime,
    rate: runtime > 0 ? received / runtime : 0,
    meanUs: Number(avg[1]),
    p50Us: p50,
    p99Us: p99,
    maxUs: max ? Number(max[1]) : p99,
  };
}

/** sockperf's smallest message (its own header). */
export const SOCKPERF_MIN_MSG = 14;

export async function runSockperf(c: Namespace, host: string, port: number, seconds: number): Promise<RrResult> {
  const r = await c.exec(
    ['sockperf', 'ping-pong', '--tcp', '-i', host, '-p', String(port), '-t', String(seconds), '--full-rtt', '-m', String(SOCKPERF_MIN_MSG)],
    { allowFail: true, timeoutMs: (seconds + 30) * 1000 },
  );
  return parseSockperf(`${r.stdout}\n${r.stderr}`, SOCKPERF_MIN_MSG);
}

function parseClient(stdout: string, stderr: string): ClientResult {
  const line = stdout.trim().split('\n').pop() ?? '';
  let j: unknown;
  try {
    j = JSON.parse(line);
  } catch {
    throw new Error(`netcli printed no result: ${(stderr || stdout).slice(0, 300).trim() || '(nothing)'}`);
  }
  if (!isRecord(j) || typeof j.count !== 'number' || typeof j.rate !== 'number') throw new Error(`netcli: unexpected output ${line.slice(0, 200)}`);
  return j as unknown as ClientResult;
}

async function runClient(
  c: Namespace,
  netcli: string,
  mode: 'rr' | 'cps',
  host: string,
  port: number,
  seconds: number,
  max: number,
  size: number,
): Promise<ClientResult> {
  const r = await c.exec([process.execPath, netcli, mode, host, String(port), String(seconds), String(max), String(size)], {
    allowFail: true,
    timeoutMs: (seconds + 30) * 1000,
  });
  const res = parseClient(r.stdout, r.stderr);
  if (res.count === 0) throw new Error(`no ${mode === 'rr' ? 'round trip' : 'connection'} completed: ${res.firstError ?? 'unknown error'}`);
  return res;
}

export async function runNodeRr(
  c: Namespace,
  netcli: string,
  host: string,
  port: number,
  seconds: number,
  max: number,
): Promise<RrResult> {
  const r = await runClient(c, netcli, 'rr', host, port, seconds, max, 1);
  if (r.stoppedBy === 'errors') throw new Error(`round trips stopped after ${r.count}: ${r.firstError ?? 'error'}`);
  return { tool: 'node', msgBytes: 1, roundTrips: r.count, totalRoundTrips: r.count, activeS: r.elapsedS, rate: r.rate, meanUs: r.meanUs, p50Us: r.p50Us, p99Us: r.p99Us, maxUs: r.maxUs };
}

export async function runCps(
  c: Namespace,
  netcli: string,
  host: string,
  port: number,
  seconds: number,
  max: number,
  size: number,
): Promise<CpsResult> {
  const r = await runClient(c, netcli, 'cps', host, port, seconds, max, size);
  const out: CpsResult = {
    connections: r.count,
    errors: r.errors,
    rate: r.rate,
    meanUs: r.meanUs,
    p50Us: r.p50Us,
    p99Us: r.p99Us,
    stoppedBy: r.stoppedBy,
    activeS: r.elapsedS,
  };
  if (r.firstError !== undefined) out.firstError = r.firstError;
  return out;
}
