/**
 * A large route file end to end, in a lab namespace (routes-lab.ts): `tunroute up
 * --route-file` with 100,000 lines (random /24…/32 with duplicates and overlaps,
 * tools/bench/cidr-file.ts) applies every merged route through `ip -batch`; after `kill -9`,
 * `tunroute down` removes every one of them from the journal and the namespace's tables are as
 * before. (Measured here: 100,000 lines, 79,560 routes, up 9.7 s and down 10.7 s at a load average
 * of 12-15; 300,000 lines take about a minute for both, so the million-line figure is
 * the benchmark's: `npm run bench -- --only routes`.)
 */
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, e2eAvailable } from '../helpers/e2e.js';
import { writeLargeCidrFile } from '../../tools/bench/cidr-file.js';
import { PROXY, createRoutesLab, fullSnapshot, logged, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('routes: a 100,000-line route file');
const LINES = 100_000;

describe.skipIf(!run)('a 100,000-line route file (lab)', () => {
  let l: RoutesLab;
  beforeEach(async () => {
    l = await createRoutesLab();
  });
  afterEach(async () => {
    await l?.lab.destroy();
  });

  it('is applied whole by up, and down removes all of it after kill -9', async () => {
    const before = await fullSnapshot(l.c);
    const file = writeLargeCidrFile(join(l.lab.tmpDir, 'large.txt'), LINES, 5);
    const t0 = performance.now();
    const proc = l.c.spawn(['node', CLI, 'up', '--state-dir', l.stateDir, '--control', join(l.lab.tmpDir, 'ctl.sock'), '--proxy', PROXY, '--route-file', file, '--no-watchdog'], {
      name: 'tunroute-large',
    });
    const applied = await logged(proc, /routes applied/, 300_000);
    const upMs = performance.now() - t0;
    const routes = applied.routes as number;
    expect(routes).toBeGreaterThan(LINES / 2); // merging removed duplicates and covered lines only
    expect(Number((await l.c.sh('ip route show table all proto 211 | wc -l')).stdout)).toBe(applied.changes);
    await proc.stop('SIGKILL');
    const t1 = performance.now();
    const down = await l.c.exec(['node', CLI, 'down', '--state-dir', l.stateDir], { timeoutMs: 300_000 });
    const downMs = performance.now() - t1;
    expect(down.stdout).toContain('tun0: removed the');
    expect(Number((await l.c.sh('ip route show table all proto 211 | wc -l')).stdout)).toBe(0);
    expect(await fullSnapshot(l.c)).toBe(before);
    process.stdout.write(`\n[routes-large] ${LINES} lines → ${routes} routes: up until applied ${Math.round(upMs)} ms, down ${Math.round(downMs)} ms\n`);
  }, 900_000);
});
