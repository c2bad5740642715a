/**
 * A proxy URL → a typed proxy address: `socks5://`, `socks5h://` (socks5-url.ts keeps the
 * SOCKS5-only entry point) and `http://` (an HTTP proxy reached by CONNECT, http.ts).
 *
 * Accepted: the scheme (any case); optional `user:pass@` with percent-decoding (RFC 3986
 * §3.2.1; both parts 1–255 bytes: RFC 1929 for SOCKS5, and the same bound keeps an HTTP Basic
 * header small); host an IPv4 dotted quad or a DNS name; port 1–65535, default 1080 for SOCKS5
 * and 80 for http (the scheme's own port, as a browser's proxy setting reads it); one optional
 * trailing `/`. Rejected with one sentence naming the value and the fix: other schemes, paths,
 * queries, IPv6 literals (tunroute is IPv4-only), bad ports, bad host names, broken
 * percent-escapes, and for http a user name with ":" (Basic auth cannot carry it, RFC 7617 §2).
 *
 * The password never appears in an error message or in `formatProxyUrl(…, {redact: true})`.
 */
import { TunrouteError, shown, type ErrorCode } from '../errors.js';
import { ipToU32 } from '../net/ipv4.js';
import { isHostName } from '../net/endpoint.js';

export const SOCKS5_DEFAULT_PORT = 1080;
export const HTTP_PROXY_DEFAULT_PORT = 80;

export interface ProxyAuth {
  readonly username: string;
  readonly password: string;
}

interface ProxyUrlBase {
  readonly host: string;
  readonly hostKind: 'ipv4' | 'hostname';
  readonly port: number;
  readonly auth?: ProxyAuth;
}

export interface Socks5Url extends ProxyUrlBase {
  readonly scheme: 'socks5' | 'socks5h';
}

export interface HttpProxyUrl extends ProxyUrlBase {
  readonly scheme: 'http';
}

export type ProxyUrl = Socks5Url | HttpProxyUrl;
export type ProxyScheme = ProxyUrl['scheme'];

export interface ParseProxyUrlOptions {
  /** Where the value came from, to start the message: '--proxy' (default) or 'tunroute.yaml: proxy'. */
  readonly source?: string;
  /** TR_BAD_FLAG (default) for a flag, TR_BAD_CONFIG for a config file field. */
  readonly code?: Extract<ErrorCode, 'TR_BAD_FLAG' | 'TR_BAD_CONFIG'>;
}

/**
 * A malformed proxy URL. `detail` is the message without its source: the value as it may be
 * shown (password hidden), the problem and the fix; the config schema puts its own source in
 * front (the flag, or the file and field).
 */
export class ProxyUrlError extends TunrouteError {
  constructor(
    code: Extract<ErrorCode, 'TR_BAD_FLAG' | 'TR_BAD_CONFIG'>,
    source: string,
    readonly detail: string,
  ) {
    super(code, `${source} ${detail}.`);
  }
}

const EXAMPLES: Record<'socks5' | 'any', string> = {
  socks5: 'socks5://127.0.0.1:1080 or socks5://user:pass@proxy.example:1080',
  any: 'socks5://127.0.0.1:1080, socks5://user:pass@proxy.example:1080 or http://user:pass@proxy.example:3128',
};

/** Parse a SOCKS5 or HTTP proxy URL; throws ProxyUrlError (TR_BAD_FLAG or TR_BAD_CONFIG) on anything malformed. */
export function parseProxyUrl(value: string, opts: ParseProxyUrlOptions = {}): ProxyUrl {
  return parseWith(value, opts, ['socks5', 'socks5h', 'http']);
}

/** The parser behind parseProxyUrl and parseSocks5Url: `accept` lists the schemes taken. */
export function parseWith<S extends ProxyScheme>(value: string, opts: ParseProxyUrlOptions, accept: readonly S[]): Extract<ProxyUrl, { scheme: S }> {
  const source = opts.source ?? '--proxy';
  const code = opts.code ?? 'TR_BAD_FLAG';
  const httpToo = (accept as readonly ProxyScheme[]).includes('http');
  const example = EXAMPLES[httpToo ? 'any' : 'socks5'];
  const fail = (problem: string, fix = `write it as ${example}`): ProxyUrlError =>
    new ProxyUrlError(code, source, `${shown(redact(value))}: ${problem}; ${fix}`);

  const schemeEnd = value.indexOf('://');
  if (schemeEnd < 0) throw fail('the scheme is missing', `write it as socks5://${value === '' ? 'HOST:PORT' : redact(value)}${httpToo ? ' (or http:// for an HTTP proxy)' : ''}`);
  const scheme = value.slice(0, schemeEnd).toLowerCase() as S;
  if (!accept.includes(scheme)) {
    const only = httpToo ? 'SOCKS5 and HTTP (CONNECT) proxies are supported: use socks5:// or http://' : 'only SOCKS5 proxies are supported: use socks5://';
    throw fail(`the scheme ${shown(value.slice(0, schemeEnd))} is not supported`, only);
  }
  const http = scheme === 'http';
  let rest = value.slice(schemeEnd + 3);
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  if (/\s/.test(rest)) throw fail('it contains whitespace', 'percent-encode spaces in the user name or password as %20');

  let auth: ProxyAuth | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    if (colon < 0) throw fail('the user name has no password', `write user:password@ (${http ? 'Basic' : 'SOCKS5 username'} authentication needs both)`);
    const username = decode(userinfo.slice(0, colon));
    const password = decode(userinfo.slice(colon + 1));
    if (username === undefined || password === undefined) {
      throw fail('the user name or password has a broken percent-escape', 'encode "%" as %25 and other special characters as %XX');
    }
    if (username === '' || password === '') throw fail('the user name and password must not be empty', 'give both, or drop the "@" part');
    if (Buffer.byteLength(username) > 255 || Buffer.byteLength(password) > 255) {
      throw fail('the user name or password is longer than 255 bytes', http ? 'tunroute sends at most 255 bytes each' : 'SOCKS5 (RFC 1929) allows at most 255 bytes each');
    }
    if (http && username.includes(':')) throw fail('the user name contains ":"', 'HTTP Basic authentication cannot carry it (RFC 7617): use a user name without ":"');
    auth = { username, password };
  }

  if (/[/?#]/.test(rest)) throw fail('a proxy URL has no path, query or fragment', 'remove everything after the port');
  if (rest.startsWith('[')) throw fail('IPv6 proxy addresses are not supported', 'use the proxy\'s IPv4 address or a host name');
  let hostPart = rest;
  let port = http ? HTTP_PROXY_DEFAULT_PORT : SOCKS5_DEFAULT_PORT;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    hostPart = rest.slice(0, colon);
    const portText = rest.slice(colon + 1);
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw fail(`the port ${shown(portText)} is not a number from 1 to 65535`, `give a port such as ${scheme}://${hostPart || 'HOST'}:${http ? 3128 : 1080}`);
    }
    port = Number(portText);
  }
  if (hostPart === '') throw fail('the host is missing', `write it as ${example}`);
  if (hostPart.includes(':')) throw fail('IPv6 proxy addresses are not supported', 'use the proxy\'s IPv4 address or a host name');

  const host = hostPart.toLowerCase();
  let hostKind: ProxyUrl['hostKind'];
  if (/^[\d.]+$/.test(host)) {
    if (ipToU32(host) === undefined) throw fail(`${shown(hostPart)} is not a valid IPv4 address`, 'write four numbers 0–255 without leading zeros, such as 127.0.0.1');
    hostKind = 'ipv4';
  } else {
    if (!isHostName(host)) {
      throw fail(`${shown(hostPart)} is not a valid host name`, 'use letters, digits, "-" and "." only, or an IPv4 address');
    }
    hostKind = 'hostname';
  }

  const u = auth === undefined ? { scheme, host, hostKind, port } : { scheme, host, hostKind, port, auth };
  return u as Extract<ProxyUrl, { scheme: S }>;
}

/** Print a parsed URL back; with `redact` (default true) the password shows as `***`. */
export function formatProxyUrl(u: ProxyUrl, opts: { redact?: boolean } = {}): string {
  const redactIt = opts.redact ?? true;
  const auth =
    u.auth === undefined
      ? ''
      : `${encodeURIComponent(u.auth.username)}:${redactIt ? '***' : encodeURIComponent(u.auth.password)}@`;
  return `${u.scheme}://${auth}${u.host}:${u.port}`;
}

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** Hide the password of a raw (maybe malformed) URL before it goes into a message. */
function redact(value: string): string {
  const schemeEnd = value.indexOf('://');
  const start = schemeEnd < 0 ? 0 : schemeEnd + 3;
  const at = value.lastIndexOf('@');
  if (at < start) return value;
  const colon = value.indexOf(':', start);
  if (colon < 0 || colon > at) return value;
  return `${value.slice(0, colon + 1)}***${value.slice(at)}`;
}
