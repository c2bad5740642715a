import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import type PinoPretty from 'pino-pretty';
import { escapeLine } from './errors.js';

export type { Logger };

/** Every level `log.level` and `--log-level` accept, most severe first; `silent` logs nothing. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LevelWithSilent[];

/**
 * How log lines look (`log.format`, `--log-format`): `json`, one JSON object per line (systemd,
 * files, log shippers); `pretty`, one readable line per event for a person; `auto`, pretty when
 * stderr is a terminal, else JSON.
 */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** How `up` tells its watchdog process (which shares its stderr) the format it resolved. */
export const LOG_FORMAT_ENV = 'TUNROUTE_LOG_FORMAT';

/** What `auto` means for this process: pretty on a terminal, JSON for everything else. */
export function resolveLogFormat(format: LogFormat = 'auto', stderr: { isTTY?: boolean } = process.stderr): 'json' | 'pretty' {
  if (format !== 'auto') return format;
  return stderr.isTTY === true ? 'pretty' : 'json';
}

/**
 * The process logger, on stderr so stdout stays for command output: JSON lines, or (pretty) one
 * readable line per event. Pretty lines cost a JSON parse each, which is why JSON stays the
 * format for anything that is not a person at a terminal.
 */
export function createLogger(level: LevelWithSilent = 'info', format: LogFormat = 'auto'): Logger {
  const opts = { level, base: { app: 'tunroute' } };
  // Synchronous writes: the last lines before an exit (a failed start) must not be lost.
  const stderr = pino.destination({ dest: 2, sync: true });
  if (resolveLogFormat(format) === 'json') return pino(opts, stderr);
  return pino(opts, prettyStream(stderr, process.stderr.hasColors?.() === true));
}

/** A logger that writes nothing; the default for library users and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

// ------------------------------------------------------------------ pretty

/** Fields that say nothing to a person at the terminal (every line of this process has them). */
const IGNORED = ['pid', 'hostname', 'app'];
/** Fields pino-pretty shows in its own place (time, level) or that prettyMessage starts with. */
const HIDDEN = [...IGNORED, 'time', 'level', 'msg'];

/** The longest a field's text gets in a pretty line before it is cut (the JSON lines keep it all). */
const FIELD_MAX_CHARS = 120;

/**
 * Text from the log (a message, a field: names and addresses can come from the network) made
 * safe for a terminal: control characters, line breaks included, escaped (see escapeLine), so
 * nothing in a log line moves the cursor or retitles the terminal, and one event stays one line.
 */
const terminalSafe = escapeLine;

function cut(text: string): string {
  return text.length > FIELD_MAX_CHARS ? `${text.slice(0, FIELD_MAX_CHARS)}…` : text;
}

/**
 * A field as `key=value`, if it is one a person reads at a glance: scalars, lists of scalars,
 * an error's message. Nested objects (the counters of the final line, a tunnel's peers) are left
 * to the JSON format, where a program can read them.
 */
function fieldText(key: string, v: unknown): string | undefined {
  if (typeof v === 'string') return `${key}=${cut(terminalSafe(/[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v))}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${key}=${String(v)}`;
  if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number')) return `${key}=${cut(terminalSafe(v.join(',')))}`;
  if ((key === 'err' || key === 'error') && typeof v === 'object' && v !== null && 'message' in v && typeof v.message === 'string') {
    return `${key}=${JSON.stringify(cut(terminalSafe(v.message)))}`;
  }
  return undefined;
}

/** The message and then the fields that matter, dimmed where colour is on. */
export function prettyMessage(log: Record<string, unknown>, colors?: { dim: (s: string) => string }): string {
  const msg = typeof log.msg === 'string' ? terminalSafe(log.msg) : '';
  const fields: string[] = [];
  for (const [k, v] of Object.entries(log)) {
    if (HIDDEN.includes(k)) continue;
    const f = fieldText(k, v);
    if (f !== undefined) fields.push(f);
  }
  if (fields.length === 0) return msg;
  const rest = fields.join(' ');
  return `${msg}  ${colors === undefined ? rest : colors.dim(rest)}`;
}

/** pino-pretty's own settings for our lines: time of day, level, then prettyMessage. */
export function prettyOptions(colorize: boolean): PinoPretty.PrettyOptions {
  return {
    colorize,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: IGNORED.join(','),
    hideObject: true,
    messageFormat: (log, _key, _label, extras) => prettyMessage(log, colorize ? extras.colors : undefined),
  };
}

/**
 * pino-pretty's formatter, loaded only when a pretty logger is made (the JSON case never loads
 * it), in this process and synchronous: each JSON line pino writes becomes one readable line.
 */
function prettyStream(out: DestinationStream, colorize: boolean): DestinationStream {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  const format = prettyFactory(prettyOptions(colorize));
  return { write: (line: string) => out.write(format(line)) };
}
