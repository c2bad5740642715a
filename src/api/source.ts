/**
 * What the API layer reads from a running `up` or `server`: the same counters and flow lists
 * the control socket's `status` answers from (control/server.ts), plus the few actions a person
 * takes from the dashboard (close a flow, ask `why`). The composition root (app.ts,
 * server/run.ts) builds one; tests pass a fake.
 */
import type { TcpFlowInfo } from '../relay/tcp-relay.js';
import type { UdpFlowInfo } from '../relay/udp-relay.js';
import type { StatusSnapshot } from '../control/protocol.js';
import type { Config } from '../config/schema.js';
import type { OutboundStats } from '../outbound/outbound.js';

/** An outbound as the API lists it (Clash calls them proxies). */
export interface ApiOutbound {
  name: string;
  /** socks5 | wireguard | block | direct | dns */
  kind: string;
  udp: boolean;
}

/** Counters that only grow (for /metrics and the throughput graph), read at scrape time. */
export interface ApiCounters {
  /** App → upstream and upstream → app payload bytes of terminated flows (TCP + UDP), plus tunnel inner bytes. */
  bytesUp: number;
  bytesDown: number;
  /** Route plans re-applied after start (a new default route) and the changes they made. */
  routeReplans: number;
  routeChanges: number;
  /** WireGuard handshakes completed, all tunnels / peers. */
  handshakes: number;
}

export interface ApiSource {
  /** `up` or `server`. */
  readonly role: 'up' | 'server';
  readonly version: string;
  readonly startedAt: Date;
  /** What `status --json` answers: the device, counters, flows, tunnels. */
  snapshot(): StatusSnapshot;
  flows(): TcpFlowInfo[];
  udpFlows(): UdpFlowInfo[];
  counters(): ApiCounters;
  outbounds(): ApiOutbound[];
  /** Per-outbound attempts and failures (OutboundStats), by name. */
  outboundStats(): Record<string, OutboundStats>;
  /** The routing rules in file order and where the rest goes. */
  rules(): { rules: Config['rules']; defaultOutbound: string };
  logLevel: string;
  /** Close a flow: TCP gets RST, UDP ends. False: no such flow open. */
  closeFlow(proto: 'tcp' | 'udp', id: number): boolean;
  /** The route plan as `tunroute check` prints it (absent for `server`). */
  planLines?(): string[];
  /** `tunroute why ADDR` against the running plan (absent for `server`); throws TunrouteError on a bad address. */
  why?(addr: string, proto: 'tcp' | 'udp' | 'icmp'): unknown;
  /** Recent DNS answers: [name, address] (the fake-IP table, most recent last). */
  dnsAnswers?(): Array<[string, string]>;
}
