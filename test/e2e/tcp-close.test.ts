/**
 * How TCP connections end through tunroute, compared with the direct path: the app
 * (fixtures/tcp-client.mjs in ns c) plays each scenario once against 10.99.0.2 directly and once
 * through tun0; the server (fixtures/tcp-server.mjs in ns s) reports what it saw. Both ends must
 * observe the same sequence of events (data, EOF, error code, close) and the same bytes.
 *
 * Two upstreams: dante (10.66.1.7, the default outbound), and a minimal SOCKS5 server that
 * passes resets on as resets (fixtures/tcp-socks-faithful.mjs; a rule sends 10.66.1.8 to it).
 * dante, like microsocks, answers a reset from the destination with a FIN to its client, so
 * through dante no SOCKS client can see ECONNRESET; the faithful proxy shows that tunroute
 * passes on what the proxy tells it. Two more rules lead to dead proxies: a port with no
 * listener, and a second dante that one test stops.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDante, type LabProcess } from '../../tools/lab/index.js';
import { e2eAvailable, finalCounters } from '../helpers/e2e.js';
import { SCENARIOS, SERVER_BYTES, APP_BYTES, pattern, sha256 } from './fixtures/tcp-common.mjs';
import { DEST, DEST2, DIRECT, PROXY, ROUTE, createTcpLab, fixture, jsonLine, startTunroute, waitFor, type TcpLab } from './tcp-lab.js';

const run = e2eAvailable('TCP through SOCKS5: how connections end');

interface Observed {
  events: string[];
  recvBytes: number;
  recvSha256: string;
  elapsedMs: number;
  errorAtMs?: number;
}

interface ClientResult extends Observed {
  scenario: string;
  sentSha256: string;
  connectMs?: number;
  reply?: { bytes: number; sha256: string } | null;
  afterReply?: { bytes: number; sha256: string };
  timedOut: boolean;
}

interface ServerRecord extends Observed {
  scenario: string;
  remote: string;
}

const APP_SHA: string = sha256(pattern('app', APP_BYTES));
const SERVER_SHA: string = sha256(pattern('server', SERVER_BYTES));
const PORTS: Record<string, number> = SCENARIOS;
/** A port nothing listens on, behind tunroute and directly. */
const CLOSED_PORT = 7999;
/** Routed to an outbound whose SOCKS server port has no listener. */
const DEST_DEAD = '10.66.1.9';
/** Routed to a second dante that a test stops. */
const DEST_STOPPED = '10.66.1.10';

describe.skipIf(!run)('TCP through SOCKS5: how connections end, compared with the direct path (lab)', () => {
  let t: TcpLab;
  let server: LabProcess;
  let up: LabProcess;
  let dante2: LabProcess;

  beforeAll(async () => {
    t = await createTcpLab();
    await t.s.exec(['ip', 'addr', 'add', `${DEST_STOPPED}/32`, 'dev', 'lo']);
    dante2 = await startDante(t.s, { listen: DIRECT, port: 1082 });
    server = t.s.spawn(['node', fixture('tcp-server.mjs')], { name: 'tcp-server' });
    const faithful = t.s.spawn(['node', fixture('tcp-socks-faithful.mjs'), DIRECT, '1085'], { name: 'socks-faithful' });
    await server.waitForLine(/^listening/, 10_000);
    await faithful.waitForLine(/^listening/, 10_000);
    const conf = join(t.lab.tmpDir, 'tcp-close.json');
    writeFileSync(
      conf,
      JSON.stringify({
        outbounds: [
          { name: 'faithful', type: 'socks5', url: `socks5://${DIRECT}:1085` },
          { name: 'dead', type: 'socks5', url: `socks5://${DIRECT}:1` },
          { name: 'dante2', type: 'socks5', url: `socks5://${DIRECT}:1082` },
        ],
        rules: [
          { cidrs: [`${DEST2}/32`], outbound: 'faithful' },
          { cidrs: [`${DEST_DEAD}/32`], outbound: 'dead' },
          { cidrs: [`${DEST_STOPPED}/32`], outbound: 'dante2' },
        ],
      }),
    );
    up = (await startTunroute(t.c, ['-c', conf, '--route', ROUTE, '--proxy', PROXY, '--log-level', 'debug'])).proc;
  });
  afterAll(async () => {
    await t?.lab.destroy();
  });

  function serverRecords(scenario: string): ServerRecord[] {
    return server
      .output()
      .stdout.split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as ServerRecord)
      .filter((r) => r.scenario === scenario);
  }

  /** One run of the client, and the server's record of that connection (when there is one). */
  async function play(scenario: string, host: string, port = PORTS[scenario]): Promise<{ client: ClientResult; server?: ServerRecord }> {
    const before = serverRecords(scenario).length;
    const r = await t.c.exec(['node', fixture('tcp-client.mjs'), host, String(port), scenario, '10000'], { timeoutMs: 20_000 });
    const client = jsonLine<ClientResult>(r.stdout, `tcp-client ${scenario} ${host}`);
    if (port !== PORTS[scenario]) return { client };
    const srv = await waitFor(`the server's record of ${scenario} from ${host}`, () => serverRecords(scenario)[before], 5000);
    return { client, server: srv };
  }

  /** Direct first, then through tunroute to `dest`; both must match, end to end. */
  async function both(scenario: string, dest: string) {
    const direct = await play(scenario, DIRECT);
    const via = await play(scenario, dest);
    const ctx = (): string => `direct: ${JSON.stringify(direct)}\nvia tunroute: ${JSON.stringify(via)}\n${up.outputTail(3000)}`;
    expect(via.client.timedOut, ctx()).toBe(false);
    expect(via.client.events, ctx()).toEqual(direct.client.events);
    expect(via.server?.events, ctx()).toEqual(direct.server?.events);
    for (const k of ['recvBytes', 'recvSha256'] as const) {
      expect(via.client[k], `client ${k}\n${ctx()}`).toBe(direct.client[k]);
      expect(via.server?.[k], `server ${k}\n${ctx()}`).toBe(direct.server?.[k]);
    }
    return { direct, via };
  }

  describe.each([
    { upstream: 'dante', dest: DEST },
    { upstream: 'a proxy that passes resets on', dest: DEST2 },
  ])('through $upstream', ({ dest }) => {
    it('a server that closes first: the app reads everything, then EOF, then closes', async () => {
      const { via } = await both('server-close', dest);
      expect(via.client.events).toEqual(['connect', 'data', 'end', 'close:false']);
      expect(via.client.recvBytes).toBe(SERVER_BYTES);
      expect(via.client.recvSha256).toBe(SERVER_SHA);
    });

    it('an app that closes first: the server reads everything, then EOF', async () => {
      const { via } = await both('app-close', dest);
      expect(via.client.events).toEqual(['connect', 'close:false']);
      expect(via.server?.events).toEqual(['data', 'end', 'close:false']);
      expect(via.server?.recvBytes).toBe(APP_BYTES);
      expect(via.server?.recvSha256).toBe(APP_SHA);
    });

    it('the app half-closes (shutdown SHUT_WR) and keeps reading the answer sent after its EOF', async () => {
      const { via } = await both('app-halfclose', dest);
      expect(via.client.events).toEqual(['connect', 'data', 'end', 'close:false']);
      expect(via.server?.events).toEqual(['data', 'end', 'close:false']);
      expect(via.client.reply).toEqual({ bytes: APP_BYTES, sha256: APP_SHA });
      expect(via.client.afterReply).toEqual({ bytes: SERVER_BYTES, sha256: SERVER_SHA });
    });

    it('the server half-closes and keeps reading what the app sends after the EOF', async () => {
      // The upstream socket must stay half-open when the server's FIN arrives (allowHalfOpen),
      // or the server sees our FIN before the app's answer and the answer is lost.
      const { via } = await both('server-halfclose', dest);
      expect(via.client.events).toEqual(['connect', 'data', 'end', 'close:false']);
      expect(via.client.recvSha256).toBe(SERVER_SHA);
      expect(via.server?.events).toEqual(['data', 'end', 'close:false']);
      expect(via.server?.recvBytes).toBe(APP_BYTES);
      expect(via.server?.recvSha256).toBe(APP_SHA);
    });

    it('a destination with no listener gives the app ECONNREFUSED within 1 s', async () => {
      const direct = await play('refused', DIRECT, CLOSED_PORT);
      const via = await play('refused', dest, CLOSED_PORT);
      const ctx = `direct: ${JSON.stringify(direct.client)}\nvia: ${JSON.stringify(via.client)}`;
      expect(direct.client.events, ctx).toEqual(['error:ECONNREFUSED', 'close:true']);
      expect(via.client.events, ctx).toEqual(direct.client.events);
      expect(via.client.errorAtMs, ctx).toBeLessThan(1000);
    });
  });

  it('a reset from the server reaches the app as ECONNRESET (through a proxy that passes resets on)', async () => {
    const { via } = await both('reset', DEST2);
    expect(via.client.events).toEqual(['connect', 'error:ECONNRESET', 'close:true']);
  });

  it('a reset from the server, through dante: the app sees the FIN dante sends instead, promptly', async () => {
    // dante closes its client connection with FIN when the destination resets (so does
    // microsocks): what every SOCKS client of dante sees. Not a hang, and nothing invented.
    const direct = await play('reset', DIRECT);
    const via = await play('reset', DEST);
    expect(direct.client.events).toEqual(['connect', 'error:ECONNRESET', 'close:true']);
    expect(via.server?.events).toEqual(direct.server?.events);
    expect(via.client.events).toEqual(['connect', 'end', 'close:false']);
    expect(via.client.elapsedMs).toBeLessThan(2000);
  });

  it('a SOCKS server port with no listener: the app gets ECONNREFUSED (RST) within 1 s', async () => {
    const { client } = await play('refused', DEST_DEAD, PORTS.echo);
    expect(client.events, JSON.stringify(client)).toEqual(['error:ECONNREFUSED', 'close:true']);
    expect(client.errorAtMs, JSON.stringify(client)).toBeLessThan(1000);
  });

  it('a SOCKS server that stops: its open connections end promptly, new ones get ECONNREFUSED within 1 s', async () => {
    const hold = t.c.spawn(['node', fixture('tcp-client.mjs'), DEST_STOPPED, String(PORTS.echo), 'hold', '15000'], { name: 'hold' });
    await hold.waitForLine(/"ready":true/, 10_000);
    const stopped = Date.now();
    await dante2.stop('SIGTERM', 3000);
    await hold.waitForExit(10_000);
    const endedMs = Date.now() - stopped;
    const held = jsonLine<ClientResult>(hold.output().stdout, 'the held client');
    const ctx = `${JSON.stringify(held)}\n${up.outputTail(2000)}`;
    expect(held.timedOut, ctx).toBe(false);
    // dante's processes die with their sockets: the kernel sends FIN (RST if bytes were unread).
    expect([
      ['connect', 'data', 'end', 'close:false'],
      ['connect', 'data', 'error:ECONNRESET', 'close:true'],
    ], ctx).toContainEqual(held.events);
    expect(endedMs, ctx).toBeLessThan(5000);

    const { client } = await play('refused', DEST_STOPPED, PORTS.echo);
    expect(client.events, JSON.stringify(client)).toEqual(['error:ECONNREFUSED', 'close:true']);
    expect(client.errorAtMs, JSON.stringify(client)).toBeLessThan(1000);
  });

  it('stops cleanly with no flow left behind, having counted the refusals', async () => {
    const exit = await up.stop('SIGTERM', 5000);
    expect(exit).toEqual({ code: 0, signal: null });
    const c = finalCounters(up) as unknown as { tcp: { flowsOpen: number; upstreamErrors: Record<string, number> } };
    expect(c.tcp.flowsOpen).toBe(0);
    expect(c.tcp.upstreamErrors.refused).toBeGreaterThanOrEqual(2);
    expect(c.tcp.upstreamErrors.proxy_down).toBeGreaterThanOrEqual(2);
  });
});
