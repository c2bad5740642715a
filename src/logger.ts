import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** Every level `log.level` and `--log-level` accept, most severe first; `silent` logs nothing. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LevelWithSilent[];

/** The process logger: structured JSON lines on stderr, so stdout stays for command output. */
export function createLogger(level: LevelWithSilent = 'info'): Logger {
  return pino({ level, base: { app: 'tunroute' } }, pino.destination(2));
}

/** A logger that writes nothing; the default for library users and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
