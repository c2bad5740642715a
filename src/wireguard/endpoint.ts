/**
 * Endpoints — WireGuard whitepaper §2.1 (Cryptokey Routing, "Built-in Roaming"): a peer's
 * endpoint is the outer source address and port of the most recent authenticated packet
 * received from it. Addresses are strings as node:dgram reports them.
 */
import { isIPv4 } from 'node:net';

export interface Endpoint {
  /** '192.0.2.1' or an IPv6 literal. */
  readonly address: string;
  readonly port: number;
}

/** A datagram to send to an endpoint. */
export interface Datagram {
  readonly data: Uint8Array;
  readonly to: Endpoint;
}

export function endpointEquals(a: Endpoint | undefined, b: Endpoint | undefined): boolean {
  return a !== undefined && b !== undefined && a.address === b.address && a.port === b.port;
}

export function formatEndpoint(e: Endpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/**
 * The bytes a cookie is bound to (whitepaper §5.4.7: "the source IP address and port of the
 * initiator"): the IPv4 address's 4 bytes or the address text, then the port big-endian.
 * Only the responder computes it, so the encoding is ours to choose.
 */
export function endpointBytes(e: Endpoint): Uint8Array {
  let addr: Uint8Array;
  if (isIPv4(e.address)) addr = Uint8Array.from(e.address.split('.').map(Number));
  else addr = new TextEncoder().encode(e.address.toLowerCase());
  const out = new Uint8Array(addr.length + 2);
  out.set(addr, 0);
  out[addr.length] = (e.port >>> 8) & 0xff;
  out[addr.length + 1] = e.port & 0xff;
  return out;
}
