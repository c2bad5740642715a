import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** The process logger: structured JSON lines on stderr, so stdout stays for command output. */
export function createLogger(level: LevelWithSilent = 'info'): Logger {
  return pino({ level, base: { app: 'tunroute' } }, pino.destination(2));
}

/** A logger that writes nothing; the default for library users and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
