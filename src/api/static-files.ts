/**
 * The dashboard's files, read from disk when asked: the page of ui/ (beside src/ and dist/ in
 * the package) and uPlot's browser build from node_modules (served as the package ships it,
 * never copied into the repository). Everything a page needs comes from here: it works with no
 * network.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface StaticFile {
  body: Buffer;
  type: string;
}

/** src/api/ and dist/api/ are both two levels below the package root, which holds ui/. */
const UI_DIR = fileURLToPath(new URL('../../ui/', import.meta.url));

function uplotDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('uplot/package.json')), 'dist');
}

/** URL path under /ui/ → [file on disk, content type]. Only these are served. */
function table(): Map<string, [string, string]> {
  const up = uplotDir();
  return new Map([
    ['', [join(UI_DIR, 'index.html'), 'text/html; charset=utf-8']],
    ['index.html', [join(UI_DIR, 'index.html'), 'text/html; charset=utf-8']],
    ['login.html', [join(UI_DIR, 'login.html'), 'text/html; charset=utf-8']],
    ['app.js', [join(UI_DIR, 'app.js'), 'text/javascript; charset=utf-8']],
    ['style.css', [join(UI_DIR, 'style.css'), 'text/css; charset=utf-8']],
    ['uPlot.iife.min.js', [join(up, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8']],
    ['uPlot.min.css', [join(up, 'uPlot.min.css'), 'text/css; charset=utf-8']],
  ]);
}

export class StaticFiles {
  private files: Map<string, [string, string]> | undefined;
  private readonly cache = new Map<string, StaticFile>();

  /** The file for a name under /ui/, or undefined (not one of ours). Read once, then kept. */
  async get(name: string): Promise<StaticFile | undefined> {
    const hit = this.cache.get(name);
    if (hit !== undefined) return hit;
    this.files ??= table();
    const entry = this.files.get(name);
    if (entry === undefined) return undefined;
    const f: StaticFile = { body: await readFile(entry[0]), type: entry[1] };
    this.cache.set(name, f);
    return f;
  }
}
