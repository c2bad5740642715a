/**
 * The API listener on loopback with a fake daemon: the Clash API's shapes against the reference
 * fixtures (test/fixtures/clash-api), its streams over WebSocket and chunked HTTP, the secret on
 * every endpoint, closed CORS, the loopback-only rule, and /metrics through a text-format parser.
 */
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { pino } from 'pino';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { LogTap, tapLogger } from '../../src/api/log-tap.js';
import { resolveSecret } from '../../src/api/secret.js';
import { isTunrouteError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { loadConfig } from '../../src/config/load.js';
import type { Ipv4Endpoint } from '../../src/net/endpoint.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { fakeDaemon, fixture, parsePrometheusText, sampleValue, SECRET, shapeMismatches, type FakeDaemon } from './api-harness.js';

/** An address with port 0 (any free port), which the config's parser refuses. */
function ep(host: string): Ipv4Endpoint {
  return { host, port: 0, kind: 'ipv4', addr: ipToU32(host)! };
}

let daemon: FakeDaemon;
let api: ApiServer;
let logs: LogTap;

async function start(over: Partial<Parameters<typeof startApiServer>[0]> = {}): Promise<ApiServer> {
  return startApiServer({
    listen: ep('127.0.0.1'),
    allowRemote: false,
    secret: SECRET,
    allowOrigins: [],
    source: daemon.source,
    logs,
    logger: silentLogger(),
    ...over,
  });
}

beforeEach(async () => {
  daemon = fakeDaemon();
  logs = new LogTap();
  api = await start();
});
afterEach(async () => {
  await api.close();
});

const auth = { authorization: `Bearer ${SECRET}` };

async function get(path: string, headers: Record<string, string> = auth, method = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const r = await fetch(`${api.url}${path}`, { method, headers, redirect: 'manual' });
  return { status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() };
}
async function getJson(path: string): Promise<unknown> {
  const r = await get(path);
  expect(r.status, `${path}: ${r.body}`).toBe(200);
  return JSON.parse(r.body);
}

/** The first `n` messages of a WebSocket stream, parsed. */
function wsMessages(path: string, n: number, headers: Record<string, string> = {}): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${api.url.replace('http', 'ws')}${path}`, { headers });
    const got: unknown[] = [];
    ws.on('message', (d: Buffer) => {
      got.push(JSON.parse(d.toString('utf8')));
      if (got.length === n) {
        ws.close();
        resolve(got);
      }
    });
    ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.on('error', reject);
  });
}

/** The first `n` JSON lines of a chunked HTTP stream. */
function httpLines(path: string, n: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const req = request(`${api.url}${path}`, { headers: auth }, (res) => {
      let buf = '';
      const got: unknown[] = [];
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0 && got.length < n) {
          got.push(JSON.parse(buf.slice(0, nl)));
          buf = buf.slice(nl + 1);
        }
        if (got.length === n) {
          req.destroy();
          resolve(got);
        }
      });
    });
    req.on('error', (e) => (e.message === 'socket hang up' ? undefined : reject(e)));
    req.end();
  });
}

describe('the Clash API answers with the shapes dashboards read', () => {
  for (const name of ['version', 'configs', 'rules', 'connections']) {
    it(`/${name}`, async () => {
      expect(shapeMismatches(fixture(name), await getJson(`/${name}`))).toEqual([]);
    });
  }

  it('/proxies (keyed by name: each proxy and the GLOBAL selector have the reference fields)', async () => {
    type Proxies = { proxies: Record<string, unknown> };
    const ref = fixture('proxies') as Proxies;
    const ours = (await getJson('/proxies')) as Proxies;
    expect(shapeMismatches(ref.proxies.GLOBAL, ours.proxies.GLOBAL)).toEqual([]);
    for (const [name, p] of Object.entries(ours.proxies)) if (name !== 'GLOBAL') expect(shapeMismatches(ref.proxies.DIRECT, p), name).toEqual([]);
  });

  it('/connections lists TCP and UDP flows with per-flow bytes, start, chain and the fake-IP name', async () => {
    const c = (await getJson('/connections')) as { connections: Array<{ id: string; metadata: Record<string, string>; upload: number; download: number; start: string; chains: string[] }>; uploadTotal: number };
    expect(c.connections.map((x) => x.id)).toEqual(['tcp-1', 'tcp-2', 'udp-1']);
    const [plain, named, udp] = c.connections;
    expect(plain.metadata).toMatchObject({ network: 'tcp', sourceIP: '198.18.0.1', sourcePort: '5000', destinationIP: '10.0.0.1', destinationPort: '80', host: '' });
    expect(named.metadata).toMatchObject({ destinationIP: '', host: 'example.com', destinationPort: '443', dnsMode: 'fakeip' });
    expect(udp.metadata.network).toBe('udp');
    expect(plain).toMatchObject({ upload: 100, download: 2000, chains: ['proxy'] });
    expect(Date.parse(plain.start)).toBeLessThanOrEqual(Date.now() - 1500);
    expect(c.uploadTotal).toBe(1000);
  });

  it('/rules maps CIDR and domain rules, protocol and ports as AND, and ends with Match', async () => {
    const r = (await getJson('/rules')) as { rules: Array<{ type: string; payload: string; proxy: string }> };
    expect(r.rules).toEqual([
      { type: 'IPCIDR', payload: '10.0.0.0/8', proxy: 'proxy', size: -1 },
      { type: 'AND', payload: '((DomainSuffix,example.com) && (Network,tcp) && (DstPort,443))', proxy: 'block', size: -1 },
      { type: 'Match', payload: '', proxy: 'proxy', size: -1 },
    ]);
  });

  it('/proxies lists the outbounds and a GLOBAL selector on the default', async () => {
    const p = (await getJson('/proxies')) as { proxies: Record<string, { type: string; now?: string }> };
    expect(p.proxies.proxy.type).toBe('Socks5');
    expect(p.proxies.block.type).toBe('Reject');
    expect(p.proxies.GLOBAL).toMatchObject({ type: 'Selector', now: 'proxy' });
  });

  it('DELETE /connections/:id closes that flow; an unknown id is 404; DELETE /connections closes all', async () => {
    expect((await get('/connections/tcp-2', auth, 'DELETE')).status).toBe(204);
    expect(daemon.closed).toEqual(['tcp-2']);
    expect((await get('/connections/tcp-2', auth, 'DELETE')).status).toBe(404);
    expect((await get('/connections/nonsense', auth, 'DELETE')).status).toBe(404);
    expect((await get('/connections', auth, 'DELETE')).status).toBe(204);
    expect(daemon.closed).toEqual(['tcp-2', 'tcp-1', 'udp-1']);
  });
});

describe('streams', () => {
  it('/connections over WebSocket: the connections object, again each interval', async () => {
    const [first, second] = (await wsMessages(`/connections?interval=100&token=${SECRET}`, 2));
    expect(shapeMismatches(fixture('connections'), first)).toEqual([]);
    expect(shapeMismatches(fixture('connections'), second)).toEqual([]);
  });

  it('/traffic over WebSocket and over chunked HTTP: bytes each way in the last second', async () => {
    const ws = wsMessages(`/traffic?token=${SECRET}`, 2);
    const http = httpLines('/traffic', 2);
    // Bytes move between the samples: the second sample shows them.
    setTimeout(() => {
      daemon.bytes.up += 300;
      daemon.bytes.down += 7000;
    }, 1100);
    const [w, h] = await Promise.all([ws, http]);
    for (const m of [...w, ...h]) expect(shapeMismatches(fixture('traffic'), m)).toEqual([]);
    expect(w.concat(h).some((m) => (m as { down: number }).down === 7000)).toBe(true);
  });

  it('/memory over WebSocket and HTTP', async () => {
    const [w] = await wsMessages('/memory', 1, auth);
    expect(shapeMismatches(fixture('memory'), w)).toEqual([]);
    const [h] = await httpLines('/memory', 1);
    expect((h as { inuse: number }).inuse).toBeGreaterThan(0);
  });

  it('/logs?level= streams the lines the logger writes, at or above the level', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
    tapLogger(log, logs);
    const got = wsMessages(`/logs?level=warning&token=${SECRET}`, 1);
    await new Promise((r) => setTimeout(r, 100));
    log.info('not this one');
    log.warn({ flow: 7 }, 'upstream failed');
    const [m] = await got;
    expect(shapeMismatches(fixture('logs'), m)).toEqual([]);
    expect(m).toEqual({ type: 'warning', payload: 'upstream failed (flow=7)' });
    expect(lines).toHaveLength(2); // the logger's own destination still gets everything
    expect((await get('/logs?level=loud')).status).toBe(400);
  });
});

describe('access', () => {
  const endpoints = ['/', '/ui/', '/ui/app.js', '/version', '/configs', '/rules', '/proxies', '/connections', '/traffic', '/memory', '/logs', '/metrics', '/tunroute/status', '/tunroute/plan', '/tunroute/why?addr=1.2.3.4', '/tunroute/dns'];

  it('every endpoint answers 401 without the secret, and with a wrong one', async () => {
    for (const p of endpoints) {
      for (const headers of [{}, { authorization: 'Bearer wrong' }] as Array<Record<string, string>>) {
        const r = await get(p, headers);
        expect(r.status, p).toBe(401);
      }
      expect((await get(`${p}${p.includes('?') ? '&' : '?'}token=wrong`, {})).status, p).toBe(401);
    }
    expect(JSON.parse((await get('/version', {})).body)).toEqual(fixture('unauthorized'));
    expect((await get('/connections/tcp-1', {}, 'DELETE')).status).toBe(401);
    expect(daemon.closed).toEqual([]);
    // The page answers 401 with the login form, which is all it shows.
    const page = await get('/ui/', {});
    expect(page.body).toContain('action="/ui/login"');
    expect(page.body).not.toContain(SECRET);
  });

  it('a WebSocket without the secret is refused with 401', async () => {
    await expect(wsMessages('/traffic', 1)).rejects.toThrow('HTTP 401');
    await expect(wsMessages('/connections?token=nope', 1)).rejects.toThrow('HTTP 401');
  });

  it('the login form sets an HttpOnly SameSite cookie that opens the page and the API', async () => {
    const bad = await fetch(`${api.url}/ui/login`, { method: 'POST', body: 'secret=nope', headers: { 'content-type': 'application/x-www-form-urlencoded' }, redirect: 'manual' });
    expect(bad.status).toBe(401);
    const ok = await fetch(`${api.url}/ui/login`, { method: 'POST', body: `secret=${SECRET}`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, redirect: 'manual' });
    expect(ok.status).toBe(303);
    const cookie = ok.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(SECRET);
    const jar = { cookie: cookie.split(';')[0] };
    expect((await get('/ui/', jar)).status).toBe(200);
    expect((await get('/version', jar)).status).toBe(200);
    expect((await get('/ui/uPlot.iife.min.js', jar)).status).toBe(200);
  });

  it('CORS is closed: another origin gets 403, also for WebSockets; an allowed origin gets its header', async () => {
    expect((await get('/version', { ...auth, origin: 'http://evil.example' })).status).toBe(403);
    await expect(wsMessages(`/traffic?token=${SECRET}`, 1, { origin: 'http://evil.example' })).rejects.toThrow('HTTP 403');
    expect((await get('/version', { ...auth, origin: api.url })).status).toBe(200);
    await api.close();
    api = await start({ allowOrigins: ['http://dash.example'] });
    const r = await get('/version', { ...auth, origin: 'http://dash.example' });
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBe('http://dash.example');
    expect((await get('/version', { origin: 'http://dash.example' }, 'OPTIONS')).status).toBe(204);
  });

  it('refuses a non-loopback address unless allowRemote', async () => {
    const e = await start({ listen: ep('0.0.0.0') }).catch((x: unknown) => x);
    expect(isTunrouteError(e) && e.message).toMatch(/not a loopback address: set ui.allowRemote: true/);
    expect(() => loadConfig({ file: undefined, flags: { proxy: 'socks5://127.0.0.1:1080', ui: '0.0.0.0:9090' } })).toThrow(/ui\.allowRemote: true/);
  });

  it('--ui bare listens on 127.0.0.1:9090; without it the dashboard is off', () => {
    expect(loadConfig({ flags: { proxy: 'socks5://127.0.0.1:1080', ui: true } }).ui.listen?.port).toBe(9090);
    expect(loadConfig({ flags: { proxy: 'socks5://127.0.0.1:1080', ui: '127.0.0.1:9191' } }).ui.listen?.port).toBe(9191);
    expect(loadConfig({ flags: { proxy: 'socks5://127.0.0.1:1080' } }).ui.listen).toBeUndefined();
  });
});

describe('the secret', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tr-ui-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is generated once, kept 0600 in the state dir, and read back after', () => {
    const state = join(dir, 'state');
    const a = resolveSecret(undefined, state, 'up');
    expect(a.generated).toBe(true);
    expect(a.value.length).toBeGreaterThanOrEqual(32);
    expect(statSync(a.file!).mode & 0o777).toBe(0o600);
    expect(readFileSync(a.file!, 'utf8').trim()).toBe(a.value);
    const b = resolveSecret(undefined, state, 'up');
    expect(b).toMatchObject({ generated: false, value: a.value });
    expect(resolveSecret('configured-secret', state, 'up')).toEqual({ value: 'configured-secret', generated: false });
  });
});

describe('/metrics', () => {
  it('parses as Prometheus text, and its counters move with traffic', async () => {
    const r = await get('/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const before = parsePrometheusText(r.body);
    for (const name of ['tunroute_flow_bytes_total', 'tunroute_drops_total', 'tunroute_outbound_attempts_total', 'tunroute_outbound_errors_total', 'tunroute_dns_queries_total', 'tunroute_tunnel_handshakes_total', 'tunroute_route_changes_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) {
      expect(before.has(name), name).toBe(true);
    }
    expect(before.get('tunroute_flow_bytes_total')?.type).toBe('counter');
    expect(sampleValue(before, 'tunroute_flow_bytes_total', { proto: 'tcp', direction: 'down' })).toBe(5000);
    expect(sampleValue(before, 'tunroute_outbound_errors_total', { outbound: 'proxy', proto: 'tcp', reason: 'refused' })).toBe(1);
    expect(sampleValue(before, 'tunroute_flows_open', { proto: 'tcp' })).toBe(2);
    // UDP has the same rows, from the UDP relay and the outbound's UDP counters.
    expect(sampleValue(before, 'tunroute_flow_bytes_total', { proto: 'udp', direction: 'down' })).toBe(900);
    expect(sampleValue(before, 'tunroute_flows_open', { proto: 'udp' })).toBe(1);
    expect(sampleValue(before, 'tunroute_flows_total', { proto: 'udp' })).toBe(6);
    expect(sampleValue(before, 'tunroute_dns_queries_total', { result: 'failed' })).toBe(1);
    expect(sampleValue(before, 'tunroute_outbound_attempts_total', { outbound: 'proxy', proto: 'udp' })).toBe(4);
    expect(sampleValue(before, 'tunroute_outbound_errors_total', { outbound: 'proxy', proto: 'udp', reason: 'timeout' })).toBe(1);
    expect(sampleValue(before, 'tunroute_outbound_attempts_total', { outbound: 'block', proto: 'tcp' })).toBe(0);

    daemon.bytes.down += 12345;
    daemon.drops.bad_tcp_checksum += 3;
    const after = parsePrometheusText((await get('/metrics')).body);
    expect(sampleValue(after, 'tunroute_flow_bytes_total', { proto: 'tcp', direction: 'down' })).toBe(5000 + 12345);
    expect(sampleValue(after, 'tunroute_drops_total', { reason: 'bad_tcp_checksum' })).toBe(3);
  });

  it('the parser refuses what is not the text format', () => {
    expect(() => parsePrometheusText('foo 1\n')).toThrow(/undeclared family/);
    expect(() => parsePrometheusText('# TYPE foo counter\nfoo{a=b} 1\n')).toThrow(/bad labels|not a sample/);
    expect(() => parsePrometheusText('# TYPE foo counter\nfoo one\n')).toThrow(/not a number/);
  });
});

describe('tunroute endpoints for the page', () => {
  it('status, plan, why and DNS answers', async () => {
    expect(((await getJson('/tunroute/status')) as { device: { name: string } }).device.name).toBe('tun0');
    expect(await getJson('/tunroute/plan')).toEqual({ lines: ['plan: full tunnel', 'route 0.0.0.0/1 dev tun0'] });
    expect(await getJson('/tunroute/why?addr=1.2.3.4')).toEqual({ text: '1.2.3.4 enters tun0' });
    expect(await getJson('/tunroute/dns')).toEqual({ answers: [['example.com', '198.18.0.5']] });
    expect((await get('/tunroute/why?addr=1.2.3.4&proto=sctp')).status).toBe(400);
  });
});
