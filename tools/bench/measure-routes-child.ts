/**
 * One route measurement in a process of its own, so its peak RSS is the route work's alone:
 *   node dist-tools/tools/bench/measure-routes-child.js 1000000 [--kill-switch]
 * prints one JSON line: measureRouteApply's figures plus peakRssMiB (getrusage ru_maxrss).
 */
import { measureRouteApply } from './measure-routes.js';

const n = Number(process.argv[2] ?? '1000000');
const m = await measureRouteApply(n, { mixed: true, killSwitch: process.argv.includes('--kill-switch') });
process.stdout.write(JSON.stringify({ ...m, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) }) + '\n');
