/**
 * Endpoints: a host (an IPv4 address, a DNS name, or an IPv6 address in brackets) and a port,
 * written `host:port`. One parser for every place that takes one: WireGuard peers' Endpoint,
 * the DNS upstream, the server's listen address, `why`'s destination.
 */
import { isIPv6 } from 'node:net';
import { ipToU32 } from './ipv4.js';

export type HostKind = 'ipv4' | 'ipv6' | 'name';

export interface Endpoint {
  /** As written (an IPv6 address without its brackets). */
  readonly host: string;
  readonly port: number;
  readonly kind: HostKind;
}

/** An endpoint whose host is an IPv4 address, with the address as uint32 beside its text. */
export interface Ipv4Endpoint extends Endpoint {
  readonly kind: 'ipv4';
  readonly addr: number;
}

const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A DNS host name: RFC 1123 labels joined by dots, one optional trailing dot, 253 characters
 * at most. All-numeric dotted names are refused: they are mistyped addresses, not names.
 */
export function isHostName(s: string): boolean {
  const name = s.endsWith('.') ? s.slice(0, -1) : s;
  if (name.length === 0 || name.length > 253 || /^[0-9.]+$/.test(name)) return false;
  return name.split('.').every((l) => LABEL_RE.test(l));
}

/** A port 1..65535 written in decimal (at most five digits), or undefined. */
export function parsePort(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const port = Number(s);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** The kind of a host as written, or undefined when it is none of an address or a name. */
export function hostKindOf(host: string): HostKind | undefined {
  if (ipToU32(host) !== undefined) return 'ipv4';
  if (isIPv6(host)) return 'ipv6';
  return isHostName(host) ? 'name' : undefined;
}

/** `host:port`, `a.b.c.d:port` or `[v6]:port`; undefined when malformed. */
export function parseEndpoint(s: string): Endpoint | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s);
  if (m === null) return undefined;
  const port = parsePort(m[3]);
  if (port === undefined) return undefined;
  if (m[1] !== undefined) return isIPv6(m[1]) ? { host: m[1], port, kind: 'ipv6' } : undefined;
  const host = m[2];
  const kind = hostKindOf(host);
  return kind === undefined || kind === 'ipv6' ? undefined : { host, port, kind };
}

/**
 * `a.b.c.d:port`, or a bare `a.b.c.d` when a default port is given: an endpoint that must be
 * an IPv4 address (the DNS upstream, a listen address). Port 0 is refused.
 */
export function parseIpv4Endpoint(s: string, defaultPort?: number): Ipv4Endpoint | undefined {
  const colon = s.lastIndexOf(':');
  const hostText = colon < 0 ? s : s.slice(0, colon);
  const port = colon < 0 ? defaultPort : parsePort(s.slice(colon + 1));
  const addr = ipToU32(hostText);
  if (addr === undefined || port === undefined) return undefined;
  return { host: hostText, port, kind: 'ipv4', addr };
}

/** The text form `parseEndpoint` reads back: `host:port`, `[v6]:port`. */
export function formatEndpoint(e: Pick<Endpoint, 'host' | 'port' | 'kind'>): string {
  return e.kind === 'ipv6' ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}
