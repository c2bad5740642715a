/**
 * The server without a network: a fake UDP network joins `tunroute server` (its transport
 * replaced) and test clients, each a real WireGuard Peer from src/wireguard with its
 * own userspace TCP stack over a PacketPipe — a whole "client machine" in a few objects. The
 * server re-originates to real sockets on 127.0.0.1 (the tests allow loopback in `deny`, and
 * the server's host has no addresses unless a test gives it some: `host`).
 * The server runs on a manual clock (its protocol timers too): time passes for it only when a
 * test advances `rig.clock`. The clients keep the real clock.
 */
import { ManualClock, monotonicClock } from '../../src/clock.js';
import { parseServerConfig, type ServerConfigInput } from '../../src/config/server-schema.js';
import { PacketPipe } from '../../src/link/packet-pipe.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import type { HostNetworks } from '../../src/server/host-networks.js';
import type { Endpoint } from '../../src/wireguard/endpoint.js';
import { StaticIdentity } from '../../src/wireguard/handshake.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { Peer } from '../../src/wireguard/peer.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import type { UdpTransport } from '../../src/wireguard/transport.js';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { TcpStack } from '../../src/stack/tcp-stack.js';
import type { TcpConnection } from '../../src/stack/tcp/connection.js';
import type { TcpListener } from '../../src/stack/tcp/types.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { seededRandom } from './wg-harness.js';

export const SERVER_EP: Endpoint = { address: '192.0.2.1', port: 51820 };

/** A UDP "network": datagrams are copied and delivered on a later turn, like a real one. */
export class FakeNet {
  private readonly hosts = new Map<string, FakeUdp>();
  /** Every datagram, for tests that look at the wire. */
  readonly log: { from: Endpoint; to: Endpoint; data: Uint8Array }[] = [];
  /** Return true to lose a datagram. */
  drop: (from: Endpoint, to: Endpoint, data: Uint8Array) => boolean = () => false;

  bind(ep: Endpoint): FakeUdp {
    const t = new FakeUdp(this, ep);
    this.hosts.set(`${ep.address}:${ep.port}`, t);
    return t;
  }

  /** @internal */
  carry(from: Endpoint, to: Endpoint, data: Uint8Array): void {
    const copy = new Uint8Array(data);
    this.log.push({ from, to, data: copy });
    if (this.drop(from, to, copy)) return;
    const dst = this.hosts.get(`${to.address}:${to.port}`);
    if (dst === undefined) return;
    setImmediate(() => dst.receive(copy, from));
  }
}

export class FakeUdp implements UdpTransport {
  readonly port: number;
  readonly sendDrops = 0;
  private handler: ((data: Uint8Array, from: Endpoint) => void) | undefined;
  private closed = false;

  constructor(
    private readonly net: FakeNet,
    readonly local: Endpoint,
  ) {
    this.port = local.port;
  }

  onMessage(handler: (data: Uint8Array, from: Endpoint) => void): void {
    this.handler = handler;
  }

  send(data: Uint8Array, to: Endpoint): boolean {
    if (this.closed) return false;
    this.net.carry(this.local, to, data);
    return true;
  }

  receive(data: Uint8Array, from: Endpoint): void {
    if (!this.closed) this.handler?.(data, from);
  }

  close(): void {
    this.closed = true;
  }
}

export interface TestKeys {
  server: Uint8Array;
  clients: Uint8Array[];
}

export function testKeys(n: number, seed = 'server-test'): TestKeys {
  return {
    server: generatePrivateKey(seededRandom(`${seed}/server`)),
    clients: Array.from({ length: n }, (_, i) => generatePrivateKey(seededRandom(`${seed}/client${i}`))),
  };
}

/** A client machine: a WireGuard peer of the server, its tunnel address, and a TCP stack on top. */
export class TestClient {
  readonly peer: Peer;
  readonly transport: FakeUdp;
  readonly pipe: PacketPipe;
  readonly tcp: TcpStack;
  /** Every packet the client decrypted, in order. */
  readonly received: Uint8Array[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    net: FakeNet,
    readonly ep: Endpoint,
    readonly address: number,
    privateKey: Uint8Array,
    serverPublicKey: Uint8Array,
    presharedKey?: Uint8Array,
  ) {
    this.peer = new Peer({ local: new StaticIdentity(privateKey), publicKey: serverPublicKey, presharedKey, endpoint: SERVER_EP });
    this.transport = net.bind(ep);
    this.pipe = new PacketPipe({ name: 'client', mtu: 1420, transmit: (p) => this.sendPacket(p) });
    this.tcp = new TcpStack({ link: this.pipe, clock: monotonicClock, logger: silentLogger() });
    const d = new PacketDispatcher({ link: this.pipe, icmp: 'drop', logger: silentLogger(), tcp: this.tcp.input });
    this.pipe.onReceive((b) => d.onBatch(b));
    this.transport.onMessage((data, from) => {
      const r = this.peer.receive(monotonicClock.now(), data, from);
      for (const out of r.datagrams) this.transport.send(out.data, out.to);
      for (const p of r.packets) {
        this.received.push(new Uint8Array(p));
        this.pipe.deliver(new Uint8Array(p));
      }
    });
    // The protocol's timers (retransmitted initiations, keepalives), coarsely.
    this.timer = setInterval(() => {
      for (const out of this.peer.poll(monotonicClock.now())) this.transport.send(out.data, out.to);
    }, 50);
  }

  /** Seal one IP packet to the server (a copy is made: the stack reuses its buffers). */
  sendPacket(p: Uint8Array): boolean {
    for (const out of this.peer.send(monotonicClock.now(), new Uint8Array(p))) this.transport.send(out.data, out.to);
    return true;
  }

  /** Open a TCP connection from this client's tunnel address. */
  connect(dstIp: number, dstPort: number, listener: TcpListener): TcpConnection {
    const c = this.tcp.table.connect(monotonicClock.now(), this.address, dstIp, {
      localPort: 30000 + Math.floor(Math.random() * 30000),
      remotePort: dstPort,
      iss: this.tcp.random32(),
      mss: 1380,
      listener,
    });
    this.tcp.schedule();
    return c;
  }

  /** Packets received that `pred` accepts, parsed. */
  packets(pred: (ip: Ipv4Packet) => boolean = () => true): Uint8Array[] {
    return this.received.filter((p) => {
      const ip = new Ipv4Packet();
      return ip.wrap(p, 0, p.length) === undefined && pred(ip);
    });
  }

  close(): void {
    clearInterval(this.timer);
    this.tcp.close();
    this.pipe.close();
    this.transport.close();
  }
}

export interface Rig {
  net: FakeNet;
  /** The server's clock and timers. */
  clock: ManualClock;
  server: RunningServer;
  keys: TestKeys;
  clients: TestClient[];
  close(): Promise<void>;
}

export const SERVER_IP = 0x0a080001; // 10.8.0.1
export const CLIENT_IPS = [0x0a080002, 0x0a080003]; // 10.8.0.2, 10.8.0.3

/** A server with `n` peers (10.8.0.2/32, 10.8.0.3/32, …) and a client for each. */
export async function makeRig(
  opts: { clients?: number; config?: Partial<ServerConfigInput>; psk?: boolean; host?: HostNetworks; logger?: Logger } = {},
): Promise<Rig> {
  const n = opts.clients ?? 1;
  const keys = testKeys(n);
  const psk = opts.psk ? seededRandom('server-test/psk')(32) : undefined;
  const config = parseServerConfig({
    listen: `${SERVER_EP.address}:${SERVER_EP.port}`,
    privateKey: formatKey(keys.server),
    address: '10.8.0.1/16',
    deny: [],
    peers: keys.clients.map((k, i) => ({
      name: `c${i}`,
      publicKey: formatKey(publicKeyOf(k)),
      ...(psk === undefined ? {} : { presharedKey: formatKey(psk) }),
      allowedIPs: [`10.8.0.${2 + i}/32`],
    })),
    log: { level: 'silent' },
    ...opts.config,
  });
  const net = new FakeNet();
  const clock = new ManualClock(1_000_000);
  const host = opts.host ?? { addresses: [], networks: [] };
  const server = await startServer(config, { transport: net.bind(SERVER_EP), logger: opts.logger ?? silentLogger(), clock, hostNetworks: () => Promise.resolve(host), hostNetworksRefreshMs: 0 });
  const serverPub = publicKeyOf(keys.server);
  const clients = keys.clients.map((k, i) => new TestClient(net, { address: `198.51.100.${10 + i}`, port: 40000 + i }, 0x0a080002 + i, k, serverPub, psk));
  return {
    net,
    clock,
    server,
    keys,
    clients,
    async close() {
      for (const c of clients) c.close();
      await server.stop();
    },
  };
}

/** Wait until `pred` holds, polling every 10 ms; throws with `what` after `timeoutMs`. */
export async function until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
