/**
 * `tunroute server` without root or network: clients that are real WireGuard peers send
 * sealed packets over a fake UDP network; the server decrypts them, terminates TCP and UDP in
 * its userspace stack, re-originates them as ordinary sockets to servers on 127.0.0.1, and
 * seals the replies back to the peer that owns the destination.
 */
import { createHash } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import type { TcpConnection } from '../../src/stack/tcp/connection.js';
import type { CloseReason } from '../../src/stack/tcp/types.js';
import { ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_UNREACH_ADMIN_PROHIBITED, ICMP_UNREACH_PORT, IcmpPacket } from '../../src/wire/icmp.js';
import { pino } from 'pino';
import { parseServerConfig } from '../../src/config/server-schema.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import { hostDenyList, type HostNetworks } from '../../src/server/host-networks.js';
import { ServerGuard } from '../../src/server/server.js';
import { IP_PROTO_ICMP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { ipToU32, parseCidr, type Cidr } from '../../src/net/ipv4.js';
import { UdpPacket, emitUdpIpv4 } from '../../src/wire/udp.js';
import { CLIENT_IPS, SERVER_IP, TestClient, makeRig, until, type Rig } from './server-harness.js';
import { icmpEcho, seededRandom } from './wg-harness.js';

const LOOPBACK = ipToU32('127.0.0.1')!;
const P = (s: string): Cidr => parseCidr(s)!;

let rigs: Rig[] = [];
let servers: Array<Server | UdpSocket> = [];
afterEach(async () => {
  for (const r of rigs) await r.close();
  for (const s of servers) s.close();
  rigs = [];
  servers = [];
});

async function rig(opts: Parameters<typeof makeRig>[0] = {}): Promise<Rig> {
  const r = await makeRig(opts);
  rigs.push(r);
  return r;
}

function tcpEchoServer(): Promise<{ port: number; peers: string[] }> {
  const peers: string[] = [];
  return new Promise((resolve) => {
    const s = createServer((sock: Socket) => {
      peers.push(sock.remoteAddress ?? '');
      sock.pipe(sock);
    });
    servers.push(s);
    s.listen(0, '127.0.0.1', () => resolve({ port: (s.address() as { port: number }).port, peers }));
  });
}

function udpEchoServer(): Promise<number> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    servers.push(s);
    s.on('message', (m, r) => s.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    s.bind(0, '127.0.0.1', () => resolve(s.address().port));
  });
}

function udpPacket(src: number, srcPort: number, dst: number, dstPort: number, payload: Uint8Array): Uint8Array {
  const buf = new Uint8Array(28 + payload.length);
  emitUdpIpv4({ srcPort, dstPort, payload }, buf, 0, src, dst);
  return buf;
}

function icmpOf(p: Uint8Array): IcmpPacket | undefined {
  const icmp = new IcmpPacket();
  const hl = (p[0] & 0x0f) * 4;
  return icmp.wrap(p, hl, p.length - hl) === undefined ? icmp : undefined;
}

/** Connect, send `data`, half-close, collect the echo until the server's FIN. */
function echoThrough(c: TestClient, dstIp: number, port: number, data: Uint8Array): Promise<{ got: Buffer; reason?: CloseReason }> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    let sent = 0;
    // eslint-disable-next-line prefer-const -- assigned after pump is defined, which it calls
    let conn: TcpConnection;
    const pump = (): void => {
      while (sent < data.length) {
        const n = conn.write(data.subarray(sent, Math.min(data.length, sent + 65536)));
        if (n === 0) break;
        sent += n;
      }
      if (sent === data.length) conn.shutdownWrite();
      c.tcp.schedule();
    };
    conn = c.connect(dstIp, port, {
      onEstablished: pump,
      onWritable: pump,
      onData(chunk) {
        got.push(Buffer.from(chunk));
        conn.consumed(chunk.length);
        c.tcp.schedule();
      },
      onPeerFin: () => resolve({ got: Buffer.concat(got) }),
      onClosed: (reason) => {
        if (reason !== 'normal') resolve({ got: Buffer.concat(got), reason });
      },
    });
  });
}

describe('tunroute server: ICMP', () => {
  it('answers an echo to its own tunnel address, sealed back to the peer', async () => {
    const r = await rig();
    const c = r.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
    await until(() => c.packets((ip) => ip.protocol === IP_PROTO_ICMP).length > 0, 'the echo reply');
    const [reply] = c.packets((ip) => ip.protocol === IP_PROTO_ICMP);
    expect(icmpOf(reply)?.type).toBe(ICMP_ECHO_REPLY);
    expect(r.server.stats().packets!.icmpEchoReplied).toBe(1);
    // The handshake the echo started, from the peer's fake address.
    expect(r.server.peers()[0]).toMatchObject({ name: 'c0', endpoint: '198.51.100.10:40000', allowedIPs: ['10.8.0.2/32'] });
  });

  it('drops (and counts) echo requests to other destinations instead of answering for them', async () => {
    const r = await rig();
    const c = r.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], ipToU32('192.0.2.99')!, 1));
    await until(() => r.server.stats().gate!.icmpNotOurs === 1, 'the drop');
    await new Promise((res) => setTimeout(res, 50));
    expect(c.packets((ip) => ip.protocol === IP_PROTO_ICMP)).toHaveLength(0);
    expect(r.server.stats().packets!.icmpEchoReplied).toBe(0);
  });
});

describe('tunroute server: protocol timers on the injected clock', () => {
  it('sends a keepalive 10 s after data that got no answer, when its clock says so', async () => {
    const r = await rig();
    const c = r.clients[0];
    // An echo the server drops: data came in, nothing went back.
    c.sendPacket(icmpEcho(CLIENT_IPS[0], ipToU32('192.0.2.99')!, 1));
    await until(() => r.server.stats().gate!.icmpNotOurs === 1, 'the drop');
    await Promise.resolve(); // the timer is re-armed after the batch
    expect(r.server.peers()[0].counters.keepalivesSent).toBe(0);
    r.clock.advance(9_999);
    expect(r.server.peers()[0].counters.keepalivesSent).toBe(0);
    r.clock.advance(1);
    expect(r.server.peers()[0].counters.keepalivesSent).toBe(1);
    await until(() => c.peer.counters.keepalivesReceived === 1, 'the keepalive at the client');
  });
});

describe('tunroute server: TCP re-originated from the server host', () => {
  it('carries 1 MiB both ways to a loopback echo server, intact', async () => {
    const r = await rig();
    const echo = await tcpEchoServer();
    const data = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 131 + (i >> 9)) & 0xff);
    const { got, reason } = await echoThrough(r.clients[0], LOOPBACK, echo.port, data);
    expect(reason).toBeUndefined();
    const h = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
    expect(h(got)).toBe(h(data));
    // The destination saw an ordinary socket of the server host, not the peer's tunnel address.
    expect(echo.peers).toEqual(['127.0.0.1']);
    const s = r.server.stats();
    expect(s.tcp!.bytesUp).toBe(data.length);
    expect(s.tcp!.bytesDown).toBe(data.length);
    expect(s.outbounds.direct?.tcpEstablished).toBe(1);
  });

  it('answers RST for a port nothing listens on (refused upstream)', async () => {
    const r = await rig();
    const echo = await tcpEchoServer();
    const closed = echo.port;
    (servers.pop() as Server).close();
    const { reason } = await echoThrough(r.clients[0], LOOPBACK, closed, new Uint8Array(10));
    expect(reason).toBe('refused');
    expect(r.server.stats().tcp!.upstreamErrors.refused).toBe(1);
  });

  it('refuses TCP to its own tunnel address and, by default, to its loopback (deny list)', async () => {
    const r = await rig({ config: { deny: undefined } });
    const echo = await tcpEchoServer();
    const own = await echoThrough(r.clients[0], SERVER_IP, 80, new Uint8Array(1));
    expect(own.reason).toBe('refused');
    const lo = await echoThrough(r.clients[0], LOOPBACK, echo.port, new Uint8Array(1));
    expect(lo.reason).toBe('refused');
    expect(echo.peers).toEqual([]);
    expect(r.server.stats().tcp!.upstreamErrors.not_allowed).toBe(2);
  });
});

describe('tunroute server: UDP', () => {
  it('re-originates a datagram through a dgram socket and seals the reply back', async () => {
    const r = await rig();
    const port = await udpEchoServer();
    const c = r.clients[0];
    c.sendPacket(udpPacket(CLIENT_IPS[0], 5353, LOOPBACK, port, Buffer.from('hello')));
    await until(() => c.packets((ip) => ip.protocol === IP_PROTO_UDP).length > 0, 'the UDP reply');
    const [p] = c.packets((ip) => ip.protocol === IP_PROTO_UDP);
    const udp = new UdpPacket();
    expect(udp.wrap(p, 20, p.length - 20)).toBeUndefined();
    expect([udp.srcPort, udp.dstPort]).toEqual([port, 5353]);
    expect(Buffer.from(p.subarray(28)).toString()).toBe('echo:hello');
    expect(r.server.stats().udp).toMatchObject({ flowsOpen: 1, datagramsUp: 1, datagramsDown: 1 });
  });

  it('turns a closed UDP port into ICMP port unreachable for the peer', async () => {
    const r = await rig();
    const port = await udpEchoServer();
    (servers.pop() as UdpSocket).close();
    const c = r.clients[0];
    c.sendPacket(udpPacket(CLIENT_IPS[0], 5353, LOOPBACK, port, Buffer.from('anyone?')));
    await until(() => c.packets((ip) => ip.protocol === IP_PROTO_ICMP).length > 0, 'the ICMP error');
    const icmp = icmpOf(c.packets((ip) => ip.protocol === IP_PROTO_ICMP)[0]);
    expect([icmp?.type, icmp?.code]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT]);
  });
});

describe("tunroute server: this host's own addresses and networks", () => {
  // The host of the rig "has" 127.0.0.1 (lo, 127.0.0.0/8) and 192.168.7.1 (192.168.7.0/24):
  // the echo servers listen on loopback, so a refusal there is a refusal of a host address.
  const HOST = { addresses: [P('127.0.0.1/32'), P('192.168.7.1/32')], networks: [P('127.0.0.0/8'), P('192.168.7.0/24')] };

  function debugLog(): { logger: Logger; lines: Array<Record<string, unknown>> } {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    return { logger, lines };
  }

  it('refuses TCP to the host\'s own address with RST, and logs why at debug', async () => {
    const { logger, lines } = debugLog();
    const r = await rig({ host: HOST, logger });
    const echo = await tcpEchoServer();
    const res = await echoThrough(r.clients[0], LOOPBACK, echo.port, new Uint8Array(1));
    expect(res.reason).toBe('refused');
    expect(echo.peers).toEqual([]);
    expect(r.server.stats().tcp!.upstreamErrors.not_allowed).toBe(1);
    expect(lines.find((l) => l.msg === 'peer flow refused: destination denied')).toMatchObject({
      level: 20,
      dst: '127.0.0.1',
      protocol: 6,
      port: echo.port,
      reason: "this host's own address or directly connected network (not in allow)",
    });
  });

  it('refuses UDP to a directly connected network with ICMP administratively prohibited', async () => {
    const r = await rig({ host: HOST });
    const c = r.clients[0];
    c.sendPacket(udpPacket(CLIENT_IPS[0], 5353, ipToU32('192.168.7.20')!, 53, Buffer.from('lan?')));
    await until(() => c.packets((ip) => ip.protocol === IP_PROTO_ICMP).length > 0, 'the ICMP error');
    const icmp = icmpOf(c.packets((ip) => ip.protocol === IP_PROTO_ICMP)[0]);
    expect([icmp?.type, icmp?.code]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN_PROHIBITED]);
    expect(r.server.stats().udp!.dropped).toBe(1);
  });

  it('lets a peer reach what the allow list re-opens, TCP and UDP', async () => {
    const r = await rig({ host: HOST, config: { allow: ['127.0.0.1/32'] } });
    const echo = await tcpEchoServer();
    const data = new Uint8Array(1000).fill(7);
    const res = await echoThrough(r.clients[0], LOOPBACK, echo.port, data);
    expect(Buffer.compare(res.got, Buffer.from(data))).toBe(0);
    expect(echo.peers).toEqual(['127.0.0.1']);
    const port = await udpEchoServer();
    const c = r.clients[0];
    c.sendPacket(udpPacket(CLIENT_IPS[0], 5353, LOOPBACK, port, Buffer.from('hello')));
    await until(() => c.packets((ip) => ip.protocol === IP_PROTO_UDP).length > 0, 'the UDP reply');
  });

  it('follows the host: an address the host gains is refused from the next reading on', async () => {
    let host: HostNetworks = { addresses: [], networks: [] };
    const config = parseServerConfig({
      privateKey: formatKey(generatePrivateKey()),
      address: '10.8.0.1/16',
      deny: [],
      peers: [{ publicKey: formatKey(publicKeyOf(generatePrivateKey())), allowedIPs: ['10.8.0.2/32'] }],
    });
    const guard = new ServerGuard(config, 'direct', hostDenyList(host, config.allow), silentLogger());
    expect(guard.route(LOOPBACK, 6, 80)).toBe('direct');
    host = HOST;
    expect(guard.update(hostDenyList(host, config.allow))).toBe(true);
    expect(guard.route(LOOPBACK, 6, 80)).toBe('block');
    expect(guard.update(hostDenyList(host, config.allow))).toBe(false);
  });
});

describe('tunroute server: cryptokey routing', () => {
  it('drops and counts a packet whose source is outside the peer\'s AllowedIPs', async () => {
    const r = await rig();
    const c = r.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1)); // a session first
    await until(() => c.received.length === 1, 'the first reply');
    const before = r.server.link.stats.rxPackets;
    c.sendPacket(icmpEcho(ipToU32('10.8.0.99')!, SERVER_IP, 2));
    c.sendPacket(udpPacket(ipToU32('10.8.0.3')!, 1, LOOPBACK, 9, Buffer.from('spoofed')));
    await until(() => r.server.peers()[0].counters.dropped.disallowed_source === 2, 'the drops');
    expect(r.server.link.stats.rxPackets).toBe(before);
    expect(r.server.stats().packets!.icmpEchoReplied).toBe(1);
  });

  it('forwards between peers by their AllowedIPs, TTL minus one', async () => {
    const r = await rig({ clients: 2 });
    const [a, b] = r.clients as [TestClient, TestClient];
    b.sendPacket(icmpEcho(CLIENT_IPS[1], SERVER_IP, 1)); // b needs a session (and an endpoint)
    await until(() => b.received.length === 1, 'b\'s session');
    a.sendPacket(icmpEcho(CLIENT_IPS[0], CLIENT_IPS[1], 7));
    await until(() => b.received.length === 2, 'the forwarded echo');
    const p = b.received[1];
    expect(p[8]).toBe(63);
    expect(r.server.stats().gate!.forwarded).toBe(1);
  });

  it('gives a client with an unknown key nothing, and keeps serving the others', async () => {
    const r = await rig();
    const stranger = new TestClient(r.net, { address: '198.51.100.66', port: 4444 }, CLIENT_IPS[0], generatePrivateKey(seededRandom('stranger')), publicKeyOf(r.keys.server));
    try {
      stranger.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
      await until(() => r.server.stats().deviceDrops.unknown_peer >= 1, 'the unknown-peer drop');
      expect(r.net.log.filter((d) => d.to.address === '198.51.100.66')).toHaveLength(0);
      const c = r.clients[0];
      c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
      await until(() => c.received.length === 1, 'the good client\'s reply');
      expect(stranger.received).toHaveLength(0);
    } finally {
      stranger.close();
    }
  });

  it('takes 2000 random, truncated and bit-flipped datagrams without harm, and keeps serving', async () => {
    const r = await rig();
    const c = r.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
    await until(() => c.received.length === 1, 'a session');
    const real = r.net.log.filter((d) => d.to.port === 51820).map((d) => d.data);
    const rnd = seededRandom('server-fuzz');
    const from = { address: '203.0.113.5', port: 999 };
    for (let i = 0; i < 2000; i++) {
      const base = real[i % real.length];
      const b = rnd(4);
      let d: Uint8Array;
      if (b[0] % 3 === 0) d = rnd(1 + (b[1] % 200));
      else if (b[0] % 3 === 1) d = base.slice(0, b[1] % base.length);
      else {
        d = base.slice();
        d[(b[1] * 256 + b[2]) % d.length] ^= 1 << (b[3] % 8);
      }
      r.net.carry(from, { address: '192.0.2.1', port: 51820 }, d);
    }
    await until(() => r.server.stats().tunnel.rxDatagrams >= 2000 + real.length, 'the garbage to arrive');
    expect(r.server.stats().tunnel.internalErrors).toBe(0);
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 2));
    await until(() => c.received.length === 2, 'the reply after the garbage');
  });

  it('counts replies for destinations no peer owns', async () => {
    const r = await rig();
    expect(r.server.tunnel.sendPacket(icmpEcho(SERVER_IP, ipToU32('10.9.9.9')!, 1))).toBe(false);
    expect(r.server.stats().tunnel.noPeer).toBe(1);
  });

  it('works with a preshared key', async () => {
    const r = await rig({ psk: true });
    const c = r.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
    await until(() => c.received.length === 1, 'the reply');
    expect(formatKey(publicKeyOf(r.keys.clients[0]))).toBe(r.server.peers()[0].publicKey);
  });
});

describe('tunroute server: stop', () => {
  it('resets open flows (RST reaches the peer) and erases the keys', async () => {
    const r = await rig();
    const echo = await tcpEchoServer();
    const c = r.clients[0];
    const closed = new Promise<CloseReason>((resolve) => {
      c.connect(LOOPBACK, echo.port, { onClosed: resolve });
    });
    await until(() => r.server.flows().length === 1 && r.server.flows()[0].state === 'ESTABLISHED', 'an established flow');
    await r.server.stop();
    expect(await closed).toBe('reset');
    expect(r.server.tunnel.device.allPeers()).toHaveLength(0);
  });
});
