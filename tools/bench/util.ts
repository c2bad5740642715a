/** Small helpers the benchmark's lab tests share. */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A tunroute config in `dir` that lets one local user hold every flow, and its path. The
 * bench's clients all run as one user; without it the per-user share of flow slots
 * (tcp.perUidFlows: half of them by default) would refuse the second half of a test's flows.
 */
export function oneUserConfig(dir: string): string {
  const path = join(dir, 'tunroute-one-user.yaml');
  writeFileSync(path, 'tcp:\n  perUidFlows: 0\n');
  return path;
}

/** The first line of an error's message, cut to 400 characters (for a report cell or a progress line). */
export function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split('\n')[0]?.slice(0, 400) ?? s;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
