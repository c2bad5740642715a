/**
 * This package's version, read once from package.json (for `status` and logs). The relative
 * path holds from src/ (tests run the sources) and from dist/ alike, both one level below it.
 */
import { createRequire } from 'node:module';

export const TUNROUTE_VERSION: string = (() => {
  const pkg: unknown = createRequire(import.meta.url)('../package.json');
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
})();
