/**
 * The young generation of the tunroute process: at most YOUNG_CAP_BYTES, given back when idle.
 *
 * V8 doubles its semi-spaces from 1 MiB up to 16 MiB under load and keeps them committed and
 * resident: `up` idled with ~10 MB of its 23 MB heap in the new space, 10,000 flows opened grew
 * it to ~28 MB (2.8 KiB of every flow's 8.7), kept after they closed. A smaller young generation
 * costs CPU: kept at 1 MiB (semi-space growth factor 1) the upload of iperf3 took ~30 % more
 * CPU per byte.
 *
 * `--max-semi-space-size` would be the flag, but V8 reads it only when the isolate is made: set
 * here at run time it is ignored, a `#!/usr/bin/env node` line cannot carry it (nor does it
 * apply to `node dist/cli/main.js`), and re-executing Node with NODE_OPTIONS would start a second
 * process (a second ~40 MB while the first waits). The growth factor, though, is read each time
 * the young generation would grow: after every collection, growth is allowed (factor 2) while
 * the new space is below the cap and stopped (factor 1) once it reached it. When V8 shrinks it
 * again (after a quiet spell, see relay/trim-after-burst.ts) growth resumes up to the cap.
 *
 * main.ts imports this module first, so the observer is in place before the rest loads.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** New space (both semi-spaces) at most this large: semi-spaces of 4 MiB. */
export const YOUNG_CAP_BYTES = 8 * 1024 * 1024;

let growing = true;

function newSpaceBytes(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_size;
  return 0;
}

function steer(): void {
  const grow = newSpaceBytes() < YOUNG_CAP_BYTES;
  if (grow === growing) return;
  growing = grow;
  setFlagsFromString(grow ? '--semi-space-growth-factor=2' : '--semi-space-growth-factor=1');
}

new PerformanceObserver(steer).observe({ entryTypes: ['gc'] });
