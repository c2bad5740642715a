/**
 * `tunroute status --control PATH` for a server: the client's StatusSnapshot (device = the
 * tunnel, packets/tcp/outbounds/flows as for `up`) plus a small `server` part with the peers.
 */
import type { ServerStatus, StatusSnapshot } from '../control/protocol.js';
import type { ServerConfig } from '../config/server-schema.js';
import type { RunningServer } from './server.js';

export interface ServerSnapshotInfo {
  version: string;
  startedAt: Date;
  /** Wall-clock now in ms (for uptime). Default Date.now. */
  now?: () => number;
}

/** Counters that are not zero, or undefined when all are. */
function nonZero(r: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(r)) if (n !== 0) out[k] = n;
  return out;
}

export function serverStatusOf(srv: RunningServer, config: ServerConfig): ServerStatus {
  const s = srv.stats();
  const drops: Record<string, number> = nonZero({
    ...s.deviceDrops,
    no_peer_for_reply: s.tunnel.noPeer,
    icmp_not_ours: s.gate.icmpNotOurs,
    forward_ttl_expired: s.gate.ttlExpired,
    forward_bad_header: s.gate.badHeader,
    udp_send_dropped: s.tunnel.txDropped,
  });
  return {
    listen: config.listen,
    publicKey: srv.publicKey,
    forwarded: s.gate.forwarded,
    drops,
    udp: { flowsOpen: s.udp.flowsOpen, flowsTotal: s.udp.flowsTotal, bytesUp: s.udp.bytesUp, bytesDown: s.udp.bytesDown, dropped: s.udp.dropped },
    peers: srv.peers().map((p) => ({
      name: p.name,
      publicKey: p.publicKey,
      allowedIPs: p.allowedIPs,
      ...(p.endpoint === undefined ? {} : { endpoint: p.endpoint }),
      ...(p.lastHandshakeAgoMs === undefined ? {} : { lastHandshakeAgoMs: p.lastHandshakeAgoMs }),
      rxBytes: p.counters.rxBytes,
      txBytes: p.counters.txBytes,
      drops: nonZero(p.counters.dropped),
    })),
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
    device: { name: srv.link.name, mtu: srv.link.mtu, address: config.address },
    routes: srv.tunnel.routes.size,
    link: s.link,
    packets: s.packets,
    tcp: s.tcp,
    outbounds: s.outbounds,
    flows: srv.flows(),
    server: serverStatusOf(srv, config),
  };
}
