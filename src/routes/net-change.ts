/**
 * Network change detection, pure: what `ip monitor` prints and what the clocks say go in,
 * decisions come out ("re-read the network", "resolve the upstream names again"), and a small
 * ring of the last events is kept for `status`. No I/O and no timers: the route manager feeds
 * it lines and ticks, and tests feed it by hand with a fake clock.
 *
 * Why each event matters on a laptop:
 *   route      a new default route (new Wi-Fi, VPN of another program): the LAN bypass moves.
 *   link       an interface goes down or comes up: the routes through it vanish or may return;
 *              a link that comes up may be a new network with another DNS server.
 *   addr       an address appears or goes: sockets bound to a gone address are dead.
 *   resume     the wall clock moved ahead of the monotonic one (which stops while the machine
 *              sleeps): after a suspend every assumption may be stale, names included.
 */

export type NetEventKind = 'route' | 'link-up' | 'link-down' | 'addr-add' | 'addr-del' | 'resume' | 'upstream' | 'reload';

export interface NetEvent {
  readonly kind: NetEventKind;
  /** The interface it concerns, if any. */
  readonly dev?: string;
  /** What happened, in a few words (a route line, an address, "slept ~42 s"). */
  readonly detail: string;
}

/** An event as `status` lists it. */
export interface NetEventRecord extends NetEvent {
  /** Wall-clock time (ISO 8601, UTC). */
  readonly at: string;
}

/** What to do about an event. */
export type NetDecision =
  | { readonly resync: false }
  | {
      readonly resync: true;
      /** Resolve the upstreams given by name again (a new network may answer differently). */
      readonly reresolve: boolean;
      readonly event: NetEvent;
    };

const IGNORE: NetDecision = { resync: false };

/** Both clocks in ms: the monotonic one stops during a suspend, the wall clock does not. */
export interface NetClocks {
  mono(): number;
  wall(): number;
}

export interface NetChangeOptions {
  /** tunroute's own device: its events are tunroute's doing. */
  readonly ownDev: string;
  /** Events kept for `status` (default 16). */
  readonly ringSize?: number;
  /** A gap between the clocks larger than this between two ticks is a resume (default 3 s). */
  readonly resumeJumpMs?: number;
}

// `ip -o monitor link address route` lines (iproute2 6.x):
//   3: wlan0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc … state UP group default \ link/ether …
//   Deleted 3: wlan0    inet 10.9.0.1/24 scope global wlan0\ valid_lft …
//   default via 10.9.0.2 dev wlan0
const LINK_LINE = /^(?:Deleted )?\d+: ([^\s:@]+)(?:@\S+)?: <([^>]*)>/;
const ADDR_LINE = /^(Deleted )?\d+: (\S+)\s+inet (\S+)/;
const ROUTE_DEV = /\bdev (\S+)/;

/** One monitor line as an event; undefined for what never matters (tunroute's own routes, local and broadcast routes). */
export function parseMonitorLine(line: string): NetEvent | undefined {
  const text = line.replace(/\\\s+.*$/, '').trim();
  if (text === '') return undefined;
  const link = LINK_LINE.exec(text);
  if (link !== null) {
    const flags = link[2].split(',');
    const up = !text.startsWith('Deleted ') && flags.includes('UP') && flags.includes('LOWER_UP');
    return { kind: up ? 'link-up' : 'link-down', dev: link[1], detail: up ? 'up' : text.startsWith('Deleted ') ? 'removed' : 'down' };
  }
  const addr = ADDR_LINE.exec(text);
  if (addr !== null) return { kind: addr[1] === undefined ? 'addr-add' : 'addr-del', dev: addr[2], detail: addr[3] };
  // Routes: tunroute's own (proto 211), and the local table's bookkeeping that follows every address.
  if (text.includes('proto 211') || /^(?:Deleted )?(?:local|broadcast|multicast|anycast) /.test(text) || text.includes('table local')) return undefined;
  const dev = ROUTE_DEV.exec(text)?.[1];
  return dev === undefined ? { kind: 'route', detail: text } : { kind: 'route', dev, detail: text };
}

export class NetChangeDetector {
  private readonly ring: NetEventRecord[] = [];
  private readonly ringSize: number;
  private readonly resumeJumpMs: number;
  /** Last known state of each link, so repeated "up" lines (carrier flaps of the peer) count once. */
  private readonly links = new Map<string, boolean>();
  /** wall − mono at the last tick. */
  private offset: number;

  constructor(
    private readonly opts: NetChangeOptions,
    private readonly clocks: NetClocks,
  ) {
    this.ringSize = opts.ringSize ?? 16;
    this.resumeJumpMs = opts.resumeJumpMs ?? 3000;
    this.offset = clocks.wall() - clocks.mono();
  }

  /** A line of `ip monitor` (undefined: a watcher that only says "something changed"). */
  line(text: string | undefined): NetDecision {
    if (text === undefined) return this.event({ kind: 'route', detail: 'routing table changed' });
    const ev = parseMonitorLine(text);
    return ev === undefined ? IGNORE : this.event(ev);
  }

  event(ev: NetEvent): NetDecision {
    if (ev.dev !== undefined && ev.dev === this.opts.ownDev) return IGNORE;
    if (ev.kind === 'link-up' || ev.kind === 'link-down') {
      const up = ev.kind === 'link-up';
      if (this.links.get(ev.dev ?? '') === up) return IGNORE;
      const known = this.links.has(ev.dev ?? '');
      this.links.set(ev.dev ?? '', up);
      // The first "up" seen of a link (a peer's carrier coming up, a new veth) is news only if it was down.
      if (up && !known) return IGNORE;
    }
    if (ev.kind === 'upstream' || ev.kind === 'reload') {
      this.record(ev);
      return IGNORE;
    }
    this.record(ev);
    return { resync: true, reresolve: ev.kind === 'link-up' || ev.kind === 'addr-add' || ev.kind === 'resume', event: ev };
  }

  /** Call about once a second: a jump between the clocks means the machine slept. */
  tick(): NetDecision {
    const offset = this.clocks.wall() - this.clocks.mono();
    const jump = offset - this.offset;
    this.offset = offset;
    // A wall clock set backwards (NTP) is no resume; a step forwards larger than the threshold is.
    if (jump < this.resumeJumpMs) return IGNORE;
    return this.event({ kind: 'resume', detail: `clocks ${Math.round(jump / 1000)} s apart: resumed from suspend (or the wall clock was set ahead)` });
  }

  /** Add a note (an upstream's new address, a reload) to the ring without deciding anything. */
  note(ev: NetEvent): void {
    this.record(ev);
  }

  /** The last events, oldest first. */
  events(): NetEventRecord[] {
    return this.ring.slice();
  }

  private record(ev: NetEvent): void {
    const rec: NetEventRecord = { at: new Date(this.clocks.wall()).toISOString(), ...ev };
    this.ring.push(rec);
    if (this.ring.length > this.ringSize) this.ring.shift();
  }
}

/** Where the kernel sends tunroute's own traffic to one upstream address. */
export interface UpstreamPath {
  readonly upstream: string;
  readonly addr: string;
  /** `ip route get ADDR`'s first line (or "error: …"). */
  readonly route: string;
}

/**
 * The part of a route an open connection depends on: its source address. A connection keeps
 * the source it was opened with; when the kernel would now pick another one (a new network) or
 * none (unreachable), the old source is gone or not routed back: the connection is dead, even
 * if no packet says so for minutes. A new gateway with the same source is no such change.
 */
export function pathKey(route: string): string {
  if (route.startsWith('error')) return 'unreachable';
  return /\bsrc (\S+)/.exec(route)?.[1] ?? route;
}

export interface UpstreamChange {
  readonly upstream: string;
  /** Resolving its name again gave other addresses: the outbound must connect elsewhere. */
  readonly readdressed: boolean;
  /** The source address to it changed (or it became unreachable): connections through it are dead. */
  readonly moved: boolean;
}

/**
 * Which upstreams changed between two looks at the network. `before`/`after`: the addresses
 * each upstream resolved to, and the paths to them.
 */
export function upstreamChanges(
  before: { readonly addrs: ReadonlyMap<string, readonly string[]>; readonly paths: readonly UpstreamPath[] },
  after: { readonly addrs: ReadonlyMap<string, readonly string[]>; readonly paths: readonly UpstreamPath[] },
): UpstreamChange[] {
  const out: UpstreamChange[] = [];
  const oldPath = new Map(before.paths.map((p) => [`${p.upstream} ${p.addr}`, pathKey(p.route)]));
  for (const [name, addrs] of after.addrs) {
    const was = before.addrs.get(name);
    // The address tunroute connects to is the first (upstreams.ts).
    const readdressed = was !== undefined && was[0] !== addrs[0];
    const moved = after.paths.some((p) => p.upstream === name && p.addr === addrs[0] && oldPath.has(`${p.upstream} ${p.addr}`) && oldPath.get(`${p.upstream} ${p.addr}`) !== pathKey(p.route));
    if (readdressed || moved) out.push({ upstream: name, readdressed, moved });
  }
  return out;
}
