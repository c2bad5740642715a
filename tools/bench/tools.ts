/**
 * The measuring tools the benchmark drives inside the lab's client namespace, and parsers for
 * what they print: iperf3 (bulk throughput over TCP; UDP at a fixed offered rate), sockperf
 * (request/response round trips, C, so the figure is the path's and not the client's) and our
 * own Node client (netcli.ts: sequential connections, sequential DNS queries, and round trips
 * when sockperf is not installed).
 */
import { stripVTControlCharacters } from 'node:util';
import { runCommand, type Namespace } from '../lab/index.js';
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

export interface UdpResult {
  /** Offered rate (iperf3 -b), Mbit/s. */
  offeredMbps: number;
  /** UDP payload per datagram (iperf3 -l), bytes. */
  datagramBytes: number;
  /** Socket buffer asked of iperf3 (-w, both ends), bytes. */
  bufferBytes: number;
  /** What the client sent, Mbit/s of payload. */
  sentMbps: number;
  /** What the server received, Mbit/s of payload. */
  mbps: number;
  /** Datagrams the client sent, and those the server got. */
  sentPackets: number;
  receivedPackets: number;
  /**
   * Datagrams sent but not received, % of sent. iperf3's own lost_percent (below) only counts
   * gaps before the last datagram the server saw, so it misses a lost tail.
   */
  lossPercent: number;
  /** iperf3's figures: the highest sequence number seen, the gaps below it, their share. */
  iperfPackets: number;
  iperfLostPackets: number;
  iperfLostPercent: number;
  jitterMs: number;
  /** Payload bytes received, for CPU per GB. */
  bytes: number;
  seconds: number;
}

export interface DnsResult {
  /** What was asked, e.g. "A q<N>.bench.lab, a new name each query, TTL 0". */
  query: string;
  /** Queries answered. */
  queries: number;
  errors: number;
  firstError?: string;
  /** Answered queries per second, one at a time. */
  rate: number;
  /** Query sent → answer received, µs. */
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  stoppedBy: ClientResult['stoppedBy'];
  /** Seconds of the whole run (the client's own clock), for CPU shares. */
  activeS: number;
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

/** Sequential HTTP requests, each on a new connection (netcli ttfb). */
export interface TtfbResult {
  requests: number;
  errors: number;
  firstError?: string;
  /** connect() to the response's first byte, µs. */
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  stoppedBy: ClientResult['stoppedBy'];
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

/**
 * Parse `iperf3 -u -J` output of the client: what it sent (end.sum_sent, else end.sum) and what
 * the server received (end.sum_received, which iperf3 ≥ 3.9 or so prints; else end.sum with its
 * lost packets taken off).
 */
export function parseIperf3Udp(stdout: string, offeredMbps: number, datagramBytes: number, bufferBytes: number): UdpResult {
  let j: unknown;
  try {
    j = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stdout.slice(0, 300).trim() || '(nothing)'}`);
  }
  const err = path(j, 'error');
  if (typeof err === 'string') throw new Error(`iperf3: ${err}`);
  const sum = path(j, 'end', 'sum');
  const recv = path(j, 'end', 'sum_received') ?? sum;
  const sent = path(j, 'end', 'sum_sent') ?? sum;
  const packets = numAt(recv, 'packets') ?? numAt(sum, 'packets');
  const lost = numAt(recv, 'lost_packets') ?? numAt(sum, 'lost_packets');
  const seconds = numAt(recv, 'seconds');
  const sentBps = numAt(sent, 'bits_per_second');
  const sentPackets = numAt(sent, 'packets') ?? packets;
  if (packets === undefined || lost === undefined || seconds === undefined || sentBps === undefined || sentPackets === undefined) {
    throw new Error('iperf3 JSON has no UDP end.sum (packets, lost_packets)');
  }
  const kept = packets > 0 ? 1 - lost / packets : 0;
  const hasReceived = path(j, 'end', 'sum_received') !== undefined;
  const bps = hasReceived ? (numAt(recv, 'bits_per_second') ?? 0) : sentBps * kept;
  const bytes = hasReceived ? (numAt(recv, 'bytes') ?? 0) : (numAt(sum, 'bytes') ?? 0) * kept;
  return {
    offeredMbps,
    datagramBytes,
    bufferBytes,
    sentMbps: sentBps / 1e6,
    mbps: bps / 1e6,
    sentPackets,
    receivedPackets: packets - lost,
    lossPercent: sentPackets > 0 ? (100 * Math.max(0, sentPackets - (packets - lost))) / sentPackets : 0,
    iperfPackets: packets,
    iperfLostPackets: lost,
    iperfLostPercent: numAt(recv, 'lost_percent') ?? (packets > 0 ? (100 * lost) / packets : 0),
    jitterMs: numAt(recv, 'jitter_ms') ?? 0,
    bytes,
    seconds,
  };
}

/** iperf3 -u from c at `rateMbps` for `seconds`, datagrams of `datagramBytes`, -w `bufferBytes`. */
export async function runIperf3Udp(
  c: Namespace,
  host: string,
  port: number,
  seconds: number,
  rateMbps: number,
  datagramBytes: number,
  bufferBytes: number,
): Promise<UdpResult> {
  const r = await c.exec(
    [
      'iperf3',
      '-c',
      host,
      '-p',
      String(port),
      '-u',
      '-b',
      `${rateMbps}M`,
      '-l',
      String(datagramBytes),
      '-w',
      String(bufferBytes),
      '-t',
      String(seconds),
      '-J',
      '--connect-timeout',
      '5000',
    ],
    { allowFail: true, timeoutMs: (seconds + 30) * 1000 },
  );
  const parsed = parseIperf3Udp(r.stdout, rateMbps, datagramBytes, bufferBytes);
  if (r.code !== 0) throw new Error(`iperf3 exited with code ${r.code}: ${r.stderr.slice(0, 300)}`);
  return parsed;
}

/** Parse the report of `sockperf ping-pong --full-rtt`. */
export function parseSockperf(output: string, msgBytes: number): RrResult {
  const text = stripVTControlCharacters(output); // sockperf colours its report
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
  mode: ClientResult['mode'],
  host: string,
  port: number,
  seconds: number,
  max: number,
  /** SIZE (rr, cps, socks-cps), DOMAIN (dns) or PATH (ttfb). */
  last: number | string,
  /** socks-cps: PROXY_HOST PROXY_PORT. */
  more: readonly string[] = [],
): Promise<ClientResult> {
  const r = await c.exec([process.execPath, netcli, mode, host, String(port), String(seconds), String(max), String(last), ...more], {
    allowFail: true,
    timeoutMs: (seconds + 30) * 1000,
  });
  const res = parseClient(r.stdout, r.stderr);
  const what = mode === 'rr' ? 'round trip' : mode === 'cps' || mode === 'socks-cps' ? 'connection' : mode === 'ttfb' ? 'HTTP request' : 'DNS query';
  if (res.count === 0) throw new Error(`no ${what} completed: ${res.firstError ?? 'unknown error'}`);
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
  return cpsResult(await runClient(c, netcli, 'cps', host, port, seconds, max, size));
}

function cpsResult(r: ClientResult): CpsResult {
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

/**
 * The connections/s ceiling (netcli socks-cps): sequential connections like runCps, but made by
 * a SOCKS5 client straight to the proxy (pipelined greeting and CONNECT to `host:port`).
 */
export async function runSocksCps(
  c: Namespace,
  netcli: string,
  host: string,
  port: number,
  proxyHost: string,
  proxyPort: number,
  seconds: number,
  max: number,
  size: number,
): Promise<CpsResult> {
  return cpsResult(await runClient(c, netcli, 'socks-cps', host, port, seconds, max, size, [proxyHost, String(proxyPort)]));
}

/** Sequential HTTP GETs of `path` (netcli ttfb), each on a new connection: time to first byte. */
export async function runTtfb(c: Namespace, netcli: string, host: string, port: number, seconds: number, max: number, path: string): Promise<TtfbResult> {
  const r = await runClient(c, netcli, 'ttfb', host, port, seconds, max, path);
  if (r.stoppedBy === 'errors') throw new Error(`HTTP requests stopped after ${r.count}: ${r.firstError ?? 'error'}`);
  const out: TtfbResult = { requests: r.count, errors: r.errors, meanUs: r.meanUs, p50Us: r.p50Us, p99Us: r.p99Us, maxUs: r.maxUs, stoppedBy: r.stoppedBy, activeS: r.elapsedS };
  if (r.firstError !== undefined) out.firstError = r.firstError;
  return out;
}

/** Sequential DNS queries (netcli dns): A q<N>.`domain`, a new name each query. */
export async function runDns(
  c: Namespace,
  netcli: string,
  host: string,
  port: number,
  seconds: number,
  max: number,
  domain: string,
  query: string,
): Promise<DnsResult> {
  const r = await runClient(c, netcli, 'dns', host, port, seconds, max, domain);
  if (r.stoppedBy === 'errors') throw new Error(`DNS queries stopped after ${r.count} answers: ${r.firstError ?? 'error'}`);
  const out: DnsResult = {
    query,
    queries: r.count,
    errors: r.errors,
    rate: r.rate,
    meanUs: r.meanUs,
    p50Us: r.p50Us,
    p99Us: r.p99Us,
    maxUs: r.maxUs,
    stoppedBy: r.stoppedBy,
    activeS: r.elapsedS,
  };
  if (r.firstError !== undefined) out.firstError = r.firstError;
  return out;
}

/** `tunroute status --json` of the daemon listening on `controlPath` (its own counters), or undefined. */
export async function tunrouteStatus(cli: string, controlPath: string): Promise<unknown> {
  const r = await runCommand([process.execPath, cli, 'status', '--json', '--control', controlPath], {
    allowFail: true,
    timeoutMs: 15_000,
  }).catch(() => undefined);
  if (!r || r.code !== 0) return undefined;
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    return undefined;
  }
}

/** MTU of `ifname` in `ns` as the kernel reports it, or null. */
export async function readMtu(ns: Namespace, ifname: string): Promise<number | null> {
  const r = await ns.exec(['cat', `/sys/class/net/${ifname}/mtu`], { allowFail: true, timeoutMs: 5000 });
  const n = Number(r.stdout.trim());
  return r.code === 0 && Number.isInteger(n) ? n : null;
}
