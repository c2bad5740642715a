/**
 * Hard limits in the lab (issue 13, item 4), through tunroute and dante (see tcp-lab.ts):
 *
 * - the buffer budget: 40 uploads of 4 MB into a server that reads nothing for 4 s, with a
 *   4 MiB budget (without it each flow could buffer 2 × 1 MiB): the bytes tunroute holds,
 *   polled from `status --json` and its own peak, never exceed the budget; every upload then
 *   completes intact in size;
 * - the open-file limit: tunroute under `prlimit --nofile=300:300` derives its TCP limit from it
 *   (one log line), 40 held connections: those beyond the limit get RST, the process lives,
 *   the earlier ones still echo;
 * - the per-uid share: with tcp.perUidFlows 5, a user (nobody) gets 5 flows and RST beyond,
 *   another user (root) is not affected.
 *
 * The lab's kernel TCP buffers are made small (tcp_rmem/tcp_wmem in its namespaces only) so
 * that the uploads pile up in tunroute's buffers, not in the kernel's.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabProcess } from '../../tools/lab/index.js';
import { CLI, e2eAvailable, logLines } from '../helpers/e2e.js';
import { SCENARIOS } from './fixtures/tcp-common.mjs';
import { DEST, PROXY, ROUTE, createTcpLab, fixture, jsonLine, type TcpLab } from './tcp-lab.js';

const run = e2eAvailable('hard limits: buffer budget, open-file limit, per-uid share');

const SLOW_PORT = 7100;
const ECHO_PORT = SCENARIOS.echo;
const BUDGET = 4 * 1024 * 1024;

interface Memory {
  budgetBytes: number;
  heldBytes: number;
  peakHeldBytes: number;
  overBudgetBytes: number;
}
interface Status {
  tcp: { flowsOpen: number; refusedLimit: number; refusedUid: number; memory: Memory };
}
interface HoldSummary {
  n: number;
  held: number;
  refused: number;
  reechoed: number;
  errors: Record<string, number>;
  timedOut: boolean;
}

describe.skipIf(!run)('hard limits (lab)', () => {
  let t: TcpLab;
  let up: LabProcess | undefined;
  let control: string;

  /** `tunroute up` in the client namespace, optionally under a prefix (prlimit). */
  async function startUp(args: string[], prefix: string[] = []): Promise<LabProcess> {
    control = join(t.lab.tmpDir, `limits-${Date.now()}.sock`);
    const p = t.c.spawn([...prefix, 'node', CLI, 'up', '--control', control, '--route', ROUTE, '--proxy', PROXY, ...args], { name: 'tunroute' });
    await p.waitForLine(/"msg":"tunroute is up"/, 15_000);
    up = p;
    return p;
  }

  async function stopUp(): Promise<void> {
    if (up !== undefined) expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    up = undefined;
  }

  async function status(): Promise<Status> {
    const r = await t.c.exec(['node', CLI, 'status', '--json', '--control', control], { timeoutMs: 10_000 });
    return JSON.parse(r.stdout) as Status;
  }

  function config(name: string, v: unknown): string {
    const f = join(t.lab.tmpDir, name);
    writeFileSync(f, JSON.stringify(v));
    return f;
  }

  beforeAll(async () => {
    t = await createTcpLab();
    for (const ns of [t.c, t.s]) {
      await ns.exec(['sysctl', '-qw', 'net.ipv4.tcp_rmem=4096 32768 65536', 'net.ipv4.tcp_wmem=4096 32768 65536']);
    }
    const slow = t.s.spawn(['node', fixture('limits-slow-server.mjs'), String(SLOW_PORT), '4000'], { name: 'slow-server' });
    await slow.waitForLine(/^listening/, 10_000);
    const echo = t.s.spawn(['node', fixture('tcp-server.mjs')], { name: 'tcp-server' });
    await echo.waitForLine(/^listening/, 10_000);
  });
  afterAll(async () => {
    await up?.stop('SIGTERM', 3000);
    await t?.lab.destroy();
  });

  it('holds at most the buffer budget while 40 uploads wait for a server that does not read, then completes them', { timeout: 90_000 }, async () => {
    await startUp(['-c', config('budget.json', { tcp: { memoryBytes: BUDGET } })]);
    const uploads = t.c.exec(['node', fixture('limits-uploads.mjs'), DEST, String(SLOW_PORT), '40', String(4_000_000), '60000'], { timeoutMs: 70_000 });
    let maxHeld = 0;
    let samples = 0;
    const until = Date.now() + 3500;
    while (Date.now() < until) {
      const m = (await status()).tcp.memory;
      maxHeld = Math.max(maxHeld, m.heldBytes);
      samples++;
      await new Promise((r) => setTimeout(r, 200));
    }
    const r = jsonLine<{ n: number; ok: number; errors: Record<string, number>; timedOut: boolean }>((await uploads).stdout, 'limits-uploads');
    const m = (await status()).tcp.memory;
    process.stdout.write(
      `[limits] 40 × 4 MB uploads, server paused 4 s, budget ${BUDGET} B: held at most ${maxHeld} B in ${samples} samples, peak ${m.peakHeldBytes} B, over budget now ${m.overBudgetBytes} B; ${r.ok}/${r.n} uploads complete\n`,
    );
    expect(m.budgetBytes).toBe(BUDGET);
    expect(m.peakHeldBytes).toBeLessThanOrEqual(BUDGET);
    expect(maxHeld).toBeLessThanOrEqual(BUDGET);
    // The budget was what held the uploads back (not the kernel's buffers): it filled.
    expect(m.peakHeldBytes).toBeGreaterThan(BUDGET / 2);
    expect(r, up?.outputTail(2000)).toMatchObject({ ok: 40, errors: {}, timedOut: false });
    await stopUp();
  });

  it('derives its TCP limit from a low open-file limit and answers the flows beyond it with RST, living on', { timeout: 60_000 }, async () => {
    // No per-user share here: every flow of this test is root's.
    const p = await startUp(['-c', config('nofile.json', { tcp: { perUidFlows: 0 } })], ['prlimit', '--nofile=300:300']);
    const line = logLines(p).find((l) => typeof l.msg === 'string' && l.msg.startsWith('flow limits:'));
    expect(line, p.outputTail(2000)).toBeDefined();
    const tcpFlows = line!.tcpFlows as number;
    process.stdout.write(`[limits] under RLIMIT_NOFILE 300: ${line!.msg as string}\n`);
    expect(line).toMatchObject({ nofile: 300, nofileHard: 300 });
    expect(tcpFlows).toBeGreaterThan(0);
    expect(tcpFlows).toBeLessThan(40);
    const r = jsonLine<HoldSummary>((await t.c.exec(['node', fixture('limits-hold.mjs'), DEST, String(ECHO_PORT), '40', '40000'], { timeoutMs: 50_000 })).stdout, 'limits-hold');
    expect(r, p.outputTail(2000)).toMatchObject({ n: 40, held: tcpFlows, refused: 40 - tcpFlows, reechoed: tcpFlows, timedOut: false });
    expect(Object.keys(r.errors).every((k) => k === 'ECONNREFUSED' || k === 'ECONNRESET')).toBe(true);
    expect(p.exited).toBe(false);
    expect((await status()).tcp.refusedLimit).toBe(40 - tcpFlows);
    expect(logLines(p).some((l) => typeof l.msg === 'string' && l.msg.startsWith('flow limit reached'))).toBe(true);
    await stopUp();
  });

  it("gives a user RST beyond its share of flows, and leaves another user's flows alone", { timeout: 60_000 }, async () => {
    const p = await startUp(['-c', config('peruid.json', { tcp: { perUidFlows: 5 } })]);
    const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const hold = async (prefix: string[], n: number): Promise<HoldSummary> =>
      jsonLine<HoldSummary>((await t.c.exec([...prefix, 'node', fixture('limits-hold.mjs'), DEST, String(ECHO_PORT), String(n), '30000'], { timeoutMs: 40_000 })).stdout, 'limits-hold');
    // Both at once: nobody is refused beyond its 5 while root opens its own 5.
    const [nobody, root] = await Promise.all([hold(asNobody, 8), hold([], 5)]);
    expect(nobody, p.outputTail(2000)).toMatchObject({ held: 5, refused: 3, reechoed: 5, timedOut: false });
    expect(root, p.outputTail(2000)).toMatchObject({ held: 5, refused: 0, reechoed: 5, timedOut: false });
    expect((await status()).tcp.refusedUid).toBe(3);
    const warn = logLines(p).find((l) => typeof l.msg === 'string' && l.msg.startsWith("a user's share"));
    expect(warn).toMatchObject({ uid: 65534, perUidFlows: 5 });
    await stopUp();
  });
});
