/**
 * Loading = read the file (YAML or JSON; YAML is a superset), lay the flags over it, validate
 * the result once. An error names where the bad value came from (the file and field, or the
 * flag) and what would fix it.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { TunrouteError } from '../errors.js';
import { configSchema, type Config } from './schema.js';
import { wgQuickOutbound } from './wg-quick.js';

/** Values given on the command line, already in the schema's shape (see flagsToConfig). */
export interface FlagValues {
  tun?: string;
  address?: string;
  mtu?: number;
  route?: string[];
  icmp?: string;
  logLevel?: string;
  control?: string;
  proxy?: string;
  offload?: boolean;
  dns?: string;
  /** wg-quick files, each becoming a wireguard outbound named after the file (added to the file's outbounds). */
  tunnel?: string[];
  exclude?: string[];
  routeFile?: string[];
  excludeFile?: string[];
  excludeUid?: Array<number | [number, number]>;
  table?: 'auto' | 'main' | number;
  lan?: string;
  ipv6Guard?: boolean;
  killSwitch?: boolean;
  watchdog?: boolean;
  stateDir?: string;
}

/** Which config field each flag sets, so an error about that field can name the flag. */
const FLAG_OF_FIELD: Record<string, string> = {
  'tun.name': '--tun',
  'tun.address': '--address',
  'tun.mtu': '--mtu',
  'routes.include': '--route',
  icmp: '--icmp',
  'log.level': '--log-level',
  'control.socket': '--control',
  proxy: '--proxy',
  'tun.offload': '--no-offload',
  'dns.mode': '--dns',
  'routes.exclude': '--exclude',
  'routes.includeFiles': '--route-file',
  'routes.excludeFiles': '--exclude-file',
  'routes.excludeUids': '--exclude-uid',
  'routes.table': '--table',
  'routes.lan': '--lan',
  'routes.ipv6Guard': '--no-ipv6-guard',
  'routes.killSwitch': '--kill-switch',
  'routes.watchdog': '--no-watchdog',
  stateDir: '--state-dir',
};

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function setPath(obj: JsonObject, path: string, value: Json): void {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    const next = cur[k];
    if (!isObject(next)) cur[k] = {};
    cur = cur[k] as JsonObject;
  }
  cur[keys[keys.length - 1]!] = value;
}

export function flagsToInput(flags: FlagValues): { input: JsonObject; given: Set<string> } {
  const input: JsonObject = {};
  const given = new Set<string>();
  const put = (path: string, v: Json | undefined): void => {
    if (v === undefined) return;
    setPath(input, path, v);
    given.add(path);
  };
  put('tun.name', flags.tun);
  put('tun.address', flags.address);
  put('tun.mtu', flags.mtu);
  put('routes.include', flags.route);
  put('icmp', flags.icmp);
  put('log.level', flags.logLevel);
  put('control.socket', flags.control);
  put('proxy', flags.proxy);
  put('tun.offload', flags.offload);
  put('dns.mode', flags.dns);
  put('routes.exclude', flags.exclude);
  put('routes.includeFiles', flags.routeFile);
  put('routes.excludeFiles', flags.excludeFile);
  put('routes.excludeUids', flags.excludeUid);
  put('routes.table', flags.table);
  put('routes.lan', flags.lan);
  put('routes.ipv6Guard', flags.ipv6Guard);
  put('routes.killSwitch', flags.killSwitch);
  put('routes.watchdog', flags.watchdog);
  put('stateDir', flags.stateDir);
  return { input, given };
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
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new TunrouteError('TR_CONFIG_READ', `Cannot read the config file ${file} (${code}): check the path given with -c.`, e);
  }
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

function describeIssue(
  issue: z.core.$ZodIssue,
  file: string | undefined,
  given: Set<string>,
  value: unknown,
): { fromFlag: boolean; message: string } {
  const dotted = issue.path.filter((p) => typeof p === 'string').join('.');
  const fullPath = issue.path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join('');
  const shown = value === undefined ? '' : ` ${JSON.stringify(value)}`;
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.join(', ');
    const at = fullPath ? ` in ${fullPath}` : '';
    return { fromFlag: false, message: `The config file ${file ?? ''} has unknown setting(s) ${keys}${at}: remove them or check their spelling.` };
  }
  const flag = FLAG_OF_FIELD[dotted];
  if (flag && given.has(dotted)) {
    return { fromFlag: true, message: `The flag ${flag}${shown} ${issue.message}: give a valid value.` };
  }
  const source = file ? `The config file ${file}: ` : 'The configuration: ';
  return { fromFlag: false, message: `${source}${fullPath}${shown} ${issue.message}: correct that field.` };
}

function valueAt(obj: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = obj;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

/** Build the effective config from an optional file and the flags. Throws TunrouteError. */
export function loadConfig(opts: { file?: string; flags?: FlagValues }): Config {
  const fromFile = opts.file ? readConfigFile(opts.file) : {};
  const { input: fromFlags, given } = flagsToInput(opts.flags ?? {});
  const merged = overlay(fromFile, fromFlags);
  if (opts.flags?.tunnel !== undefined && opts.flags.tunnel.length > 0) {
    // --tunnel adds to the file's outbounds instead of replacing them; its own errors name the file and line.
    const tunnels = opts.flags.tunnel.map((f) => wgQuickOutbound(f) as unknown as JsonObject);
    merged.outbounds = [...(Array.isArray(merged.outbounds) ? merged.outbounds : []), ...tunnels];
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const { fromFlag, message } = describeIssue(issue, opts.file, given, valueAt(merged, issue.path));
    throw new TunrouteError(fromFlag ? 'TR_BAD_FLAG' : 'TR_BAD_CONFIG', message);
  }
  return result.data;
}
