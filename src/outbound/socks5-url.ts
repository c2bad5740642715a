/**
 * `socks5://[user:pass@]host[:port]` (and `socks5h://`) → a typed proxy address: the
 * SOCKS5-only entry point of the proxy URL parser (proxy-url.ts holds the rules and the
 * messages; `parseProxyUrl` there also takes `http://`).
 *
 * tunroute sends the destination as an IPv4 address, or as the name of a fake-IP flow, so
 * `socks5` and `socks5h` behave the same; the scheme is kept so it can be printed back.
 * The password never appears in an error message or in `formatSocks5Url(…, {redact: true})`.
 */
import { ProxyUrlError, formatProxyUrl, parseWith, type ParseProxyUrlOptions, type ProxyAuth, type Socks5Url } from './proxy-url.js';

export { SOCKS5_DEFAULT_PORT, type Socks5Url } from './proxy-url.js';
export type Socks5Auth = ProxyAuth;
export type ParseSocks5UrlOptions = ParseProxyUrlOptions;
/** A malformed proxy URL (see ProxyUrlError). */
export const Socks5UrlError = ProxyUrlError;

/** Parse a SOCKS5 proxy URL; throws TunrouteError (TR_BAD_FLAG or TR_BAD_CONFIG) on anything malformed. */
export function parseSocks5Url(value: string, opts: ParseSocks5UrlOptions = {}): Socks5Url {
  return parseWith(value, opts, ['socks5', 'socks5h']);
}

/** Print a parsed URL back; with `redact` (default true) the password shows as `***`. */
export function formatSocks5Url(u: Socks5Url, opts: { redact?: boolean } = {}): string {
  return formatProxyUrl(u, opts);
}
