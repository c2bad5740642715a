/**
 * The foreground loop of `tunroute up` and `tunroute server`: wait for SIGINT or SIGTERM, then
 * run the shutdown once. A failed shutdown is logged and sets a non-zero exit code; the
 * promise still resolves, so the caller's own teardown after it runs either way.
 */
import type { Logger } from './logger.js';

export interface RunUntilSignalOptions {
  logger: Logger;
  /** Everything that undoes the running instance (control socket, flows, routes, device). */
  stop: () => Promise<void>;
  /** The log line when `stop` fails (e.g. 'teardown failed'). */
  failure: string;
}

export function runUntilSignal(o: RunUntilSignalOptions): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      o.logger.info({ signal: sig }, 'stopping');
      // A second Ctrl-C during the shutdown gets Node's default (exit at once).
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      o.stop().then(resolve, (e: unknown) => {
        o.logger.error({ err: e }, o.failure);
        process.exitCode = 1;
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
