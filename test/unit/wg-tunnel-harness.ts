/**
 * Two WireguardTunnels on a fake UDP network with capturing links and a manual clock: a
 * "client" (tunroute up: NAT from the device address 198.18.0.1 to its tunnel address
 * 10.8.0.2, one peer for 10.8.0.0/16) and a "server" peer (10.8.0.1, allows 10.8.0.2/32).
 * No root, no sockets, no real time.
 */
import { ManualClock } from '../../src/clock.js';
import { emptyLinkStats, type Link, type LinkStats, type ReceiveHandler } from '../../src/link/link.js';
import { silentLogger } from '../../src/logger.js';
import type { Endpoint } from '../../src/wireguard/endpoint.js';
import { generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import type { TimerHandle, Timers } from '../../src/clock.js';
import { WireguardTunnel, type WireguardPeerConfig } from '../../src/wireguard/client-tunnel.js';
import type { DatagramHandler, UdpTransport } from '../../src/wireguard/transport.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { ipToU32, parseCidr, type Cidr } from '../../src/net/ipv4.js';
import { VNET_HDR_LEN } from '../../src/wire/virtio-net.js';
import { seededRandom } from './wg-harness.js';

export const DEV = ipToU32('198.18.0.1')!;
export const C_ADDR = ipToU32('10.8.0.2')!;
export const S_ADDR = ipToU32('10.8.0.1')!;
export const EP_C: Endpoint = { address: '192.0.2.10', port: 40000 };
export const EP_S: Endpoint = { address: '192.0.2.20', port: 51820 };

export function cidr(s: string): Cidr {
  return parseCidr(s)!;
}

interface InFlight {
  data: Uint8Array;
  from: Endpoint;
  to: Endpoint;
}

/** A UDP "network": datagrams queue until pump(); a filter may drop or rewrite them. */
export class FakeUdpNet {
  readonly log: InFlight[] = [];
  private queue: InFlight[] = [];
  private deferred: Array<() => void> = [];
  private readonly ends = new Map<string, FakeTransport>();
  /** Return false to lose the datagram. */
  filter: ((d: InFlight) => boolean) | undefined;

  transport(ep: Endpoint): FakeTransport {
    const t = new FakeTransport(this, ep);
    this.ends.set(`${ep.address}:${ep.port}`, t);
    return t;
  }

  enqueue(d: InFlight): void {
    this.log.push(d);
    this.queue.push(d);
  }

  /** What a tunnel defers to the end of the turn: run when nothing is in flight any more. */
  defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  /** Deliver until nothing is in flight or deferred; returns how many datagrams were delivered. */
  pump(max = 10_000): number {
    let n = 0;
    while ((this.queue.length > 0 || this.deferred.length > 0) && n < max) {
      if (this.queue.length === 0) {
        for (const fn of this.deferred.splice(0)) fn();
        continue;
      }
      const d = this.queue.shift()!;
      if (this.filter !== undefined && !this.filter(d)) continue;
      const t = this.ends.get(`${d.to.address}:${d.to.port}`);
      if (t === undefined) continue;
      n++;
      t.deliver(d.data, d.from);
    }
    return n;
  }
}

export class FakeTransport implements UdpTransport {
  readonly port: number;
  sendDrops = 0;
  closed = false;
  private handler: DatagramHandler | undefined;
  constructor(
    private readonly net: FakeUdpNet,
    readonly ep: Endpoint,
  ) {
    this.port = ep.port;
  }
  onMessage(h: DatagramHandler): void {
    this.handler = h;
  }
  send(data: Uint8Array, to: Endpoint): boolean {
    if (this.closed) return false;
    this.net.enqueue({ data: new Uint8Array(data), from: this.ep, to: { address: to.address, port: to.port } });
    return true;
  }
  deliver(data: Uint8Array, from: Endpoint): void {
    if (!this.closed) this.handler?.(new Uint8Array(data), from);
  }
  close(): void {
    this.closed = true;
  }
}

/** A device that keeps a copy of everything written to it (without its virtio header). */
export class CaptureLink implements Link {
  readonly name = 'cap0';
  readonly stats: LinkStats = emptyLinkStats();
  readonly sent: Uint8Array[] = [];
  /** The virtio headers of what was sent (vnet links only). */
  readonly headers: Uint8Array[] = [];
  constructor(
    readonly mtu = 1500,
    readonly vnetHdr = false,
  ) {}
  onReceive(_h: ReceiveHandler): void {}
  send(p: Uint8Array): boolean {
    if (this.vnetHdr) {
      this.headers.push(p.slice(0, VNET_HDR_LEN));
      this.sent.push(p.slice(VNET_HDR_LEN));
    } else this.sent.push(p.slice());
    this.stats.txPackets++;
    return true;
  }
  sendMany(ps: readonly Uint8Array[]): number {
    for (const p of ps) this.send(p);
    return ps.length;
  }
  close(): void {}
  take(): Uint8Array[] {
    return this.sent.splice(0);
  }
}

/** Timers that only fire when the test says so. */
export class FakeTimers implements Timers {
  readonly pending = new Map<TimerHandle, { fn: () => void; ms: number }>();
  setTimer(fn: () => void, ms: number): TimerHandle {
    const id = {};
    this.pending.set(id, { fn, ms });
    return id;
  }
  clearTimer(h: TimerHandle): void {
    this.pending.delete(h);
  }
  /** Fire everything armed now (each timer once). */
  fireAll(): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const t of all) t.fn();
  }
}

/** Wrap a packet (at `off`, after an optional virtio header) and hand it to the tunnel. */
export function sendThrough(t: WireguardTunnel, buf: Uint8Array, off = 0, vnetOff = -1): void {
  const ip = new Ipv4Packet();
  const bad = ip.wrap(buf, off, buf.length - off);
  if (bad !== undefined) throw new Error(`test packet is malformed: ${bad}`);
  t.sendPacket(ip, vnetOff);
}

export function wrapped(p: Uint8Array): Ipv4Packet {
  const ip = new Ipv4Packet();
  const bad = ip.wrap(p, 0, p.length);
  if (bad !== undefined) throw new Error(`packet is malformed: ${bad}`);
  return ip;
}

export interface TunnelPair {
  clock: ManualClock;
  net: FakeUdpNet;
  client: WireguardTunnel;
  server: WireguardTunnel;
  clientLink: CaptureLink;
  serverLink: CaptureLink;
  clientTimers: FakeTimers;
  clientTransport: FakeTransport;
  keys: { client: Uint8Array; server: Uint8Array };
}

export interface PairOptions {
  seed?: string;
  vnet?: boolean;
  mtu?: number;
  /** Extra or replacement fields of the client's one peer (the server). */
  clientPeer?: Partial<WireguardPeerConfig>;
  /** The server's AllowedIPs for the client (default 10.8.0.2/32). */
  serverAllows?: string[];
  /** The public key the client believes the server has (default: the right one). */
  serverKeyForClient?: Uint8Array;
  nat?: boolean;
}

export function makeTunnelPair(opts: PairOptions = {}): TunnelPair {
  const seed = opts.seed ?? 'tunnel-pair';
  const clock = new ManualClock(1_000_000);
  const net = new FakeUdpNet();
  const kc = generatePrivateKey(seededRandom(`${seed}/client`));
  const ks = generatePrivateKey(seededRandom(`${seed}/server`));
  const clientLink = new CaptureLink(1500, opts.vnet ?? false);
  const serverLink = new CaptureLink(1500, false);
  const clientTimers = new FakeTimers();
  const clientTransport = net.transport(EP_C);
  const wall = { ms: Date.UTC(2026, 10, 21) };
  const client = new WireguardTunnel({
    name: 'wg0',
    privateKey: kc,
    peers: [{ publicKey: opts.serverKeyForClient ?? publicKeyOf(ks), endpoint: EP_S, allowedIPs: [cidr('10.8.0.0/16')], ...opts.clientPeer }],
    mtu: opts.mtu ?? 1420,
    link: clientLink,
    transport: clientTransport,
    clock,
    logger: silentLogger(),
    ...(opts.nat === false ? {} : { address: C_ADDR, deviceAddress: DEV }),
    timers: clientTimers,
    defer: (fn) => net.defer(fn),
    random: seededRandom(`${seed}/rand-c`),
    wallClock: () => (wall.ms += 1000),
  });
  const server = new WireguardTunnel({
    name: 'server',
    privateKey: ks,
    peers: [{ publicKey: publicKeyOf(kc), allowedIPs: (opts.serverAllows ?? ['10.8.0.2/32']).map(cidr) }],
    mtu: opts.mtu ?? 1420,
    link: serverLink,
    transport: net.transport(EP_S),
    clock,
    logger: silentLogger(),
    timers: new FakeTimers(),
    defer: (fn) => net.defer(fn),
    random: seededRandom(`${seed}/rand-s`),
    wallClock: () => (wall.ms += 1000),
  });
  return { clock, net, client, server, clientLink, serverLink, clientTimers, clientTransport, keys: { client: kc, server: ks } };
}
