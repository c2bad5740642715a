/**
 * How long a big split tunnel takes to apply and remove, measured for real: in a throwaway lab
 * namespace (never the host's tables), through the same RouteManager `up` uses (CIDR file
 * parsing, merge, journal, `ip -batch`). For the benchmark report:
 *
 *   const m = await measureRouteApply(10_000);   // needs root (the lab)
 *   // { cidrs: 10000, routes: 9993, planMs, applyMs, removeMs, ... }
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { Lab } from '../lab/index.js';
import { writeLargeCidrFile } from './cidr-file.js';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/logger.js';
import { createIpRunner } from '../../src/routes/apply.js';
import { hostProbe } from '../../src/routes/host.js';
import { RouteManager } from '../../src/routes/manager.js';

export interface RouteApplyMeasurement {
  /** CIDRs in the file. */
  cidrs: number;
  /** Routes after merging (what enters the device). */
  routes: number;
  /** Route and rule changes applied (routes, plus their twins with the kill switch). */
  changes: number;
  /** Reading the file and the host, merging, planning, checking for a stale journal. */
  planMs: number;
  /** Writing the journal and applying every change. */
  applyMs: number;
  /** Removing every change and the journal. */
  removeMs: number;
  /** tunroute's routes (proto 211) the kernel showed after apply, and after remove. */
  kernelRoutesAfterApply: number;
  kernelRoutesAfterRemove: number;
}

/** n distinct, mostly non-adjacent /24…/28 CIDRs in public unicast space, the same for the same seed. */
export function syntheticCidrs(n: number, seed = 1): string[] {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s;
  };
  const seen = new Set<number>();
  const out: string[] = [];
  while (out.length < n) {
    const prefix = 24 + (next() % 5);
    const first = 1 + (next() % 222); // 1..222: no 0/8, no multicast
    if (first === 10 || first === 127 || first === 169 || first === 172 || first === 192 || first === 198) continue;
    const addr = ((first << 24) | (next() & 0xffff00)) >>> 0;
    const net = (addr & (0xffffffff << (32 - prefix))) >>> 0;
    if (seen.has(net)) continue;
    seen.add(net);
    out.push(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${prefix}`);
  }
  return out;
}

/**
 * `mixed`: the file is writeLargeCidrFile's (random /24…/32 with duplicates and overlaps, as
 * operators' lists are) instead of n distinct CIDRs.
 */
export async function measureRouteApply(n = 10_000, opts: { seed?: number; killSwitch?: boolean; mixed?: boolean } = {}): Promise<RouteApplyMeasurement> {
  const lab = await Lab.create({ prefix: 'tr-routes-' });
  try {
    const ns = await lab.addNamespace('routes');
    // A persistent TUN device stands in for tunroute's own: routes need a device to point at.
    await ns.exec(['ip', 'tuntap', 'add', 'dev', 'tun0', 'mode', 'tun']);
    const file = join(lab.tmpDir, 'cidrs.txt');
    if (opts.mixed) writeLargeCidrFile(file, n, opts.seed);
    else writeFileSync(file, `# ${n} synthetic CIDRs\n${syntheticCidrs(n, opts.seed).join('\n')}\n`);
    const config = loadConfig({ flags: { routeFile: [file], stateDir: join(lab.tmpDir, 'state'), watchdog: false, killSwitch: opts.killSwitch } });
    const countRoutes = async (): Promise<number> => Number((await ns.sh('ip route show table all proto 211 | wc -l')).stdout.trim());

    const t0 = performance.now();
    const m = await RouteManager.prepare({ config, log: silentLogger(), runner: createIpRunner({ netns: ns.name }), host: hostProbe({ netns: ns.name }), watchdog: false, watchRoutes: false });
    const t1 = performance.now();
    await m.apply();
    const t2 = performance.now();
    const kernelRoutesAfterApply = await countRoutes();
    const t3 = performance.now();
    await m.stop();
    const t4 = performance.now();
    const kernelRoutesAfterRemove = await countRoutes();
    const r = (x: number): number => Math.round(x * 10) / 10;
    return {
      cidrs: n,
      routes: m.plan.prefixes.length,
      changes: m.plan.changes.length,
      planMs: r(t1 - t0),
      applyMs: r(t2 - t1),
      removeMs: r(t4 - t3),
      kernelRoutesAfterApply,
      kernelRoutesAfterRemove,
    };
  } finally {
    await lab.destroy();
  }
}

export interface LargeRouteMeasurement extends RouteApplyMeasurement {
  /** Peak RSS of the process that planned, applied and removed (getrusage ru_maxrss). */
  peakRssMiB: number;
}

/** measureRouteApply of a `mixed` file in a child process (measure-routes-child.ts), for its peak RSS. */
export function measureLargeRouteFile(n: number): Promise<LargeRouteMeasurement> {
  const child = fileURLToPath(new URL('./measure-routes-child.js', import.meta.url));
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [child, String(n)], { timeout: 30 * 60_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`the route measurement of ${n} lines failed: ${err.message} ${stderr.slice(0, 2000)}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as LargeRouteMeasurement);
    });
  });
}
