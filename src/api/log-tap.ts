/**
 * The log lines of the running daemon for `/logs` (Clash: `{"type":"info","payload":"…"}` per
 * line). The process logger is left as logger.ts builds it; its destination's `write` is wrapped
 * so every line it writes is also offered to the tap. With no one subscribed, the wrap costs one
 * call and a length check per log line; subscribers get lines at or above the level they asked
 * for, and only lines the logger writes at all (its own level still applies).
 */
import { pino } from 'pino';
import type { Logger } from '../logger.js';

/** Clash's level names, most verbose first. */
export const CLASH_LOG_LEVELS = ['debug', 'info', 'warning', 'error', 'silent'] as const;
export type ClashLogLevel = (typeof CLASH_LOG_LEVELS)[number];

export interface ClashLogLine {
  type: ClashLogLevel;
  payload: string;
}

/** pino's numeric level → Clash's name (trace reads as debug, fatal as error). */
function clashLevelOf(n: number): Exclude<ClashLogLevel, 'silent'> {
  if (n >= 50) return 'error';
  if (n >= 40) return 'warning';
  if (n >= 30) return 'info';
  return 'debug';
}

const RANK: Record<ClashLogLevel, number> = { debug: 0, info: 1, warning: 2, error: 3, silent: 4 };

/** Clash's `?level=` value (also pino's `warn`), or undefined when it names no level. */
export function parseClashLevel(s: string | null): ClashLogLevel | undefined {
  if (s === null || s === '') return 'info';
  if (s === 'warn') return 'warning';
  return (CLASH_LOG_LEVELS as readonly string[]).includes(s) ? (s as ClashLogLevel) : undefined;
}

type Subscriber = { level: ClashLogLevel; send: (line: ClashLogLine) => void };

/** Fields that say where a line came from, shown after the message (the rest stays in the JSON logs). */
const SHOWN_FIELDS = ['component', 'flow', 'dst', 'src', 'reason', 'err', 'tunnel', 'path'] as const;

export class LogTap {
  private readonly subs = new Set<Subscriber>();

  /** Called with each line the logger writes (JSON text). */
  offer(json: string): void {
    if (this.subs.size === 0) return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(json) as Record<string, unknown>;
    } catch {
      return;
    }
    const type = clashLevelOf(typeof o.level === 'number' ? o.level : 30);
    let payload = typeof o.msg === 'string' ? o.msg : '';
    const extra: string[] = [];
    for (const k of SHOWN_FIELDS) {
      const v = o[k];
      if (v === undefined) continue;
      extra.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
    }
    if (extra.length > 0) payload += ` (${extra.join(' ')})`;
    const line: ClashLogLine = { type, payload };
    for (const s of this.subs) if (RANK[type] >= RANK[s.level]) s.send(line);
  }

  subscribe(level: ClashLogLevel, send: (line: ClashLogLine) => void): () => void {
    const sub: Subscriber = { level, send };
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  get subscribers(): number {
    return this.subs.size;
  }
}

type WritableStream = { write: (s: string) => unknown };

/**
 * Offer every line `log` (and its children, which share its destination) writes to `tap`.
 * Wraps the destination's own `write`, so a metadata-reading destination (pino.multistream, a
 * transport) keeps working.
 */
export function tapLogger(log: Logger, tap: LogTap): void {
  const stream = (log as unknown as Record<symbol, WritableStream | undefined>)[pino.symbols.streamSym];
  if (stream === undefined || typeof stream.write !== 'function') return;
  const write = stream.write.bind(stream);
  stream.write = (s: string): unknown => {
    const r = write(s);
    tap.offer(s);
    return r;
  };
}
