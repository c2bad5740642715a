/**
 * The upstreams' own addresses: tunroute's sockets to its SOCKS5 servers (and, later, tunnel
 * endpoints) must never be routed into tun0, or every flow would loop back into tunroute.
 *
 * The plan carves each upstream address out of what enters tun0, so the kernel looks it up in
 * the main table like any other direct destination (and follows a new default route by
 * itself). A host name is resolved once before anything changes, and the outbounds are then
 * built with the address that was resolved (`pinUpstreams`): a later DNS answer can never
 * point tunroute's own connections at an address that is routed into tun0.
 */
import { lookup } from 'node:dns/promises';
import { TunrouteError } from '../errors.js';
import type { Config } from '../config/schema.js';
import { PROXY_OUTBOUND } from '../config/schema.js';
import { formatSocks5Url, parseSocks5Url, type Socks5Url } from '../outbound/socks5-url.js';

export interface UpstreamRef {
  /** The outbound's name ("proxy" for --proxy). */
  readonly name: string;
  readonly kind: 'socks5';
  readonly url: Socks5Url;
  /** Where it is configured: "proxy" or "outbounds[1].url". */
  readonly field: string;
}

export interface ResolvedUpstream {
  readonly name: string;
  readonly kind: 'socks5';
  /** As configured: an address or a host name. */
  readonly host: string;
  readonly port: number;
  /** IPv4 addresses kept out of tun0; the first is the one tunroute connects to. */
  readonly addrs: readonly string[];
}

/** Every upstream a config names, parsed (bad URLs fail here, before anything changes). */
export function upstreamsOf(config: Config): UpstreamRef[] {
  const out: UpstreamRef[] = [];
  if (config.proxy !== undefined) {
    out.push({ name: PROXY_OUTBOUND, kind: 'socks5', url: parseSocks5Url(config.proxy, { source: '--proxy', code: 'TR_BAD_FLAG' }), field: 'proxy' });
  }
  config.outbounds.forEach((o, i) => {
    if (o.type !== 'socks5') return;
    const field = `outbounds[${i}].url`;
    out.push({ name: o.name, kind: 'socks5', url: parseSocks5Url(o.url, { source: field, code: 'TR_BAD_CONFIG' }), field });
  });
  return out;
}

export type Resolver = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo, so /etc/hosts counts), IPv4 only. */
export const systemResolver: Resolver = async (host) => (await lookup(host, { all: true, family: 4 })).map((a) => a.address);

/** Resolve host names; an IPv4 literal stays as it is. Fails in one sentence if a name has no IPv4 address. */
export async function resolveUpstreams(refs: readonly UpstreamRef[], resolve: Resolver = systemResolver): Promise<ResolvedUpstream[]> {
  return Promise.all(
    refs.map(async (r): Promise<ResolvedUpstream> => {
      const base = { name: r.name, kind: r.kind, host: r.url.host, port: r.url.port };
      if (r.url.hostKind === 'ipv4') return { ...base, addrs: [r.url.host] };
      let addrs: string[];
      try {
        addrs = [...new Set(await resolve(r.url.host))];
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? String(e);
        throw new TunrouteError(
          'TR_UPSTREAM',
          `Cannot resolve ${r.url.host} (${r.field}, ${code}): tunroute must know the upstream's address before it changes routes, to keep it out of the tunnel; check DNS or give the address.`,
          e,
        );
      }
      if (addrs.length === 0) {
        throw new TunrouteError('TR_UPSTREAM', `${r.url.host} (${r.field}) has no IPv4 address: give the upstream's IPv4 address instead.`);
      }
      return { ...base, addrs };
    }),
  );
}

/**
 * The config with every upstream host name replaced by the address the plan keeps out of tun0,
 * so the outbounds connect exactly there.
 */
export function pinUpstreams(config: Config, refs: readonly UpstreamRef[], resolved: readonly ResolvedUpstream[]): Config {
  const pinned = (ref: UpstreamRef, i: number): string => {
    const r = resolved[i]!;
    return formatSocks5Url({ ...ref.url, host: r.addrs[0]!, hostKind: 'ipv4' }, { redact: false });
  };
  let next: Config = config;
  refs.forEach((ref, i) => {
    if (ref.url.hostKind === 'ipv4') return;
    if (ref.field === 'proxy') next = { ...next, proxy: pinned(ref, i) };
    else {
      const idx = Number(/^outbounds\[(\d+)\]/.exec(ref.field)![1]);
      next = {
        ...next,
        outbounds: next.outbounds.map((o, j) => (j === idx && o.type === 'socks5' ? { ...o, url: pinned(ref, i) } : o)),
      };
    }
  });
  return next;
}
