/**
 * `tunroute verify`'s marked probes, seen from inside the running instance. verify arms a set
 * (the local source ports of its TCP probes, the unique name of its DNS probe), sends them, and
 * reads back which arrived: a probe that reached the device took the tunnel, whatever the route
 * table claims. A TCP probe is answered with RST and a DNS probe with NXDOMAIN here, so neither
 * ever reaches an outbound.
 *
 * Unarmed (always, but for the seconds a verify runs) every check is one comparison: no cost per
 * packet. Armed sets expire on their own, so a verify that died never leaves ports claimed.
 */
import type { Clock } from '../clock.js';
import { DnsMessage } from '../dns/message.js';

export interface ProbeArm {
  /** Source ports of verify's TCP probes (its own sockets, bound before it connects). */
  tcpSrcPorts: readonly number[];
  /** The name of its DNS probe (lower case), unique to this run. */
  dnsName?: string;
  /** Disarm after this long (at most 30 s). */
  ttlMs: number;
}

export interface ProbeSeen {
  armed: boolean;
  /** The TCP probes that arrived, by source port. */
  tcp: number[];
  /** How many DNS probe queries arrived. */
  dns: number;
}

const MAX_TTL_MS = 30_000;
const MAX_PORTS = 16;

export class ProbeBook {
  private ports: Set<number> | undefined;
  private name: string | undefined;
  private until = 0;
  private tcp: number[] = [];
  private dns = 0;

  constructor(private readonly clock: Clock) {}

  arm(a: ProbeArm): void {
    this.ports = new Set(a.tcpSrcPorts.slice(0, MAX_PORTS));
    this.name = a.dnsName?.toLowerCase();
    this.until = this.clock.now() + Math.min(Math.max(a.ttlMs, 0), MAX_TTL_MS);
    this.tcp = [];
    this.dns = 0;
  }

  /** What arrived since arming; disarms. */
  read(): ProbeSeen {
    const seen: ProbeSeen = { armed: this.ports !== undefined, tcp: this.tcp, dns: this.dns };
    this.disarm();
    return seen;
  }

  /** A SYN from this source port is verify's probe: counted, and the caller answers RST. */
  claimSyn(srcPort: number): boolean {
    if (this.ports === undefined || !this.live() || !this.ports.has(srcPort)) return false;
    if (!this.tcp.includes(srcPort)) this.tcp.push(srcPort);
    return true;
  }

  /** Is anything armed for DNS (so a query is worth parsing)? */
  get dnsArmed(): boolean {
    return this.name !== undefined && this.live();
  }

  /** A query for the probe's name: counted, and the caller answers NXDOMAIN (see nxdomainFor). */
  claimDns(query: DnsMessage | undefined): boolean {
    if (this.name === undefined || query?.question === undefined || !this.live()) return false;
    if (query.question.key.replace(/\.$/, "") !== this.name.replace(/\.$/, "")) return false;
    this.dns++;
    return true;
  }

  private live(): boolean {
    if (this.clock.now() <= this.until) return true;
    this.disarm();
    return false;
  }

  private disarm(): void {
    this.ports = undefined;
    this.name = undefined;
    this.tcp = [];
    this.dns = 0;
  }
}
