/**
 * Where the watchdog's native waiting half is (native/watchdog.c, an executable node-gyp builds
 * beside the addon): `up` runs it instead of a second, idle Node.js process (~1 MB RSS instead
 * of ~44 MB). It only waits; when tunroute is gone and its journal is left, it execs the Node
 * watchdog (routes/watchdog-main.ts --now), which does the undoing.
 */
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { builtFile } from './addon.js';

const HELPER_FILE = 'build/Release/tunroute_watchdog';

/** The helper's path, or why it cannot be used (then `up` runs the Node watchdog instead). */
export type WatchdogHelper = { path: string } | { unusable: string };

/**
 * The built helper, if it is there and safe to run. tunroute runs as root, so the helper gets
 * no more trust than the code already running: it must be owned by root, by us, or by whoever
 * owns this very module (a checkout built by a user, run with sudo), and writable by no one else.
 */
export function watchdogHelper(): WatchdogHelper {
  return checkHelper(builtFile(HELPER_FILE));
}

/** The checks of watchdogHelper on a given file (exported for tests). */
export function checkHelper(path: string): WatchdogHelper {
  let st;
  try {
    st = statSync(path);
  } catch {
    return { unusable: `${path} is not built (npm run build)` };
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) return { unusable: `${path} is not an executable file` };
  const owners = new Set([0, process.getuid?.(), ownerOf(fileURLToPath(import.meta.url))]);
  if (!owners.has(st.uid) || (st.mode & 0o022) !== 0) {
    return { unusable: `${path} is owned by uid ${st.uid} or writable by group or others (mode ${(st.mode & 0o777).toString(8)})` };
  }
  return { path };
}

function ownerOf(file: string): number | undefined {
  try {
    return statSync(file).uid;
  } catch {
    return undefined;
  }
}
