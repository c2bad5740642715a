/**
 * Loading = read the file (YAML or JSON; YAML is a superset), lay the flags over it, validate
 * the result once. An error names where the bad value came from (the file and field, or the
 * flag) and what would fix it.
 */
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { TunrouteError } from '../errors.js';
import { flagsToInput, UP_FLAGS, type FlagValuesOf } from './flags.js';
import { configError, readConfigText } from './issues.js';
import { configSchema, type Config } from './schema.js';
import { wgQuickOutbound } from './wg-quick.js';

/** Values given on the command line (see flags.ts: the table is the one list of them). */
export type FlagValues = FlagValuesOf<typeof UP_FLAGS>;

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

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

export function readConfigFile(file: string): JsonObject {
  const text = readConfigText(file, (code) => `Cannot read the config file ${file} (${code}): check the path given with -c.`);
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
  return doc;
}

/** Build the effective config from an optional file and the flags. Throws TunrouteError. */
export function loadConfig(opts: { file?: string; flags?: FlagValues }): Config {
  const fromFile = opts.file ? readConfigFile(opts.file) : {};
  const { input: fromFlags, flagOf } = flagsToInput(UP_FLAGS, opts.flags ?? {});
  const merged = overlay(fromFile, fromFlags as JsonObject);
  if (opts.flags?.tunnel !== undefined && opts.flags.tunnel.length > 0) {
    // --tunnel adds to the file's outbounds instead of replacing them; its own errors name the file and line.
    const tunnels = opts.flags.tunnel.map((f) => wgQuickOutbound(f) as unknown as JsonObject);
    merged.outbounds = [...(Array.isArray(merged.outbounds) ? merged.outbounds : []), ...tunnels];
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) throw configError(result.error, merged, { file: opts.file, noFile: 'The configuration', flagOf });
  return result.data;
}
