/**
 * The upstreams' own addresses: tunroute's sockets to its SOCKS5 and HTTP proxies and its tunnels' UDP
 * to their WireGuard endpoints must never be routed into tun0, or every flow (every sealed
 * datagram) would loop back into tunroute.
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
import type { ProxyUrl } from '../outbound/proxy-url.js';

interface UpstreamBase {
  /** The outbound's name ("proxy" for --proxy). */
  readonly name: string;
  /** Where it is configured: "proxy", "outbounds[1].url" or "outbounds[2].peers[0].endpoint". */
  readonly field: string;
  readonly host: string;
  readonly hostKind: 'ipv4' | 'name';
  readonly port: number;
}

/** A SOCKS5 or HTTP proxy, or a WireGuard peer's endpoint (pinned to an address by expandTunnels). */
export type UpstreamRef = (UpstreamBase & { readonly kind: 'socks5' | 'http'; readonly url: ProxyUrl }) | (UpstreamBase & { readonly kind: 'wireguard' });

export interface ResolvedUpstream {
  readonly name: string;
  readonly kind: UpstreamRef['kind'];
  /** As configured: an address or a host name. */
  readonly host: string;
  readonly port: number;
  /** IPv4 addresses kept out of tun0; the first is the one tunroute connects to. */
  readonly addrs: readonly string[];
}

/** Every upstream a config names (the schema parsed their URLs and endpoints). */
export function upstreamsOf(config: Config): UpstreamRef[] {
  const out: UpstreamRef[] = [];
  const proxy = (name: string, url: ProxyUrl, field: string): UpstreamRef => ({
    name,
    kind: url.scheme === 'http' ? 'http' : 'socks5',
    url,
    field,
    host: url.host,
    hostKind: url.hostKind === 'ipv4' ? 'ipv4' : 'name',
    port: url.port,
  });
  if (config.proxy !== undefined) out.push(proxy(PROXY_OUTBOUND, config.proxy, 'proxy'));
  config.outbounds.forEach((o, i) => {
    if (o.type === 'socks5' || o.type === 'http') {
      out.push(proxy(o.name, o.url, `outbounds[${i}].url`));
    } else if (o.type === 'wireguard') {
      o.peers.forEach((p, j) => {
        // The schema admits IPv4 and host names only; anything else never reaches here.
        const ep = p.endpoint;
        if (ep === undefined || ep.kind === 'ipv6') return;
        out.push({ name: o.name, kind: 'wireguard', field: `outbounds[${i}].peers[${j}].endpoint`, host: ep.host, hostKind: ep.kind, port: ep.port });
      });
    }
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
      const base = { name: r.name, kind: r.kind, host: r.host, port: r.port };
      if (r.hostKind === 'ipv4') return { ...base, addrs: [r.host] };
      let addrs: string[];
      try {
        addrs = [...new Set(await resolve(r.host))];
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? String(e);
        throw new TunrouteError(
          'TR_UPSTREAM',
          `Cannot resolve ${r.host} (${r.field}, ${code}): tunroute must know the upstream's address before it changes routes, to keep it out of the tunnel; check DNS or give the address.`,
          e,
        );
      }
      if (addrs.length === 0) {
        throw new TunrouteError('TR_UPSTREAM', `${r.host} (${r.field}) has no IPv4 address: give the upstream's IPv4 address instead.`);
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
  const pinned = <U extends ProxyUrl>(url: U, i: number): U => ({ ...url, host: resolved[i].addrs[0], hostKind: 'ipv4' });
  let next: Config = config;
  refs.forEach((ref, i) => {
    // Tunnel endpoints are pinned earlier, by expandTunnels, which also resolves them.
    if (ref.kind === 'wireguard' || ref.hostKind === 'ipv4') return;
    const url = ref.url;
    if (ref.field === 'proxy') next = { ...next, proxy: pinned(url, i) };
    else {
      const idx = Number(/^outbounds\[(\d+)\]/.exec(ref.field)![1]);
      next = {
        ...next,
        outbounds: next.outbounds.map((o, j) => {
          if (j !== idx) return o;
          if (o.type === 'socks5') return { ...o, url: pinned(o.url, i) };
          if (o.type === 'http') return { ...o, url: pinned(o.url, i) };
          return o;
        }),
      };
    }
  });
  return next;
}
