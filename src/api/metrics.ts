/**
 * Prometheus /metrics (prom-client, in a registry of our own). Nothing is counted here: the
 * engine's plain counters are read once per scrape (one status snapshot) and copied into the
 * metrics just before the registry renders them, so the packet path never calls prom-client.
 * Process memory and event-loop delay are prom-client's default metrics (their sampler starts
 * only when the listener does).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ApiSource } from './source.js';

type Labels<T extends string> = Partial<Record<T, string>>;

/** A counter whose value is set from a total kept elsewhere (reset, then add the total). */
function setTotal<T extends string>(c: Counter<T>, labels: Labels<T>, v: number): void {
  c.inc(labels, Math.max(0, v));
}

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly m;

  constructor(private readonly source: ApiSource) {
    const r = this.registry;
    const counter = <T extends string>(name: string, help: string, labelNames: readonly T[] = []): Counter<T> =>
      new Counter<T>({ name, help, labelNames, registers: [r] });
    const gauge = <T extends string>(name: string, help: string, labelNames: readonly T[] = []): Gauge<T> =>
      new Gauge<T>({ name, help, labelNames, registers: [r] });
    this.m = {
      linkPackets: counter('tunroute_link_packets_total', 'Packets read from (rx) and written to (tx) the device.', ['direction']),
      linkBytes: counter('tunroute_link_bytes_total', 'Bytes read from (rx) and written to (tx) the device.', ['direction']),
      linkTxErrors: counter('tunroute_link_tx_errors_total', 'Writes the device refused.'),
      packets: counter('tunroute_packets_total', 'Packets the dispatcher handed to a protocol.', ['proto']),
      drops: counter('tunroute_drops_total', 'Packets dropped, by reason.', ['reason']),
      flowBytes: counter('tunroute_flow_bytes_total', 'Payload bytes of terminated flows: up (app to upstream) and down.', ['proto', 'direction']),
      flowsOpen: gauge('tunroute_flows_open', 'Flows open now.', ['proto']),
      flowsTotal: counter('tunroute_flows_total', 'Flows opened since start.', ['proto']),
      flowsRefused: counter('tunroute_flows_refused_total', 'New flows refused, by reason.', ['reason']),
      attempts: counter('tunroute_outbound_attempts_total', 'Connections (tcp) and associations (udp) asked of an outbound.', ['outbound', 'proto']),
      established: counter('tunroute_outbound_established_total', 'Attempts that succeeded.', ['outbound', 'proto']),
      errors: counter('tunroute_outbound_errors_total', 'Attempts that failed, by reason.', ['outbound', 'proto', 'reason']),
      dns: counter('tunroute_dns_queries_total', 'DNS queries hijacked (queries), and their outcome (answered, failed).', ['result']),
      tunnelBytes: counter('tunroute_tunnel_bytes_total', 'Inner bytes through a WireGuard tunnel.', ['tunnel', 'direction']),
      tunnelPackets: counter('tunroute_tunnel_packets_total', 'Inner packets through a WireGuard tunnel.', ['tunnel', 'direction']),
      handshakes: counter('tunroute_tunnel_handshakes_total', 'WireGuard handshakes completed (all tunnels and peers).'),
      lastHandshake: gauge('tunroute_tunnel_peer_last_handshake_seconds', 'Seconds since the last handshake with a peer.', ['tunnel', 'peer']),
      routeReplans: counter('tunroute_route_replans_total', 'Route plans re-applied after start (the default route changed).'),
      routeChanges: counter('tunroute_route_changes_total', 'Routes and rules added or removed by those re-plans.'),
      routes: gauge('tunroute_routes', 'Prefixes routed into the device.'),
      uptime: gauge('tunroute_uptime_seconds', 'Seconds since start.'),
    };
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 20 });
  }

  /** The exposition text of one scrape. */
  async render(): Promise<string> {
    this.update();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private update(): void {
    const m = this.m;
    for (const metric of Object.values(m)) metric.reset();
    const s = this.source.snapshot();
    const c = this.source.counters();
    setTotal(m.linkPackets, { direction: 'rx' }, s.link.rxPackets);
    setTotal(m.linkPackets, { direction: 'tx' }, s.link.txPackets);
    setTotal(m.linkBytes, { direction: 'rx' }, s.link.rxBytes);
    setTotal(m.linkBytes, { direction: 'tx' }, s.link.txBytes);
    setTotal(m.linkTxErrors, {}, s.link.txErrors);
    setTotal(m.packets, { proto: 'tcp' }, s.packets.tcpPackets);
    setTotal(m.packets, { proto: 'udp' }, s.packets.udpPackets);
    setTotal(m.packets, { proto: 'icmp' }, s.packets.icmpEchoReplied + s.packets.icmpEchoDropped);
    for (const [reason, n] of Object.entries(s.packets.drops)) if (n > 0) setTotal(m.drops, { reason }, n);
    if (s.udp !== undefined && s.udp.dropped > 0) setTotal(m.drops, { reason: 'udp_relay' }, s.udp.dropped);
    // TCP and UDP flows have the same rows (UDP only when the UDP relay runs).
    for (const [proto, f] of [['tcp', s.tcp], ['udp', s.udp]] as const) {
      if (f === undefined) continue;
      setTotal(m.flowBytes, { proto, direction: 'up' }, f.bytesUp);
      setTotal(m.flowBytes, { proto, direction: 'down' }, f.bytesDown);
      m.flowsOpen.set({ proto }, f.flowsOpen);
      setTotal(m.flowsTotal, { proto }, f.flowsTotal);
    }
    setTotal(m.flowsRefused, { reason: 'limit' }, s.tcp.refusedLimit);
    setTotal(m.flowsRefused, { reason: 'no_name' }, s.tcp.refusedNoName);
    if (s.udp !== undefined) {
      setTotal(m.dns, { result: 'queries' }, s.udp.dnsQueries);
      setTotal(m.dns, { result: 'answered' }, s.udp.dnsAnswered);
      setTotal(m.dns, { result: 'failed' }, s.udp.dnsFailed);
    }
    for (const [outbound, o] of Object.entries(this.source.outboundStats())) {
      const tcp = { attempts: o.tcpAttempts, established: o.tcpEstablished, failures: o.tcpFailures };
      for (const [proto, a] of [['tcp', tcp], ['udp', o.udp]] as const) {
        if (a === undefined) continue;
        setTotal(m.attempts, { outbound, proto }, a.attempts);
        setTotal(m.established, { outbound, proto }, a.established);
        for (const [reason, n] of Object.entries(a.failures)) if (n > 0) setTotal(m.errors, { outbound, proto, reason }, n);
      }
    }
    for (const t of s.tunnels ?? []) {
      setTotal(m.tunnelBytes, { tunnel: t.name, direction: 'tx' }, t.txBytes);
      setTotal(m.tunnelBytes, { tunnel: t.name, direction: 'rx' }, t.rxBytes);
      setTotal(m.tunnelPackets, { tunnel: t.name, direction: 'tx' }, t.txPackets);
      setTotal(m.tunnelPackets, { tunnel: t.name, direction: 'rx' }, t.rxPackets);
      for (const [reason, n] of Object.entries(t.drops)) setTotal(m.drops, { reason: `tunnel_${reason}` }, n);
      for (const p of t.peers) if (p.lastHandshakeAgoMs !== undefined) m.lastHandshake.set({ tunnel: t.name, peer: p.publicKey }, p.lastHandshakeAgoMs / 1000);
    }
    setTotal(m.handshakes, {}, c.handshakes);
    setTotal(m.routeReplans, {}, c.routeReplans);
    setTotal(m.routeChanges, {}, c.routeChanges);
    m.routes.set(s.routes);
    m.uptime.set(s.uptimeMs / 1000);
  }
}
