/**
 * A failed validation as one sentence that names where the bad value came from (the config
 * file and field, or the flag), the value, and what would fix it. Shared by `up`'s config
 * (load.ts) and the server's (server-schema.ts), so both speak alike.
 *
 * Secrets are never echoed: a key field is named without its value, and a value that knows how
 * to show itself (a proxy URL, whose password is hidden) says so in the issue (`OWN_TEXT`).
 */
import type { z } from 'zod';
import { TunrouteError, escapeInput, shown } from '../errors.js';

/** Fields whose values are secrets (keys, passwords, tokens): named in errors, never shown. */
const SECRET_FIELD = /(?:privateKey|presharedKey|password|passphrase|secret|token)$/i;

/** A value as an error may quote it: scalars escaped and cut, secrets and objects not at all. */
function quoted(value: unknown, secret: boolean): string {
  if (typeof value === 'string') return secret ? '' : ` ${shown(value)}`;
  if (typeof value === 'number' || typeof value === 'boolean') return secret ? '' : ` ${String(value)}`;
  return '';
}

/**
 * A custom issue whose message already holds the value (as it may be shown) and its fix, e.g.
 * `"socks5://bob:***@h:0": the port "0" is not a number from 1 to 65535; give …`. Set
 * `params: { [OWN_TEXT]: true }` on it.
 */
export const OWN_TEXT = 'tunrouteOwnText';

/** Where the values being validated came from. */
export interface IssueSource {
  /** The config file, if any. */
  readonly file?: string;
  /** How to name the input when there is no file: "The configuration". */
  readonly noFile: string;
  /** The flag that set this dotted field (routes.include), if a flag did. */
  flagOf(field: string): string | undefined;
}

/** The value at `path` in a plain object tree, or undefined. */
export function valueAt(obj: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = obj;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

/** `outbounds[0].peers[1].endpoint`: the field as a user finds it in the file. */
export function fieldPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** A message that carries its own fix ("is missing: set …") needs no generic one; "(known: a, b)" is no fix. */
function hasOwnFix(message: string): boolean {
  const colon = message.indexOf(': ');
  const paren = message.indexOf('(');
  return colon >= 0 && (paren < 0 || colon < paren);
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown, src: IssueSource): { fromFlag: boolean; message: string } {
  const where = fieldPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const at = where ? ` in ${where}` : '';
    return { fromFlag: false, message: `The config file ${src.file ?? ''} has unknown setting(s) ${issue.keys.map((k) => escapeInput(k, 40)).join(', ')}${at}: remove them or check their spelling.` };
  }
  const value = valueAt(input, issue.path);
  const ownText = issue.code === 'custom' && issue.params?.[OWN_TEXT] === true;
  const flag = src.flagOf(issue.path.filter((p) => typeof p === 'string').join('.'));
  const secret = SECRET_FIELD.test(where);
  if (flag !== undefined) {
    if (ownText) return { fromFlag: true, message: `${flag} ${issue.message}.` };
    return { fromFlag: true, message: `The flag ${flag}${quoted(value, secret)} ${issue.message}: give a valid value.` };
  }
  const source = src.file ? `The config file ${src.file}: ` : `${src.noFile}: `;
  if (ownText) return { fromFlag: false, message: `${source}${where} ${issue.message}.` };
  const shownValue = quoted(value, secret);
  const message = issue.code === 'invalid_type' && value === undefined ? 'is missing' : issue.message;
  return { fromFlag: false, message: hasOwnFix(message) ? `${source}${where}${shownValue} ${message}.` : `${source}${where}${shownValue} ${message}: correct that field.` };
}

/** The first issue of a failed validation as a TunrouteError (TR_BAD_FLAG when a flag set the value). */
export function configError(error: z.ZodError, input: unknown, src: IssueSource): TunrouteError {
  const { fromFlag, message } = describeIssue(error.issues[0], input, src);
  return new TunrouteError(fromFlag ? 'TR_BAD_FLAG' : 'TR_BAD_CONFIG', message);
}
