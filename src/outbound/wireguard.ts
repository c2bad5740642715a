/**
 * The WireGuard outbounds of `tunroute up`: not flows but whole packets. Each configured tunnel
 * is a WireguardTunnel (src/wireguard/client-tunnel.ts) on its own UDP socket, and the
 * dispatcher asks the forward hook below first, for every validated IPv4 packet of every
 * protocol (fragments too), before anything is terminated. The decision is the router's (the
 * tunnel's AllowedIPs are rules to it, so a more specific rule can still send part of them
 * elsewhere); the hook only exists when a tunnel does, and then costs one rule lookup per packet.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import type { ForwardHandler } from '../stack/dispatcher.js';
import { getU16 } from '../wire/checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { WireguardTunnel, type TunnelDevice, type TunnelSpec } from '../wireguard/client-tunnel.js';
import { DEFAULT_TUNNEL_MTU } from '../wireguard/peer.js';
import type { UdpTransport } from '../wireguard/transport.js';

/** The router's answer for a packet: the outbound's name (see Router.route). */
export type RouteFn = (dstIp: number, protocol: number, dstPort: number) => string;

/**
 * The hook that hands tunnel-bound packets to their tunnel; undefined when there is no tunnel.
 *
 * `dnsServers` (DNS hijacked: dns.mode hijack or fakeip): TCP and UDP to port 53 are left to the
 * engine, which answers them (a name that goes through a tunnel is asked of the tunnel's
 * resolver, dns/tunnel-dns.ts), except to the tunnel's own DNS servers listed here by tunnel:
 * tunroute's queries to them, and an app's own, go through. Without this, a full tunnel over
 * WireGuard would carry every app's query to the system's resolver into the tunnel unanswered.
 */
export function tunnelForwardHook(route: RouteFn, tunnels: ReadonlyMap<string, WireguardTunnel>, dnsServers?: ReadonlyMap<string, readonly number[]>): ForwardHandler | undefined {
  if (tunnels.size === 0) return undefined;
  return (ip, vnetOff) => {
    const proto = ip.protocol;
    // A non-first fragment has no ports: rules with ports cannot match it (as for ICMP).
    const port =
      (proto === IP_PROTO_TCP || proto === IP_PROTO_UDP) && ip.fragOffset === 0 && ip.payloadLen >= 4
        ? getU16(ip.buffer, ip.payloadOffset + 2)
        : 0;
    const name = route(ip.dst, proto, port);
    const tunnel = tunnels.get(name);
    if (tunnel === undefined) return false;
    if (port === 53 && dnsServers !== undefined && dnsServers.get(name)?.includes(ip.dst) !== true) return false;
    tunnel.sendPacket(ip, vnetOff);
    return true;
  };
}

export interface OpenTunnelsDeps {
  /** The device (tun0): where decrypted packets go. */
  link: TunnelDevice;
  clock: Clock;
  logger: Logger;
  /** The device's own address (uint32): the NAT maps it to each tunnel's address. */
  deviceAddress: number;
  /** The UDP socket of one tunnel; default openUdpTransport (the addon's batched socket, else node:dgram). */
  openTransport?: (spec: TunnelSpec) => Promise<UdpTransport>;
}

/** Bind every tunnel's UDP socket and build the tunnels (not started); on a failure, close what was opened. */
export async function openWireguardTunnels(specs: readonly TunnelSpec[], deps: OpenTunnelsDeps): Promise<Map<string, WireguardTunnel>> {
  const out = new Map<string, WireguardTunnel>();
  const open =
    deps.openTransport ??
    (async (spec: TunnelSpec): Promise<UdpTransport> => {
      const { openUdpTransport } = await import('../wireguard/udp-transport.js');
      return openUdpTransport({
        port: spec.listenPort,
        // A transport message: 32 bytes of header and tag around the padded packet.
        maxDatagramBytes: (spec.mtu ?? DEFAULT_TUNNEL_MTU) + 64,
        onError: (err) => deps.logger.warn({ tunnel: spec.name, err }, 'tunnel UDP socket error'),
      });
    });
  try {
    for (const spec of specs) {
      const transport = await open(spec);
      out.set(
        spec.name,
        new WireguardTunnel({
          name: spec.name,
          privateKey: spec.privateKey,
          peers: spec.peers,
          mtu: spec.mtu,
          link: deps.link,
          transport,
          clock: deps.clock,
          logger: deps.logger.child({ tunnel: spec.name }),
          address: spec.address,
          deviceAddress: spec.address === undefined ? undefined : deps.deviceAddress,
        }),
      );
    }
  } catch (e) {
    for (const t of out.values()) t.close();
    throw e;
  }
  return out;
}
