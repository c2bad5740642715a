/**
 * TCP through SOCKS5, end to end in the lab (see tcp-lab.ts): curl moves 200 MB each way
 * through tunroute and dante intact; a small download works through microsocks; 1,000
 * connections at once each echo 100 KB intact; `tunroute status --json` shows the flows while
 * they run.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labBytesSha256, startHttpServer, startMicrosocks, type LabProcess } from '../../tools/lab/index.js';
import { CLI, e2eAvailable, finalCounters } from '../helpers/e2e.js';
import { APP_BYTES, SCENARIOS } from './fixtures/tcp-common.mjs';
import { DEST, DEST2, DIRECT, PROXY, ROUTE, createTcpLab, fixture, jsonLine, startTunroute, waitFor, type TcpLab } from './tcp-lab.js';

const run = e2eAvailable('TCP through SOCKS5: bulk, many connections, status');

const BIG = 200 * 1024 * 1024;
const HTTP_PORT = 8080;
const ECHO_PORT = SCENARIOS.echo;

interface ManySummary {
  n: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  failures: unknown[];
  pending: Record<string, number>;
  maxConnectMs: number;
  maxOpenAtOnce: number;
  elapsedMs: number;
  timedOut: boolean;
}

interface FlowInfo {
  id: number;
  src: string;
  dst: string;
  outbound: string;
  state: string;
  bytesUp: number;
  bytesDown: number;
  ageMs: number;
}

describe.skipIf(!run)('TCP through SOCKS5: bulk, many connections, status (lab)', () => {
  let t: TcpLab;
  let up: LabProcess;
  let control: string;

  beforeAll(async () => {
    t = await createTcpLab();
    await startHttpServer(t.s, { port: HTTP_PORT });
    await startMicrosocks(t.s, { listen: DIRECT, port: 1081 });
    const server = t.s.spawn(['node', fixture('tcp-server.mjs')], { name: 'tcp-server' });
    await server.waitForLine(/^listening/, 10_000);
    // 10.66.1.8 goes through microsocks; everything else in the route through dante.
    const conf = join(t.lab.tmpDir, 'tcp-socks.json');
    writeFileSync(
      conf,
      JSON.stringify({
        outbounds: [{ name: 'microsocks', type: 'socks5', url: `socks5://${DIRECT}:1081` }],
        rules: [{ cidrs: [`${DEST2}/32`], outbound: 'microsocks' }],
      }),
    );
    ({ proc: up, control } = await startTunroute(t.c, ['-c', conf, '--route', ROUTE, '--proxy', PROXY]));
  });
  afterAll(async () => {
    await t?.lab.destroy();
  });

  it('curl downloads 200 MB through dante, intact', async () => {
    const started = Date.now();
    const curl = t.c.sh(`set -o pipefail; curl -sS --fail --max-time 50 http://${DEST}:${HTTP_PORT}/bytes/${BIG} | sha256sum`, {
      timeoutMs: 55_000,
    });
    const want = labBytesSha256(BIG); // ~3 s of CPU here, while curl runs
    const r = await curl;
    const ms = Date.now() - started;
    process.stdout.write(`[tcp-socks] 200 MB download through tunroute+dante: ${ms} ms (${(BIG / 1e6 / (ms / 1000)).toFixed(0)} MB/s)\n`);
    expect(r.stdout.split(/\s/)[0]).toBe(want);
  });

  it('curl uploads 200 MB through dante, intact', { timeout: 90_000 }, async () => {
    const file = join(t.lab.tmpDir, 'upload.bin');
    const made = await t.c.sh(`set -o pipefail; head -c ${BIG} /dev/urandom | tee ${file} | sha256sum`, { timeoutMs: 30_000 });
    const want = made.stdout.split(/\s/)[0];
    const started = Date.now();
    const r = await t.c.exec(['curl', '-sS', '--fail', '--max-time', '50', '--data-binary', `@${file}`, `http://${DEST}:${HTTP_PORT}/upload`], {
      timeoutMs: 55_000,
    });
    const ms = Date.now() - started;
    process.stdout.write(`[tcp-socks] 200 MB upload through tunroute+dante: ${ms} ms (${(BIG / 1e6 / (ms / 1000)).toFixed(0)} MB/s)\n`);
    expect(JSON.parse(r.stdout)).toEqual({ bytes: BIG, sha256: want });
  });

  it('curl downloads 1 MB through microsocks, intact', async () => {
    const n = 1024 * 1024;
    const r = await t.c.sh(`set -o pipefail; curl -sS --fail --max-time 20 http://${DEST2}:${HTTP_PORT}/bytes/${n} | sha256sum`, { timeoutMs: 30_000 });
    expect(r.stdout.split(/\s/)[0]).toBe(labBytesSha256(n));
    // It went through microsocks: the server did not see dante's outgoing address.
    const ip = await t.c.exec(['curl', '-sS', '--fail', '--max-time', '10', `http://${DEST2}:${HTTP_PORT}/ip`]);
    const viaDante = await t.c.exec(['curl', '-sS', '--fail', '--max-time', '10', `http://${DEST}:${HTTP_PORT}/ip`]);
    expect(viaDante.stdout.trim()).toBe(DIRECT);
    expect(ip.stdout.trim()).not.toBe(DIRECT);
  });

  // Typically 12-20 s on this box, up to ~40 s under load (a plain SOCKS client through the
  // same dante: ~3 s; the burst overflows tun0's 5000-packet queue and the apps retransmit).
  it('1,000 connections at once each echo 100 KB intact', { timeout: 100_000 }, async () => {
    const r = await t.c.exec(['node', fixture('tcp-many.mjs'), DEST, String(ECHO_PORT), '1000', String(100 * 1024), '75000'], { timeoutMs: 90_000 });
    const s = jsonLine<ManySummary>(r.stdout, 'tcp-many');
    process.stdout.write(`[tcp-socks] 1000 × 100 KB echo through tunroute+dante: ${s.elapsedMs} ms, all connected after ${s.maxConnectMs} ms, ${s.maxOpenAtOnce} open at once\n`);
    const ctx = `${JSON.stringify(s)}\n${up.outputTail(2000)}`;
    expect(s.timedOut, ctx).toBe(false);
    expect(s.errors, ctx).toEqual({});
    expect(s.ok, ctx).toBe(1000);
  });

  it('`tunroute status --json` shows a running flow with its bytes, and forgets it when it ends', async () => {
    const status = async (): Promise<FlowInfo[]> => {
      const r = await t.c.exec(['node', CLI, 'status', '--json', '--control', control], { timeoutMs: 10_000 });
      return (JSON.parse(r.stdout) as { flows: FlowInfo[] }).flows;
    };
    const hold = t.c.spawn(['node', fixture('tcp-client.mjs'), DEST, String(ECHO_PORT), 'hold', '30000'], { name: 'hold' });
    const ready = JSON.parse(await hold.waitForLine(/"ready":true/, 10_000)) as { local: string };
    // The echo is complete at the app; tunroute's counters may trail it by a moment.
    const flow = await waitFor(
      'the held flow in status with all its bytes',
      async () => (await status()).find((f) => f.src === ready.local && f.bytesDown === APP_BYTES),
      10_000,
      100,
    ).catch(async (e: unknown) => {
      throw new Error(`${String(e)}; last status: ${JSON.stringify(await status())}`);
    });
    expect(flow).toMatchObject({ dst: `${DEST}:${ECHO_PORT}`, outbound: 'proxy', state: 'ESTABLISHED', bytesUp: APP_BYTES, bytesDown: APP_BYTES });
    expect(typeof flow.id).toBe('number');
    expect(flow.ageMs).toBeGreaterThanOrEqual(0);
    expect(flow.ageMs).toBeLessThan(30_000);

    await hold.stop('SIGTERM', 5000);
    await waitFor('the flow to leave status', async () => ((await status()).some((f) => f.src === ready.local) ? undefined : true), 10_000, 100);
  });

  it('stops cleanly with no flow left behind', async () => {
    const exit = await up.stop('SIGTERM', 5000);
    expect(exit).toEqual({ code: 0, signal: null });
    const c = finalCounters(up) as unknown as { tcp: { flowsOpen: number; flowsTotal: number } };
    expect(c.tcp.flowsOpen).toBe(0);
    expect(c.tcp.flowsTotal).toBeGreaterThanOrEqual(1004);
  });
});
