/**
 * Route files of 300,000 and 1,000,000 lines (random /24…/32 prefixes with duplicates,
 * overlaps and host bits, tools/bench/cidr-file.ts): planned, explained and applied without a
 * stack overflow (a `push(...entries)` of 300,000 crashed `up`, `check` and `why`), and with the
 * route count a plain reference computes. Times are the benchmark's (`npm run bench`, routes).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeLargeCidrFile } from '../../tools/bench/cidr-file.js';
import { loadConfig } from '../../src/config/load.js';
import { parseNetwork, u32ToIp } from '../../src/net/ipv4.js';
import { silentLogger } from '../../src/logger.js';
import { applyOps, type IpRunner } from '../../src/routes/apply.js';
import { planRoutes, prefixesContain, type RoutePlan } from '../../src/routes/plan.js';
import { explainDestination, parseDestination } from '../../src/routes/why.js';
import { mulberry32 } from '../helpers/random.js';

const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const haveCli = existsSync(CLI);
if (!haveCli) console.log('[routes-large] dist/cli/main.js is missing: the check/why CLI cases are skipped (npm run build)');

const LONG = 300_000; // ms: a million lines on two shared cores; no timing is asserted

/**
 * The reference: the file's ranges as [start, end) pairs sorted with a comparator, merged, and
 * cut into aligned blocks one at a time. Slow and plain, written apart from src/net/cidr-set.ts.
 */
function reference(text: string): { ranges: Array<[number, number]>; prefixCount: number } {
  const ranges: Array<[number, number]> = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const c = parseNetwork(line)!;
    ranges.push([c.addr, c.addr + 2 ** (32 - c.prefix)]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  let prefixCount = 0;
  for (const [s0, e] of merged) {
    for (let s = s0; s < e; prefixCount++) {
      let size = 1;
      while (s % (size * 2) === 0 && s + size * 2 <= e && size < 2 ** 32) size *= 2;
      s += size;
    }
  }
  return { ranges: merged, prefixCount };
}

function inRanges(ranges: ReadonlyArray<[number, number]>, addr: number): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (addr < ranges[mid][0]) hi = mid - 1;
    else if (addr >= ranges[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

function planFile(file: string, text: string, killSwitch = false): RoutePlan {
  const config = loadConfig({ flags: { routeFile: [file], proxy: 'socks5://127.0.0.1:1080', killSwitch } });
  return planRoutes(config, { network: { lan: [], ipv6: false }, upstreams: [], files: new Map([[file, text]]) });
}

describe('route files of 300,000 and 1,000,000 lines', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tunroute-large-'));
    writeLargeCidrFile(join(dir, '300000.txt'), 300_000, 3); // for every case below, alone too (-t)
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [n, seed] of [
    [300_000, 3],
    [1_000_000, 1],
  ] as const) {
    it(`plans ${n.toLocaleString('en')} lines: every route the reference finds, sorted and disjoint`, () => {
      const file = join(dir, `${n}.txt`);
      if (n !== 300_000) writeLargeCidrFile(file, n, seed);
      const text = readFileSync(file, 'utf8');
      const plan = planFile(file, text, true);
      const ref = reference(text);
      expect(plan.prefixes.length).toBe(ref.prefixCount);
      expect(plan.changes.length).toBe(2 * ref.prefixCount); // each route and its kill-switch twin
      expect(plan.down.length).toBe(plan.changes.length);
      for (let i = 1; i < plan.prefixes.length; i++) {
        const prev = plan.prefixes[i - 1];
        if (prev.addr + 2 ** (32 - prev.prefix) > plan.prefixes[i].addr) throw new Error(`prefixes ${i - 1} and ${i} overlap or are out of order`);
      }
      // Random addresses, and the first address of random lines: inside a route iff the
      // reference covers them.
      const random = mulberry32(seed);
      for (let k = 0; k < 20_000; k++) {
        const addr = Math.floor(random() * 2 ** 32);
        expect(prefixesContain(plan.prefixes, addr) !== undefined, u32ToIp(addr)).toBe(inRanges(ref.ranges, addr));
      }
      const lines = text.split('\n');
      for (let k = 0; k < 2_000; k++) {
        const line = lines[1 + Math.floor(random() * n)]; // line 1 is a comment
        expect(prefixesContain(plan.prefixes, parseNetwork(line)!.addr), line).toBeDefined();
      }
      // The journal's explain data holds one string per file, not a pair per line.
      expect(plan.explain.include).toEqual([]);
      expect(plan.explain.includeFiles?.[0].cidrs.split('\n').length).toBe(n + 1);
    }, LONG);
  }

  it('explains a destination of a 300,000-line file by its file and line', () => {
    const file = join(dir, '300000.txt');
    const text = readFileSync(file, 'utf8');
    const plan = planFile(file, text);
    const lines = text.split('\n');
    const line = 123_457;
    const c = parseNetwork(lines[line - 1])!;
    const a = explainDestination(plan.explain, parseDestination(u32ToIp(c.addr)));
    expect(a.enters).toBe(true);
    expect(a.include?.[1]).toMatch(new RegExp(`^${file}:\\d+$`));
    // The most specific line containing it: this line, or a more specific (or equal) one.
    const named = parseNetwork(lines[Number(a.include![1].split(':').pop()) - 1])!;
    expect(named.prefix).toBeGreaterThanOrEqual(c.prefix);
    expect(a.include?.[0]).toBe(`${u32ToIp(named.addr)}/${named.prefix}`);
    // Against the journal's copy (no plan at hand), the same answer.
    expect(explainDestination(JSON.parse(JSON.stringify(plan.explain)) as typeof plan.explain, parseDestination(u32ToIp(c.addr))).text).toBe(a.text);
  }, LONG);

  it('applies a 300,000-line plan through one batch per family, and rolls a late failure back', async () => {
    const file = join(dir, '300000.txt');
    const plan = planFile(file, readFileSync(file, 'utf8'), true);
    const batches: number[] = [];
    const ok: IpRunner = {
      batch(lines) {
        batches.push(lines.length);
        return Promise.resolve({ ok: true, stderr: '' });
      },
    };
    await applyOps(plan.up, plan.dev, ok, silentLogger());
    expect(batches).toEqual([plan.up.length]);
    // ip fails at the last line: everything before it (over half a million changes) is removed again.
    const undone: number[] = [];
    let first = true;
    const failing: IpRunner = {
      batch(lines, force) {
        if (first) {
          first = false;
          return Promise.resolve({ ok: false, failedLine: lines.length, failures: 1, stderr: 'RTNETLINK answers: File exists' });
        }
        expect(force).toBe(true);
        undone.push(lines.length);
        return Promise.resolve({ ok: true, stderr: '' });
      },
    };
    await expect(applyOps(plan.up, plan.dev, failing, silentLogger())).rejects.toThrow(/failed at/);
    expect(undone).toEqual([plan.changes.length - 1]);
  }, LONG);

  describe.skipIf(!haveCli)('the CLI on a 300,000-line file', () => {
    it('check prints the plan and exits 0', () => {
      const file = join(dir, '300000.txt');
      const config = join(dir, 'large.yaml');
      writeFileSync(config, `proxy: socks5://127.0.0.1:1080\nstateDir: ${dir}/state\nroutes:\n  includeFiles: [${file}]\n`);
      const want = planFile(file, readFileSync(file, 'utf8')).prefixes.length;
      const r = spawnSync('node', [CLI, 'check', '-c', config], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`routes into tun0 (${want}; routes in the main table):`);
      expect(r.stdout).toContain(`changes (${want}, applied with ip -batch in this order):`);
      expect(r.stdout.split('\n').filter((l) => l.startsWith('  ip route add ')).length).toBe(want);
    }, LONG);

    it('why names the line of the file', () => {
      const file = join(dir, '300000.txt');
      const line = readFileSync(file, 'utf8').split('\n')[299_999];
      const addr = u32ToIp(parseNetwork(line)!.addr);
      const r = spawnSync('node', [CLI, 'why', '--proxy', 'socks5://127.0.0.1:1080', '--route-file', file, '--json', addr], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const a = JSON.parse(r.stdout) as { enters: boolean; include: [string, string] };
      expect(a.enters).toBe(true);
      expect(a.include[1]).toMatch(new RegExp(`^${file}:\\d+$`));
    }, LONG);
  });
});
