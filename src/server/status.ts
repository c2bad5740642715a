/**
 * `tunroute status --control PATH` for a server: the client's StatusSnapshot (device = the
 * tunnel, packets/tcp/outbounds/flows as for `up`) plus a small `server` part with the peers.
 */
import { statusSnapshotSchema, type ServerStatus, type StatusSnapshot } from '../control/protocol.js';
import { nonZeroCounts, peerInfoOf } from '../control/peer-info.js';
import type { ServerConfig } from '../config/server-schema.js';
import { newGateCounters } from './gate.js';
import type { RunningServer } from './server.js';
import { formatEndpoint } from '../net/endpoint.js';
import { cidrToString } from '../net/ipv4.js';

export interface ServerSnapshotInfo {
  version: string;
  startedAt: Date;
  /** Wall-clock now in ms (for uptime). Default Date.now. */
  now?: () => number;
}

export function serverStatusOf(srv: RunningServer, config: ServerConfig): ServerStatus {
  const s = srv.stats();
  const g = s.gate ?? newGateCounters();
  const drops: Record<string, number> = nonZeroCounts({
    ...s.deviceDrops,
    no_peer_for_reply: s.tunnel.noPeer,
    not_ipv4: s.tunnel.notIpv4,
    icmp_not_ours: g.icmpNotOurs,
    forward_ttl_expired: g.ttlExpired,
    forward_bad_header: g.badHeader,
    udp_send_dropped: s.tunnel.txDropped,
    internal_errors: s.tunnel.internalErrors,
  });
  const u = s.udp;
  return {
    listen: formatEndpoint(config.listen),
    mode: srv.mode,
    publicKey: srv.publicKey,
    forwarded: g.forwarded,
    drops,
    udp: { flowsOpen: u?.flowsOpen ?? 0, flowsTotal: u?.flowsTotal ?? 0, bytesUp: u?.bytesUp ?? 0, bytesDown: u?.bytesDown ?? 0, dropped: u?.dropped ?? 0 },
    peers: srv.peers().map((p) => ({ name: p.name, ...peerInfoOf(p) })),
  };
}

export function serverStatusSnapshot(srv: RunningServer, config: ServerConfig, info: ServerSnapshotInfo): StatusSnapshot {
  const s = srv.stats();
  const now = (info.now ?? Date.now)();
  return {
    version: info.version,
    pid: process.pid,
    startedAt: info.startedAt.toISOString(),
    uptimeMs: Math.max(0, Math.round(now - info.startedAt.getTime())),
    device: { name: srv.link.name, mtu: srv.link.mtu, address: cidrToString(config.address) },
    routes: srv.tunnel.routes.size,
    link: s.link,
    // In tun mode the kernel terminates: the stack's counters read as zero, as from an older daemon.
    packets: s.packets ?? statusSnapshotSchema.shape.packets.parse({}),
    tcp: s.tcp ?? statusSnapshotSchema.shape.tcp.parse({}),
    outbounds: s.outbounds,
    flows: srv.flows(),
    server: serverStatusOf(srv, config),
  };
}
