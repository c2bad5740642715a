/**
 * The checkout's root folder, found from this file's place: tools run from `tools/` under
 * vitest and from `dist-tools/tools/` once compiled, so a fixed number of `..` would be wrong
 * in one of them.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('tools: cannot find the tunroute checkout above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** Absolute path of the checkout, without a trailing slash. */
export const REPO_ROOT: string = findRoot();
/** The built command line that the tools start (`npm run build` makes it). */
export const CLI_PATH: string = join(REPO_ROOT, 'dist', 'cli', 'main.js');
