/**
 * One base error with a stable code. Every error that reaches a user names the cause and the
 * fix in one sentence; the code lets programs (and tests) match without parsing prose.
 */
export const ERROR_CODES = {
  TR_NOT_ROOT: 'tunroute needs root (CAP_NET_ADMIN) to create a TUN device and change routes',
  TR_NO_TUN: '/dev/net/tun is missing or cannot be opened',
  TR_TUN_BUSY: 'the TUN device name is already in use',
  TR_TUN_OPEN: 'the TUN device could not be opened',
  TR_NATIVE_MISSING: 'the native addon has not been built',
  TR_BAD_CIDR: 'a CIDR is malformed',
  TR_BAD_FLAG: 'a command-line flag has a bad value',
  TR_BAD_CONFIG: 'the configuration file is invalid',
  TR_CONFIG_READ: 'the configuration file cannot be read',
  TR_ROUTE_APPLY: 'a route or address change failed',
  TR_STATE_DIR: 'the state directory (or a directory above it) could be written by another user',
  TR_UPSTREAM: 'an upstream (proxy or tunnel peer) is unreachable or refused',
  TR_CONTROL: 'the control socket of a running daemon cannot be reached',
  TR_LISTEN: 'the tunnel server cannot listen on its UDP address',
  TR_BAD_KEY: 'a WireGuard key is not in wg\'s base64 format',
  TR_PRIVILEGES: 'tunroute could not give up root after start',
  TR_NOTHING_TO_DO: '`up` was given no upstream and no route, so it would route nothing',
  TR_INTERNAL: 'an internal invariant was broken',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TunrouteError extends Error {
  readonly code: ErrorCode;
  override readonly cause: unknown;

  constructor(code: ErrorCode, message: string, cause?: unknown) {
    super(message);
    this.name = 'TunrouteError';
    this.code = code;
    this.cause = cause;
  }
}

export function isTunrouteError(e: unknown): e is TunrouteError {
  return e instanceof TunrouteError;
}

/** How many characters of quoted input a message shows before it cuts (see `shown`). */
export const SHOWN_MAX_CHARS = 80;
/** Paths are cut later: a long path is legitimate and its end is what tells it apart. */
export const PATH_MAX_CHARS = 300;

/**
 * Text from a file or a flag as an error message or log quotes it: control characters (C0, DEL,
 * C1) and the bidi controls written as \xNN / \u{NNNN}, so nothing reaches the terminal as a
 * command; `"` and `\` escaped; cut after `max` characters with "…". Every message that quotes
 * input goes through here (`shown` adds the quotes, `shownPath` is for paths, unquoted as
 * messages have always named them); secrets are never passed to it at all.
 */
export function escapeInput(text: string, max: number = SHOWN_MAX_CHARS): string {
  let out = '';
  let n = 0;
  for (const ch of text) {
    if (n === max) return `${out}…`;
    out += ch === '"' || ch === '\\' ? `\\${ch}` : escapeControl(ch);
    n++;
  }
  return out;
}

/** A control character (C0, DEL, C1) as \xNN, a bidi control as \u{NNNN}; any other character as it is. */
function escapeControl(ch: string): string {
  const c = ch.codePointAt(0)!;
  if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return `\\x${c.toString(16).padStart(2, '0')}`;
  if ((c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c === 0x200e || c === 0x200f) return `\\u{${c.toString(16)}}`;
  return ch;
}

/**
 * The last guard before the terminal, for whole messages (the CLI's error line, commander's
 * usage errors, which quote flags as typed): control characters escaped as in escapeInput,
 * line breaks kept, nothing cut.
 */
export function escapeTerminal(text: string): string {
  let out = '';
  for (const ch of text) out += ch === '\n' ? ch : escapeControl(ch);
  return out;
}

/** Text as one terminal line: every control character escaped as in escapeInput, line breaks too, nothing cut. */
export function escapeLine(text: string): string {
  let out = '';
  for (const ch of text) out += escapeControl(ch);
  return out;
}

/** Quoted input: `"…"`, escaped and cut (see escapeInput). */
export function shown(text: string, max: number = SHOWN_MAX_CHARS): string {
  return `"${escapeInput(text, max)}"`;
}

/** A path from a flag or a file, escaped (see escapeInput), unquoted. */
export function shownPath(path: string): string {
  return escapeInput(path, PATH_MAX_CHARS);
}
