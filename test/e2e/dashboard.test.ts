/**
 * The dashboard in a real browser, in the lab (tcp-lab.ts): `tunroute up --ui` in the client
 * namespace while curl downloads run through it; headless Chromium (Debian's, driven by
 * playwright-core, run inside the namespace) gets the login form, logs in with the secret, sees
 * the flows and a moving graph, closes one flow (its curl sees the connection reset), asks
 * `why`, and saves a screenshot to test-artifacts/dashboard.png. The same listener's Clash API
 * and /metrics are checked from inside the namespace with curl.
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type LabProcess } from '../../tools/lab/index.js';
import { e2eAvailable, ROOT, SMALL_TCP_RMEM } from '../helpers/e2e.js';
import { DEST, PROXY, ROUTE, createTcpLab, fixture, jsonLine, startTunroute, waitFor, type TcpLab } from './tcp-lab.js';

const hasChromium = existsSync('/usr/bin/chromium');
const run = e2eAvailable('dashboard in headless Chromium') && hasChromium;
if (!hasChromium) process.stdout.write('\n[skipped] dashboard in headless Chromium: /usr/bin/chromium is missing (apt-get install chromium)\n');

const UI = '127.0.0.1:9090';
const SECRET = 'lab-dashboard-secret-42';
const BULK_PORT = 8080;
const CLOSE_PORT = 8081;
const ARTIFACTS = join(ROOT, 'test-artifacts');

interface BrowserReport {
  ok?: boolean;
  error?: string;
  steps: string[];
  unauthenticatedStatus?: number;
  trafficSamples?: number;
  trafficDownMax?: number;
  flowRows?: string[][];
  closedId?: string;
  why?: string;
  console?: string[];
}

describe.skipIf(!run)('dashboard in headless Chromium (lab)', () => {
  let t: TcpLab;
  let up: LabProcess;
  const curls: LabProcess[] = [];

  beforeAll(async () => {
    t = await createTcpLab();
    // Linux hands an app the data already in its socket's receive queue before it reports a
    // reset: with the default 32 MiB limit a 400 kB/s reader would take up to 80 s to see the
    // close. A small limit makes the reset visible in about a second.
    await t.c.sysctl({ 'net.ipv4.tcp_rmem': SMALL_TCP_RMEM });
    await startHttpServer(t.s, { port: BULK_PORT });
    await startHttpServer(t.s, { port: CLOSE_PORT });
    const conf = join(t.lab.tmpDir, 'dashboard.json');
    writeFileSync(conf, JSON.stringify({ ui: { listen: UI, secret: SECRET } }), { mode: 0o600 });
    ({ proc: up } = await startTunroute(t.c, ['-c', conf, '--route', ROUTE, '--proxy', PROXY, '--state-dir', join(t.lab.tmpDir, 'state')]));
    await up.waitForLine(/dashboard and Clash API listening/, 5000);
  }, 60_000);
  afterAll(async () => {
    for (const c of curls) await c.stop('SIGTERM', 2000).catch(() => undefined);
    await t?.lab.destroy();
  });

  const curlIn = (args: string): Promise<{ status: number; body: string }> =>
    t.c.sh(`curl -sS -o /tmp/body.$$ -w '%{http_code}' ${args}; echo; cat /tmp/body.$$; rm -f /tmp/body.$$`, { timeoutMs: 15_000 }).then((r) => {
      const nl = r.stdout.indexOf('\n');
      return { status: Number(r.stdout.slice(0, nl)), body: r.stdout.slice(nl + 1) };
    });

  it('answers 401 without the secret, the Clash API and /metrics with it', async () => {
    expect((await curlIn(`http://${UI}/version`)).status).toBe(401);
    expect((await curlIn(`http://${UI}/connections?token=wrong`)).status).toBe(401);
    const v = await curlIn(`-H 'Authorization: Bearer ${SECRET}' http://${UI}/version`);
    expect(v.status).toBe(200);
    expect(JSON.parse(v.body)).toMatchObject({ premium: true, meta: true });
  });

  it('Chromium logs in, sees flows and a moving graph, closes a flow (curl sees a reset), and keeps a screenshot', { timeout: 120_000 }, async () => {
    // Downloads slow enough to stay open for the whole test (bounded by --max-time).
    for (const port of [BULK_PORT, BULK_PORT, CLOSE_PORT]) {
      const c = t.c.spawn(['curl', '-sS', '--fail', '-o', '/dev/null', '--limit-rate', '400k', '--max-time', '90', `http://${DEST}:${port}/zero/${200 * 1024 * 1024}`], { name: `curl-${port}-${curls.length}` });
      curls.push(c);
    }
    const toClose = curls[2];
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'dashboard.png');
    const r = await t.c.exec(['node', fixture('dashboard-browser.mjs'), `http://${UI}`, SECRET, String(CLOSE_PORT), shot, join(t.lab.tmpDir, 'chromium-profile')], { timeoutMs: 110_000 });
    const report = jsonLine<BrowserReport>(r.stdout, 'dashboard-browser');
    process.stdout.write(`[dashboard] ${JSON.stringify({ ...report, flowRows: report.flowRows?.length })}\n`);
    expect(report.error, `${report.error}\nconsole: ${JSON.stringify(report.console)}\n${up.outputTail(3000)}`).toBeUndefined();
    expect(report.ok).toBe(true);
    expect(report.unauthenticatedStatus).toBe(401);
    expect(report.trafficSamples).toBeGreaterThanOrEqual(4);
    expect(report.trafficDownMax).toBeGreaterThan(0);
    expect(report.flowRows?.filter((row) => row[2] === `${DEST}:${BULK_PORT}` && row[4] === 'proxy').length).toBeGreaterThanOrEqual(2);
    expect(report.closedId).toMatch(/^tcp-\d+$/);
    expect(report.why).toMatch(/tun0/);
    // The app behind the closed flow saw the connection reset (once it has read what its socket
    // had queued: see SMALL_TCP_RMEM); the others still run.
    const exit = await toClose.waitForExit(15_000).catch(async (e: unknown) => {
      const c = await curlIn(`-H 'Authorization: Bearer ${SECRET}' http://${UI}/connections`);
      throw new Error(`${String(e)}\nclosed ${report.closedId}; tunroute lists: ${c.body}\n${up.outputTail(2000)}`);
    });
    expect(exit.code, toClose.outputTail(500)).not.toBe(0);
    expect(toClose.output().stderr).toMatch(/reset|Recv failure/i);
    expect(curls[0].exited).toBe(false);
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    process.stdout.write(`[dashboard] screenshot: ${shot} (${statSync(shot).size} bytes)\n`);
  });

  it('/metrics counts the downloads', async () => {
    const m = await waitFor(
      'the flow bytes in /metrics',
      async () => {
        const r = await curlIn(`-H 'Authorization: Bearer ${SECRET}' http://${UI}/metrics`);
        const line = /^tunroute_flow_bytes_total\{proto="tcp",direction="down"\} (\d+)$/m.exec(r.body);
        return line !== null && Number(line[1]) > 100_000 ? r.body : undefined;
      },
      10_000,
      200,
    );
    expect(m).toMatch(/^tunroute_flows_open\{proto="tcp"\} [1-9]/m);
  });

  it('stops cleanly with the dashboard open', async () => {
    for (const c of curls) if (!c.exited) await c.stop('SIGTERM', 2000);
    expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
  });
});
