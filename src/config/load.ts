/**
 * Loading = read the file (YAML or JSON; YAML is a superset), lay the flags over it, validate
 * the result once. An error names where the bad value came from (the file and field, or the
 * flag) and what would fix it.
 */
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { TunrouteError } from '../errors.js';
import { flagsToInput, UP_FLAGS, type FlagValuesOf } from './flags.js';
import { configError } from './issues.js';
import { LIST_FILE_MAX_BYTES, readInputFile, warnIfShared } from './input-file.js';
import type { Logger } from '../logger.js';
import { shownPath } from '../errors.js';
import { configSchema, type Config } from './schema.js';
import { wgQuickOutbound } from './wg-quick.js';

/** Values given on the command line (see flags.ts: the table is the one list of them). */
export type FlagValues = FlagValuesOf<typeof UP_FLAGS>;

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A flag replaces the file's value (lists included): what you type is what runs. */
function overlay(base: JsonObject, top: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [k, v] of Object.entries(top)) {
    const b = out[k];
    out[k] = isObject(b) && isObject(v) ? overlay(b, v) : v;
  }
  return out;
}

/** Whether a config tree holds a private (or preshared) key, or the dashboard's secret, anywhere. */
function holdsKey(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(holdsKey);
  if (!isObject(v)) return false;
  return Object.entries(v).some(([k, x]) => (/^(?:privateKey|presharedKey|secret)$/.test(k) && typeof x === 'string') || holdsKey(x));
}

/** Read a YAML/JSON config file; with `log`, warn if it holds a key and others may read it. */
export function readConfigFile(file: string, log?: Pick<Logger, 'warn'>): JsonObject {
  const { text, mode } = readInputFile(file, {
    what: 'The config file',
    via: '-c',
    maxBytes: LIST_FILE_MAX_BYTES,
    cannot: (code) => `Cannot read the config file ${shownPath(file)} (${code}): check the path given with -c.`,
  });
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    const where = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}` : '';
    throw new TunrouteError('TR_BAD_CONFIG', `The config file ${file} is not valid YAML or JSON${where}: fix the syntax there.`, e);
  }
  if (doc === null || doc === undefined) return {};
  if (!isObject(doc)) {
    throw new TunrouteError('TR_BAD_CONFIG', `The config file ${file} must hold a mapping of settings (like "tun:" and "routes:") at its top level.`);
  }
  if (holdsKey(doc)) warnIfShared(file, mode, log);
  return doc;
}

/**
 * Build the effective config from an optional file and the flags. Throws TunrouteError. With
 * `log`, a file that holds a private key and that others may read is warned about.
 */
export function loadConfig(opts: { file?: string; flags?: FlagValues; log?: Pick<Logger, 'warn'> }): Config {
  return loadConfigInput(opts).config;
}

/**
 * loadConfig, also returning the merged input it validated: what `tunroute reload` (run as
 * root, able to read every file) hands to the running instance, which has given up root and
 * parses it again with the same schema (control/, app.ts).
 */
export function loadConfigInput(opts: { file?: string; flags?: FlagValues; log?: Pick<Logger, 'warn'> }): { config: Config; input: JsonObject } {
  const fromFile = opts.file ? readConfigFile(opts.file, opts.log) : {};
  const { input: fromFlags, flagOf } = flagsToInput(UP_FLAGS, opts.flags ?? {});
  const merged = overlay(fromFile, fromFlags as JsonObject);
  if (opts.flags?.tunnel !== undefined && opts.flags.tunnel.length > 0) {
    // --tunnel adds to the file's outbounds instead of replacing them; its own errors name the file and line.
    const tunnels = opts.flags.tunnel.map((f) => wgQuickOutbound(f, opts.log) as unknown as JsonObject);
    merged.outbounds = [...(Array.isArray(merged.outbounds) ? merged.outbounds : []), ...tunnels];
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) throw configError(result.error, merged, { file: opts.file, noFile: 'The configuration', flagOf });
  return { config: result.data, input: merged };
}

/** A merged input received from `tunroute reload`, validated again here (the sender is trusted only as far as the schema). */
export function parseConfigInput(input: unknown): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) throw configError(result.error, isObject(input) ? input : {}, { noFile: 'The reloaded configuration', flagOf: () => undefined });
  return result.data;
}
