/**
 * Which packets read from the device go to a tunnel: the dispatcher asks this hook first, for
 * every validated IPv4 packet of every protocol (fragments too), before anything is
 * terminated. The decision is the router's (the tunnel's AllowedIPs are rules to it, so a more
 * specific rule can still send part of them elsewhere); the hook only exists when a tunnel
 * does, and then costs one rule lookup per packet.
 */
import { getU16 } from '../wire/checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP, type Ipv4Packet } from '../wire/ipv4.js';
import type { WireguardTunnel } from './tunnel.js';

/** True when the packet was taken (the dispatcher then does nothing more with it). */
export type ForwardHook = (ip: Ipv4Packet, vnetOff: number) => boolean;

/** The router's answer for a packet: the outbound's name (see Router.route). */
export type RouteFn = (dstIp: number, protocol: number, dstPort: number) => string;

/** The hook that hands tunnel-bound packets to their tunnel; undefined when there is no tunnel. */
export function tunnelForwardHook(route: RouteFn, tunnels: ReadonlyMap<string, WireguardTunnel>): ForwardHook | undefined {
  if (tunnels.size === 0) return undefined;
  return (ip, vnetOff) => {
    const proto = ip.protocol;
    // A non-first fragment has no ports: rules with ports cannot match it (as for ICMP).
    const port =
      (proto === IP_PROTO_TCP || proto === IP_PROTO_UDP) && ip.fragOffset === 0 && ip.payloadLen >= 4
        ? getU16(ip.buffer, ip.payloadOffset + 2)
        : 0;
    const tunnel = tunnels.get(route(ip.dst, proto, port));
    if (tunnel === undefined) return false;
    tunnel.sendPacket(ip, vnetOff);
    return true;
  };
}
