/**
 * Where the watchdog's native waiting half is (native/watchdog.c, an executable node-gyp builds
 * beside the addon): `up` runs it instead of a second, idle Node.js process (~1 MB RSS instead
 * of ~44 MB). It only waits; when tunroute is gone and its journal is left, it execs the Node
 * watchdog (routes/watchdog-main.ts --now), which does the undoing.
 */
import { statSync } from 'node:fs';
import { builtFile } from './addon.js';

const HELPER_FILE = 'build/Release/tunroute_watchdog';

/** The helper's path, or why it cannot be used (then `up` runs the Node watchdog instead). */
export type WatchdogHelper = { path: string } | { unusable: string };

/**
 * The built helper, if it is there and safe to run: tunroute runs as root, so a binary that
 * another user owns or that group or others may write is not run.
 */
export function watchdogHelper(): WatchdogHelper {
  const path = builtFile(HELPER_FILE);
  let st;
  try {
    st = statSync(path);
  } catch {
    return { unusable: `${path} is not built (npm run build)` };
  }
  if (!st.isFile() || (st.mode & 0o111) === 0) return { unusable: `${path} is not an executable file` };
  const uid = process.getuid?.();
  if ((st.uid !== 0 && st.uid !== uid) || (st.mode & 0o022) !== 0) {
    return { unusable: `${path} is owned by uid ${st.uid} or writable by others (mode ${(st.mode & 0o777).toString(8)})` };
  }
  return { path };
}
