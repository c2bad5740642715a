/**
 * A fake running daemon for the API tests (counters the test moves by hand), the reference
 * shapes of test/fixtures/clash-api, and a small Prometheus text-format parser.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ApiSource } from '../../src/api/source.js';
import type { TcpFlowInfo } from '../../src/relay/tcp-relay.js';
import type { UdpFlowInfo } from '../../src/relay/udp-relay.js';
import { statusSnapshotOf } from '../../src/control/server.js';
import { emptyLinkStats } from '../../src/link/link.js';
import { newOutboundStats, newUdpOutboundStats } from '../../src/outbound/outbound.js';
import { newDropCounters } from '../../src/wire/drop.js';
import { parseCidr } from '../../src/net/ipv4.js';

export const SECRET = 'test-secret-0123456789';

export interface FakeDaemon {
  source: ApiSource;
  tcp: TcpFlowInfo[];
  udp: UdpFlowInfo[];
  bytes: { up: number; down: number };
  drops: ReturnType<typeof newDropCounters>;
  closed: string[];
}

export function fakeDaemon(): FakeDaemon {
  const d: FakeDaemon = {
    tcp: [
      { id: 1, src: '198.18.0.1:5000', dst: '10.0.0.1:80', outbound: 'proxy', state: 'ESTABLISHED', bytesUp: 100, bytesDown: 2000, ageMs: 1500 },
      { id: 2, src: '198.18.0.1:5001', dst: 'example.com:443', host: 'example.com', outbound: 'proxy', state: 'ESTABLISHED', bytesUp: 10, bytesDown: 20, ageMs: 500 },
    ],
    udp: [{ id: 1, src: '198.18.0.1:6000', dst: '10.0.0.1:53', outbound: 'dns', state: 'idle', bytesUp: 40, bytesDown: 80, ageMs: 100, idleMs: 50 }],
    bytes: { up: 1000, down: 5000 },
    drops: newDropCounters(),
    closed: [],
    source: undefined as unknown as ApiSource,
  };
  const outboundStats = { proxy: newOutboundStats(), block: newOutboundStats() };
  outboundStats.proxy.tcpAttempts = 3;
  outboundStats.proxy.tcpEstablished = 2;
  outboundStats.proxy.tcpFailures.refused = 1;
  outboundStats.proxy.udp = { ...newUdpOutboundStats(), attempts: 4, established: 3 };
  outboundStats.proxy.udp.failures.timeout = 1;
  const startedAt = new Date(Date.now() - 60_000);
  d.source = {
    role: 'up',
    version: '0.1.0-test',
    startedAt,
    logLevel: 'info',
    snapshot: () =>
      statusSnapshotOf(
        {
          link: { name: 'tun0', mtu: 1500, stats: { ...emptyLinkStats(), rxPackets: 7, rxBytes: d.bytes.up, txBytes: d.bytes.down } },
          plan: { prefixes: [1, 2, 3] },
          stats: () => ({
            packets: { rxPackets: 7, tcpPackets: 5, udpPackets: 2, icmpEchoReplied: 0, icmpEchoDropped: 0, fragments: 0, dropped: 0, drops: { ...d.drops } },
            tcp: { flowsOpen: d.tcp.length, flowsTotal: 9, refusedLimit: 0, refusedMemory: 0, refusedFds: 0, refusedUid: 0, refusedNoName: 0, upstreamErrors: newOutboundStats().tcpFailures, bytesUp: d.bytes.up, bytesDown: d.bytes.down },
            udp: { relay: { flowsOpen: d.udp.length, flowsTotal: 6, datagramsUp: 10, bytesUp: 400, datagramsDown: 9, bytesDown: 900, dropped: 0, dnsQueries: 8, dnsAnswered: 7, dnsFailed: 1 } },
            outbounds: outboundStats,
          }),
          flows: () => d.tcp,
          udpFlows: () => d.udp,
        },
        { version: '0.1.0-test', address: '198.18.0.1/15', startedAt },
      ),
    flows: () => d.tcp,
    udpFlows: () => d.udp,
    counters: () => ({ bytesUp: d.bytes.up, bytesDown: d.bytes.down, routeReplans: 0, routeChanges: 0, handshakes: 0 }),
    outbounds: () => [
      { name: 'block', kind: 'block', udp: false },
      { name: 'proxy', kind: 'socks5', udp: true },
    ],
    outboundStats: () => outboundStats,
    rules: () => ({
      rules: [
        { cidrs: [parseCidr('10.0.0.0/8')!], outbound: 'proxy' },
        { domains: ['*.example.com'], protocol: 'tcp', ports: [443], outbound: 'block' },
      ],
      defaultOutbound: 'proxy',
    }),
    closeFlow: (proto, id) => {
      const list = proto === 'tcp' ? d.tcp : d.udp;
      const i = list.findIndex((f) => f.id === id);
      if (i < 0) return false;
      list.splice(i, 1);
      d.closed.push(`${proto}-${id}`);
      return true;
    },
    planLines: () => ['plan: full tunnel', 'route 0.0.0.0/1 dev tun0'],
    why: (addr) => ({ text: `${addr} enters tun0` }),
    dnsAnswers: () => [['example.com', '198.18.0.5']],
  };
  return d;
}

/** A JSON value's shape: objects as their keys' shapes, arrays as their first element's. */
type Shape = string | { [k: string]: Shape } | [Shape];

function shapeOf(v: unknown): Shape {
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length === 0 ? ['empty'] : [shapeOf(v[0])];
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shapeOf(x)]));
  return typeof v;
}

/**
 * The fields of `reference` that `actual` lacks or has with another JSON type, as paths
 * ("connections[].metadata.host: missing"); empty when actual has the reference's shape.
 */
export function shapeMismatches(reference: unknown, actual: unknown, path = ''): string[] {
  const r = shapeOf(reference);
  const a = shapeOf(actual);
  const walk = (r: Shape, a: Shape, p: string): string[] => {
    if (typeof r === 'string') return typeof a === 'string' && a === r ? [] : [`${p || '.'}: ${JSON.stringify(a)} instead of ${r}`];
    if (Array.isArray(r)) {
      if (!Array.isArray(a)) return [`${p}: not an array`];
      if (r[0] === 'empty' || a[0] === 'empty') return [];
      return walk(r[0], a[0], `${p}[]`);
    }
    if (typeof a !== 'object' || Array.isArray(a)) return [`${p}: not an object`];
    return Object.entries(r).flatMap(([k, s]) => (k in a ? walk(s, a[k], `${p}.${k}`) : [`${p}.${k}: missing`]));
  };
  return walk(r, a, path);
}

export function fixture(name: string): unknown {
  return JSON.parse(readFileSync(fileURLToPath(new URL(`../fixtures/clash-api/${name}.json`, import.meta.url)), 'utf8'));
}

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"\s*(,|$)/y;
const SUFFIXES = ['_total', '_sum', '_count', '_bucket', '_created', '_info'];

/**
 * The Prometheus text exposition format (0.0.4), strictly: HELP and TYPE before a family's
 * samples, names and labels as the format allows, float values. Throws on anything else.
 */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const familyOf = (sample: string): PromFamily | undefined => {
    if (families.has(sample)) return families.get(sample);
    for (const s of SUFFIXES) if (sample.endsWith(s) && families.has(sample.slice(0, -s.length))) return families.get(sample.slice(0, -s.length));
    return undefined;
  };
  text.split('\n').forEach((line, i) => {
    const fail = (why: string): never => {
      throw new Error(`line ${i + 1} (${JSON.stringify(line)}): ${why}`);
    };
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (m === null) return; // a comment
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) fail('bad metric name');
      const f = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] };
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) fail('bad type');
        if (f.samples.length > 0) fail('TYPE after samples');
        f.type = rest;
      } else f.help = rest;
      families.set(name, f);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$/.exec(line);
    if (m === null) fail('not a sample');
    const [, name, labelText, valueText] = m!;
    const labels: Record<string, string> = {};
    if (labelText !== undefined && labelText.length > 2) {
      const body = labelText.slice(1, -1);
      LABEL.lastIndex = 0;
      while (LABEL.lastIndex < body.length) {
        const lm = LABEL.exec(body);
        if (lm === null) fail('bad labels');
        labels[lm![1]] = lm![2];
        if (lm![3] === '') break;
      }
    }
    // Go's ParseFloat, which Prometheus uses, takes NaN and Inf in any case (prom-client writes "Nan").
    const special = valueText.toLowerCase();
    const value = special === '+inf' || special === 'inf' ? Infinity : special === '-inf' ? -Infinity : special === 'nan' ? NaN : Number(valueText);
    if (Number.isNaN(value) && special !== 'nan') fail('value is not a number');
    const f = familyOf(name);
    if (f === undefined) fail(`sample of an undeclared family`);
    f!.samples.push({ name, labels, value });
  });
  return families;
}

/** The value of one sample (labels must match exactly), or undefined. */
export function sampleValue(fams: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of fams.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(labels);
      if (keys.length === Object.keys(s.labels).length && keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return undefined;
}
