/**
 * The lab the UDP-through-SOCKS5 end-to-end files share (udp-*.test.ts):
 *
 *   ns c (the app + tunroute)                       ns s (upstreams)
 *   tun0 ← 10.66.1.0/24, 8.8.8.0/24                 lo: 10.66.1.7 (echo, iperf3, HTTP)
 *                                                       10.66.1.53 (dnsmasq: web.lab → 10.66.1.7)
 *                                                       8.8.8.8 (decoy dnsmasq: web.lab → 10.66.1.99)
 *   10.99.0.1 ───────────── veth ───────────────── 10.99.0.2: dante :1080 (UDP ASSOCIATE),
 *                                                             microsocks :1081 (CONNECT only)
 *
 * The decoy answers differently from the real upstream, so an answer tells which server
 * produced it: with `--dns hijack`, a query to 8.8.8.8 must come back with 10.66.1.7.
 * The fixtures (fixtures/udp-*.mjs) run inside the namespaces with `ip netns exec`.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import {
  Lab,
  startDante,
  startDnsmasq,
  startMicrosocks,
  type LabProcess,
  type Namespace,
  type NamespaceOptions,
  type VethLink,
} from '../../tools/lab/index.js';
import { finalCounters } from '../helpers/e2e.js';
import { fixture, jsonLine, startTunroute, waitFor } from './tcp-lab.js';

export { fixture, jsonLine, startTunroute, waitFor };

export const CLIENT = '10.99.0.1';
export const DIRECT = '10.99.0.2';
/** Echo server, iperf3 and HTTP server (on s's lo, reached through tun0). */
export const DEST = '10.66.1.7';
/** The DNS upstream the tests configure (dnsmasq on s's lo). */
export const DNS_IP = '10.66.1.53';
export const DNS_UPSTREAM = `${DNS_IP}:53`;
/** A "public resolver" in the route: a decoy dnsmasq that answers web.lab wrongly. */
export const DECOY_DNS = '8.8.8.8';
/** An address in the route where nothing listens. */
export const NOBODY = '10.66.1.99';
export const WEB_NAME = 'web.lab';
export const WEB_ADDR = DEST;
export const DECOY_ADDR = NOBODY;
export const ROUTES = ['10.66.1.0/24', '8.8.8.0/24'];
export const DANTE = `socks5://${DIRECT}:1080`;
export const MICROSOCKS = `socks5://${DIRECT}:1081`;
export const ECHO_PORT = 7001;

export interface UdpLabOptions {
  dante?: boolean;
  microsocks?: boolean;
  /** dnsmasq on 10.66.1.53 and the decoy on 8.8.8.8. */
  dns?: boolean;
  /** The UDP echo server on DEST:ECHO_PORT in s. */
  echo?: boolean;
  /** Extra sysctls inside s. */
  serverSysctls?: NamespaceOptions['sysctls'];
  /** Extra sysctls inside c (e.g. ports reserved for the app's own binds). */
  clientSysctls?: NamespaceOptions['sysctls'];
}

export interface UdpLab {
  lab: Lab;
  c: Namespace;
  s: Namespace;
  veth: VethLink;
  dante?: LabProcess;
  microsocks?: LabProcess;
  dnsmasq?: LabProcess;
  decoy?: LabProcess;
  echo?: LabProcess;
}

export async function createUdpLab(opts: UdpLabOptions = {}): Promise<UdpLab> {
  const lab = await Lab.create();
  try {
    const c = await lab.addNamespace('c', { tcpTwReuse: true, wideLocalPortRange: true, sysctls: opts.clientSysctls });
    const s = await lab.addNamespace('s', { tcpTwReuse: true, wideLocalPortRange: true, sysctls: opts.serverSysctls });
    const veth = await lab.link(c, s, { cidrA: `${CLIENT}/24`, cidrB: `${DIRECT}/24` });
    for (const ip of [DEST, DNS_IP, DECOY_DNS]) await s.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    const t: UdpLab = { lab, c, s, veth };
    if (opts.dante ?? true) t.dante = await startDante(s, { listen: DIRECT, port: 1080 });
    if (opts.microsocks) t.microsocks = await startMicrosocks(s, { listen: DIRECT, port: 1081 });
    if (opts.dns) {
      const log = ['--log-queries'];
      t.dnsmasq = await startDnsmasq(s, { listen: DNS_IP, records: { [WEB_NAME]: WEB_ADDR }, extraArgs: log });
      t.decoy = await startDnsmasq(s, { listen: DECOY_DNS, records: { [WEB_NAME]: DECOY_ADDR }, extraArgs: log });
    }
    if (opts.echo) {
      // Bound to DEST, not 0.0.0.0: replies to dante (10.99.0.2) would otherwise leave from
      // 10.99.0.2, the source the kernel picks for that destination, and reach the app from an
      // address it never sent to (correctly: dante is full-cone and tunroute reports the source).
      t.echo = s.spawn(['node', fixture('udp-echo-server.mjs'), DEST, String(ECHO_PORT)], { name: 'udp-echo' });
      await t.echo.waitForLine(/^listening/, 10_000);
    }
    return t;
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/** Write a tunroute config (JSON is YAML) into the lab's temp dir; returns its path. */
export function writeConfig(lab: Lab, name: string, config: Record<string, unknown>): string {
  const file = join(lab.tmpDir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** The args every UDP test gives `tunroute up`, after `-c FILE`. */
export function upArgs(config: string, proxy: string, extra: readonly string[] = []): string[] {
  return ['-c', config, ...ROUTES.flatMap((r) => ['--route', r]), '--proxy', proxy, ...extra];
}

// ---------------------------------------------------------------------------------------------
// Counters

export interface UdpCounters {
  stack: {
    datagramsIn: number;
    bytesIn: number;
    datagramsOut: number;
    bytesOut: number;
    fragmentedOut: number;
    icmpOut: number;
    refused: number;
    txDropped: number;
    replyDropped: number;
    flows: { open: number; created: number; expired: number; evicted: number; closed: number };
  };
  relay: {
    flowsOpen: number;
    flowsTotal: number;
    associations: number;
    datagramsUp: number;
    bytesUp: number;
    datagramsDown: number;
    bytesDown: number;
    dropped: number;
    icmpSent: number;
    dnsQueries: number;
    dnsAnswered: number;
    dnsFailed: number;
    upstreamErrors: Record<string, number>;
  };
  fragments: { fragments: number; reassembled: number; timedOut: number; evicted: number; drops: Record<string, number> };
  dns?: {
    queries: number;
    cacheHits: number;
    udpAnswers: number;
    tcpAnswers: number;
    truncatedRetries: number;
    udpTimeouts: number;
    failures: Record<string, number>;
  };
}

export interface FinalCounters {
  link: { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; txErrors: number };
  rxPackets: number;
  udpPackets: number;
  dropped: number;
  drops: Record<string, number>;
  udp: UdpCounters;
}

/** The counters tunroute logged when it stopped (it must have been stopped). */
export function finalUdpCounters(proc: LabProcess): FinalCounters {
  const c = finalCounters(proc) as unknown as FinalCounters | undefined;
  if (!c?.udp) throw new Error(`tunroute logged no final counters with "udp"; output tail:\n${proc.outputTail(3000)}`);
  return c;
}

/**
 * The raw `status` reply of a running daemon, read from its control socket (not through
 * `tunroute status`, whose schema drops fields it does not know, such as `udp` if the daemon
 * adds it). The socket is a path in the lab's temp dir, so the test process reaches it.
 */
export function rawStatus(control: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(control);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no status reply on ${control} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write('{"v":1,"cmd":"status"}\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      try {
        const r = JSON.parse(buf.slice(0, nl)) as { ok: boolean; data?: Record<string, unknown>; error?: string };
        if (r.ok && r.data) resolve(r.data);
        else reject(new Error(`status failed: ${r.error ?? buf}`));
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The tunroute process, seen from /proc

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** CPU time a process has used so far (user + system), in seconds (USER_HZ = 100 on Linux). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at ") ".
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * Objects by constructor name in a V8 heap snapshot (`--heapsnapshot-signal`), for the names
 * asked. A snapshot is taken after a full GC, so what it holds is reachable.
 */
export function heapObjectCounts(file: string, names: readonly string[]): Record<string, number> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const width = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const objectType = snap.snapshot.meta.node_types[0].indexOf('object');
  const wanted = new Map(names.map((n) => [n, 0]));
  for (let i = 0; i < snap.nodes.length; i += width) {
    if (snap.nodes[i + iType] !== objectType) continue;
    const name = snap.strings[snap.nodes[i + iName] ?? -1] ?? '';
    const n = wanted.get(name);
    if (n !== undefined) wanted.set(name, n + 1);
  }
  return Object.fromEntries(wanted);
}

/** Open file descriptors of a process (each UDP association holds two sockets). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The PID of tunroute itself: `ip netns exec` execs node, so it is the PID the lab started. */
export function tunroutePid(proc: LabProcess): number {
  const cmdline = readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0');
  if (!cmdline.some((a) => a.endsWith('cli/main.js'))) throw new Error(`pid ${proc.pid} is not tunroute: ${cmdline.join(' ')}`);
  return proc.pid;
}

// ---------------------------------------------------------------------------------------------
// Tools inside the namespaces

export interface DigResult {
  status: string;
  /** Addresses of the A records in the answer section. */
  answers: string[];
  /** "SERVER: 10.66.1.53#53(10.66.1.53) (UDP)" */
  server: string;
  raw: string;
  ms: number;
}

/** `dig @server name` in `ns` (UDP unless `+tcp` is in extra); never throws on a DNS failure. */
export async function dig(ns: Namespace, server: string, name: string, extra: readonly string[] = []): Promise<DigResult> {
  const started = Date.now();
  const r = await ns.exec(['dig', '+time=3', '+tries=2', ...extra, `@${server}`, name, 'A'], { allowFail: true, timeoutMs: 20_000 });
  const raw = r.stdout + r.stderr;
  const status = /status: ([A-Z]+)/.exec(raw)?.[1] ?? `no reply (exit ${r.code})`;
  const answers = [...raw.matchAll(/^\S+\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((m) => m[1] ?? '');
  const server_ = /^;; SERVER: (.*)$/m.exec(raw)?.[1] ?? '';
  return { status, answers, server: server_, raw, ms: Date.now() - started };
}

/** A packet capture in a namespace; `stop()` returns the lines tcpdump printed (one a packet). */
export interface Capture {
  stop(): Promise<string[]>;
}

/** `tcpdump -i IFACE -nn FILTER` in `ns`, resolved once it listens. */
export async function capture(ns: Namespace, iface: string, filter: readonly string[] = []): Promise<Capture> {
  const proc = ns.spawn(['tcpdump', '-i', iface, '-nn', '-l', '-U', '-tt', ...filter], { name: `tcpdump-${ns.role}-${iface}` });
  await proc.waitForLine(/listening on/, 10_000);
  return {
    async stop(): Promise<string[]> {
      // Let the last packets reach the ring before stopping.
      await new Promise((r) => setTimeout(r, 300));
      await proc.stop('SIGINT', 3000);
      return proc
        .output()
        .stdout.split('\n')
        .filter((l) => /^\d+\.\d+ /.test(l));
    },
  };
}

/** "1.2.3.4.567 > 5.6.7.8.53" from a tcpdump line: [src, sport, dst, dport]. */
export function endpoints(line: string): { src: string; sport: number; dst: string; dport: number } | undefined {
  const m = /IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+):/.exec(line);
  if (!m) return undefined;
  return { src: m[1] ?? '', sport: Number(m[2]), dst: m[3] ?? '', dport: Number(m[4]) };
}

/** Interface counters inside a namespace (`ip -s -j link`): rx/tx packets and drops. */
export async function linkStats(ns: Namespace, iface: string): Promise<{ rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } }> {
  const r = await ns.exec(['ip', '-s', '-j', 'link', 'show', 'dev', iface]);
  const j = JSON.parse(r.stdout) as { stats64: { rx: { packets: number; dropped: number }; tx: { packets: number; dropped: number } } }[];
  const s = j[0]?.stats64;
  if (!s) throw new Error(`no stats for ${iface}: ${r.stdout}`);
  return { rx: { packets: s.rx.packets, dropped: s.rx.dropped }, tx: { packets: s.tx.packets, dropped: s.tx.dropped } };
}

/** The Udp: line of /proc/net/snmp inside a namespace, as name → value. */
export async function udpSnmp(ns: Namespace): Promise<Record<string, number>> {
  const r = await ns.exec(['cat', '/proc/net/snmp']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = (lines[0] ?? '').split(/\s+/).slice(1);
  const values = (lines[1] ?? '').split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i] ?? NaN]));
}

/**
 * Packets each process's UDP sockets in `ns` dropped for a full receive buffer, from
 * `ss -uamnp` (the `d` of skmem), summed by process name. Only sockets still open count.
 */
export async function socketDrops(ns: Namespace): Promise<Record<string, number>> {
  const r = await ns.exec(['ss', '-uamnp'], { allowFail: true });
  const out: Record<string, number> = {};
  let proc = '';
  for (const line of r.stdout.split('\n')) {
    const who = /users:\(\("([^"]+)"/.exec(line);
    if (who) proc = who[1] ?? '';
    const d = /skmem:\(.*,d(\d+)\)/.exec(line);
    if (d && proc) out[proc] = (out[proc] ?? 0) + Number(d[1]);
  }
  return out;
}

/** b - a for every key. */
export function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(b).map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]));
}
