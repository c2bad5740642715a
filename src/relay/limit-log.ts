/**
 * One warning per limit, at most every `intervalMs`: a flood of refused flows (a scan, a fork
 * bomb, a full fd table) must not become a flood of log lines. The first refusal is logged at
 * once; later ones are counted and the next line says how many there were since.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';

export class LimitLog {
  private lastAt = -Infinity;
  private since = 0;

  constructor(
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly message: string,
    private readonly intervalMs = 10_000,
  ) {}

  /** A flow was refused at this limit; `fields` describe it (built only when a line is due). */
  hit(fields: () => Record<string, unknown>): void {
    this.since++;
    const now = this.clock.now();
    if (now - this.lastAt < this.intervalMs) return;
    this.lastAt = now;
    this.logger.warn({ ...fields(), refusedSinceLastLine: this.since }, this.message);
    this.since = 0;
  }
}

/** A socket error that says this process (or the host) has no file descriptor left. */
export function isFdExhaustion(e: unknown): boolean {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 4; c = c.cause, depth++) {
    const code = (c as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') return true;
  }
  return false;
}
