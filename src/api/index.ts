/**
 * The dashboard / Clash API / metrics listener, as `up` and `server` start it when ui.listen is
 * set. The composition roots import this module lazily, so a daemon without --ui loads none of
 * it (no http server, no ws, no prom-client).
 */
import type { UiConfig } from '../config/fields.js';
import type { Logger } from '../logger.js';
import { LogTap, tapLogger } from './log-tap.js';
import { resolveSecret } from './secret.js';
import { startApiServer, type ApiServer } from './server.js';
import type { ApiSource } from './source.js';

export type { ApiSource, ApiOutbound, ApiCounters } from './source.js';
export type { ApiServer } from './server.js';
export { LogTap, tapLogger } from './log-tap.js';

/** Start tapping the logger now (before the daemon logs its start), so /logs has the lines. */
export function startLogTap(log: Logger): LogTap {
  const tap = new LogTap();
  tapLogger(log, tap);
  return tap;
}

export async function startUi(opts: { ui: UiConfig; stateDir: string; source: ApiSource; logger: Logger; logs?: LogTap }): Promise<ApiServer> {
  const { ui, logger } = opts;
  if (ui.listen === undefined) throw new Error('startUi called without ui.listen');
  const secret = resolveSecret(ui.secret, opts.stateDir, opts.source.role);
  const server = await startApiServer({
    listen: ui.listen,
    allowRemote: ui.allowRemote,
    secret: secret.value,
    allowOrigins: ui.allowOrigins,
    source: opts.source,
    logs: opts.logs,
    logger,
  });
  if (secret.generated) {
    // Shown this once, as it is made; it stays in the file (0600) for the next start.
    logger.warn({ url: `${server.url}/ui/`, secret: secret.value, file: secret.file }, 'dashboard secret generated (shown only now; it is kept in the file)');
  }
  logger.info({ url: `${server.url}/ui/`, secretFrom: secret.file ?? 'ui.secret' }, 'dashboard and Clash API listening');
  return server;
}
