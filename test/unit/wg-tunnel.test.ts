/**
 * WireguardTunnel over a fake UDP network: a ping goes through (handshake first, NAT both
 * ways), cryptokey routing picks the peer by destination and refuses sources outside the
 * peer's AllowedIPs, timers send keepalives by themselves, a wrong key lets nothing through,
 * and the dispatcher hands tunnel-bound packets over before anything answers them locally.
 */
import { describe, expect, it } from 'vitest';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { silentLogger } from '../../src/logger.js';
import { generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { tunnelForwardHook } from '../../src/outbound/wireguard.js';
import { echoReplyInPlace, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_UNREACH_HOST, IcmpPacket } from '../../src/wire/icmp.js';
import { IP_PROTO_ICMP, IP_PROTO_UDP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { emitUdpIpv4, UdpPacket } from '../../src/wire/udp.js';
import { MESSAGE_INITIATION, MESSAGE_TRANSPORT } from '../../src/wireguard/messages.js';
import { icmpEcho, seededRandom } from './wg-harness.js';
import { C_ADDR, CaptureLink, DEV, FakeTimers, makeTunnelPair, S_ADDR, sendThrough, wrapped, cidr } from './wg-tunnel-harness.js';
import { WireguardTunnel } from '../../src/wireguard/client-tunnel.js';

function icmpOf(p: Uint8Array): { ip: Ipv4Packet; icmp: IcmpPacket } {
  const ip = wrapped(p);
  const icmp = new IcmpPacket();
  expect(ip.protocol).toBe(IP_PROTO_ICMP);
  expect(icmp.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined(); // checksum verified
  return { ip, icmp };
}

function udpPacket(src: number, dst: number, payload: Uint8Array, dstPort = 53): Uint8Array {
  const buf = new Uint8Array(28 + payload.length);
  emitUdpIpv4({ srcPort: 40000, dstPort, payload }, buf, 0, src, dst);
  return buf;
}

describe('WireguardTunnel: a ping through the tunnel', () => {
  it('handshakes on the first packet, delivers it with the tunnel address as source, and the reply comes back to the device address', () => {
    const t = makeTunnelPair();
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 1));
    t.net.pump();
    expect(t.net.log.map((d) => d.data[0])).toEqual([MESSAGE_INITIATION, 2, MESSAGE_TRANSPORT]);
    const [atServer, ...more] = t.serverLink.take();
    expect(more).toEqual([]);
    const req = icmpOf(atServer);
    expect([req.ip.src, req.ip.dst, req.icmp.type]).toEqual([C_ADDR, S_ADDR, ICMP_ECHO_REQUEST]);
    expect(req.ip.verifyChecksum()).toBe(true);

    // The server answers; the reply reaches the client's device addressed to the device.
    echoReplyInPlace(req.ip, req.icmp);
    sendThrough(t.server, atServer);
    t.net.pump();
    const [atClient] = t.clientLink.take();
    const rep = icmpOf(atClient);
    expect([rep.ip.src, rep.ip.dst, rep.icmp.type]).toEqual([S_ADDR, DEV, ICMP_ECHO_REPLY]);
    expect(rep.ip.verifyChecksum()).toBe(true);

    const cs = t.client.stats();
    expect(cs).toMatchObject({ txPackets: 1, rxPackets: 1, natOut: 1, natIn: 1 });
    expect(cs.peers[0].counters.handshakesCompleted).toBe(1);
    expect(cs.peers[0].hasSession).toBe(true);
    expect(cs.peers[0].endpoint).toBe('192.0.2.20:51820');
  });

  it('a UDP datagram keeps a valid checksum through the NAT both ways', () => {
    const t = makeTunnelPair();
    sendThrough(t.client, udpPacket(DEV, S_ADDR, new TextEncoder().encode('hello')));
    t.net.pump();
    const [p] = t.serverLink.take();
    const ip = wrapped(p);
    const udp = new UdpPacket();
    expect(udp.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(ip.src).toBe(C_ADDR);
    expect(udp.verifyChecksum(ip.src, ip.dst)).toBe(true);
    // back
    sendThrough(t.server, udpPacket(S_ADDR, C_ADDR, new TextEncoder().encode('world'), 40000));
    t.net.pump();
    const [q] = t.clientLink.take();
    const ip2 = wrapped(q);
    expect(ip2.dst).toBe(DEV);
    expect(udp.wrap(q, ip2.payloadOffset, ip2.payloadLen)).toBeUndefined();
    expect(udp.verifyChecksum(ip2.src, ip2.dst)).toBe(true);
  });

  it('packets sent before the handshake completes are queued (copied) and all arrive in order', () => {
    const t = makeTunnelPair();
    const buf = icmpEcho(DEV, S_ADDR, 1);
    sendThrough(t.client, buf);
    // The caller reuses its buffer at once, as the TUN link does.
    buf.set(icmpEcho(DEV, S_ADDR, 2));
    sendThrough(t.client, buf);
    t.net.pump();
    const got = t.serverLink.take().map((p) => icmpOf(p).icmp.seq);
    expect(got).toEqual([1, 2]);
  });

  it('writes decrypted packets behind a zero virtio header on a vnet device', () => {
    const t = makeTunnelPair({ vnet: true });
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 1));
    t.net.pump();
    const [req] = t.serverLink.take();
    const v = icmpOf(req);
    echoReplyInPlace(v.ip, v.icmp);
    sendThrough(t.server, req);
    t.net.pump();
    expect(t.clientLink.headers).toEqual([new Uint8Array(10)]);
    expect(icmpOf(t.clientLink.sent[0]).ip.dst).toBe(DEV);
  });
});

describe('WireguardTunnel: cryptokey routing', () => {
  it('drops and counts a packet whose source is outside the peer’s AllowedIPs', () => {
    const t = makeTunnelPair();
    // 10.8.0.99 is not the device address, so it leaves unchanged; the server allows 10.8.0.2/32 only.
    const spoofed = ipToU32('10.8.0.99')!;
    sendThrough(t.client, icmpEcho(spoofed, S_ADDR, 1));
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 2));
    t.net.pump();
    const got = t.serverLink.take().map((p) => icmpOf(p));
    expect(got.map((g) => [g.ip.src, g.icmp.seq])).toEqual([[C_ADDR, 2]]);
    const s = t.server.stats();
    expect(s.peerDropped).toEqual({ disallowed_source: 1 });
    expect(s.peers[0].dropped).toEqual({ disallowed_source: 1 });
    expect(s.rxPackets).toBe(1);
  });

  it('a peer may send from every address its AllowedIPs hold, and those addresses route to it', () => {
    const t = makeTunnelPair({ serverAllows: ['10.8.0.2/32', '192.168.77.0/24'] });
    const behind = ipToU32('192.168.77.5')!; // a host behind the client (not the device address: no NAT)
    sendThrough(t.client, icmpEcho(behind, S_ADDR, 1));
    t.net.pump();
    expect(icmpOf(t.serverLink.take()[0]).ip.src).toBe(behind);
    sendThrough(t.server, icmpEcho(S_ADDR, behind, 2));
    t.net.pump();
    const back = icmpOf(t.clientLink.take()[0]);
    expect([back.ip.src, back.ip.dst, back.icmp.seq]).toEqual([S_ADDR, behind, 2]);
    expect(t.server.stats().peerDropped).toEqual({});
  });

  it('sends to the peer whose AllowedIPs hold the destination (longest prefix wins)', () => {
    const clock = { now: () => 5000 };
    const link = new CaptureLink();
    const sent: Array<{ to: string; type: number }> = [];
    const keyA = publicKeyOf(generatePrivateKey(seededRandom('peer-a')));
    const keyB = publicKeyOf(generatePrivateKey(seededRandom('peer-b')));
    const tunnel = new WireguardTunnel({
      name: 'multi',
      privateKey: generatePrivateKey(seededRandom('multi')),
      peers: [
        { publicKey: keyA, endpoint: { address: '192.0.2.1', port: 1 }, allowedIPs: [cidr('10.0.0.0/8')] },
        { publicKey: keyB, endpoint: { address: '192.0.2.2', port: 2 }, allowedIPs: [cidr('10.9.0.0/16')] },
      ],
      link,
      transport: {
        port: 7,
        sendDrops: 0,
        onMessage: () => undefined,
        send: (d, to) => (sent.push({ to: to.address, type: d[0] }), true),
        close: () => undefined,
      },
      clock,
      logger: silentLogger(),
      timers: new FakeTimers(),
    });
    sendThrough(tunnel, icmpEcho(DEV, ipToU32('10.9.1.1')!, 1));
    sendThrough(tunnel, icmpEcho(DEV, ipToU32('10.1.1.1')!, 2));
    expect(sent).toEqual([
      { to: '192.0.2.2', type: MESSAGE_INITIATION },
      { to: '192.0.2.1', type: MESSAGE_INITIATION },
    ]);
    // No peer for 172.16.0.1: ICMP host unreachable back to the sender, from the destination.
    sendThrough(tunnel, icmpEcho(DEV, ipToU32('172.16.0.1')!, 3));
    const [icmp] = link.take();
    const e = icmpOf(icmp);
    expect([e.icmp.type, e.icmp.code, e.ip.src, e.ip.dst]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_HOST, ipToU32('172.16.0.1'), DEV]);
    expect(tunnel.stats().dropped.no_peer).toBe(1);
    tunnel.close();
  });
});

describe('WireguardTunnel: timers and keys', () => {
  it('with a persistent keepalive the handshake starts at start(), and keepalives follow by the timer', async () => {
    const t = makeTunnelPair({ clientPeer: { persistentKeepaliveSec: 25 } });
    t.client.start();
    t.net.pump();
    expect(t.client.stats().peers[0].counters.handshakesCompleted).toBe(1);
    await Promise.resolve(); // the re-arm runs as a microtask
    expect(t.clientTimers.pending.size).toBe(1);
    const before = t.client.stats().peers[0].counters.keepalivesSent;
    t.clock.advance(25_000);
    t.clientTimers.fireAll();
    t.net.pump();
    expect(t.client.stats().peers[0].counters.keepalivesSent).toBe(before + 1);
    expect(t.server.stats().peers[0].counters.keepalivesReceived).toBeGreaterThanOrEqual(1);
    await Promise.resolve();
    expect(t.clientTimers.pending.size).toBe(1); // re-armed for the next deadline
  });

  it('a handshake that gets no answer is retransmitted by the timer alone', async () => {
    const t = makeTunnelPair();
    t.net.filter = () => false; // everything lost
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 1));
    t.net.pump();
    await Promise.resolve();
    t.clock.advance(5_500);
    t.clientTimers.fireAll();
    t.net.pump();
    expect(t.client.stats().peers[0].counters.initiationsSent).toBe(2);
  });

  it('a wrong server key lets nothing through and throws nothing', () => {
    const wrong = publicKeyOf(generatePrivateKey(seededRandom('not-the-server')));
    const t = makeTunnelPair({ serverKeyForClient: wrong });
    for (let i = 0; i < 5; i++) sendThrough(t.client, icmpEcho(DEV, S_ADDR, i));
    t.net.pump();
    t.clock.advance(6000);
    t.client.poll();
    t.net.pump();
    expect(t.serverLink.sent).toEqual([]);
    expect(t.clientLink.sent).toEqual([]);
    expect(t.server.stats().deviceDropped).toEqual({ bad_mac1: 2 });
    expect(t.client.stats().peers[0].hasSession).toBe(false);
  });

  it('after close() nothing is sent or delivered and the socket is closed', () => {
    const t = makeTunnelPair();
    t.client.close();
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 1));
    expect(t.net.pump()).toBe(0);
    expect(t.clientTransport.closed).toBe(true);
  });
});

describe('the forward hook and the dispatcher', () => {
  it('hands packets the router sends to a tunnel to it, and leaves the rest', () => {
    const t = makeTunnelPair();
    const tunnels = new Map([['wg0', t.client]]);
    const seen: Array<[number, number, number]> = [];
    const hook = tunnelForwardHook((dst, proto, port) => {
      seen.push([dst, proto, port]);
      return (dst & 0xffff0000) >>> 0 === ipToU32('10.8.0.0') ? 'wg0' : 'proxy';
    }, tunnels)!;
    expect(hook(wrapped(udpPacket(DEV, S_ADDR, new Uint8Array(4), 5353)), -1)).toBe(true);
    expect(hook(wrapped(udpPacket(DEV, ipToU32('1.1.1.1')!, new Uint8Array(4))), -1)).toBe(false);
    expect(seen).toEqual([
      [S_ADDR, IP_PROTO_UDP, 5353],
      [ipToU32('1.1.1.1'), IP_PROTO_UDP, 53],
    ]);
    expect(tunnelForwardHook(() => 'wg0', new Map())).toBeUndefined();
  });

  it('while DNS is hijacked, port 53 stays with the engine except to the tunnel\'s own DNS servers', () => {
    const t = makeTunnelPair();
    const dnsServer = ipToU32('10.8.0.53')!;
    const hook = tunnelForwardHook(() => 'wg0', new Map([['wg0', t.client]]), new Map([['wg0', [dnsServer]]]))!;
    expect(hook(wrapped(udpPacket(DEV, S_ADDR, new Uint8Array(12))), -1)).toBe(false);
    expect(hook(wrapped(udpPacket(DEV, dnsServer, new Uint8Array(12))), -1)).toBe(true);
    expect(hook(wrapped(udpPacket(DEV, S_ADDR, new Uint8Array(12), 5353)), -1)).toBe(true);
    // A tunnel without DNS servers: every query is the engine's.
    const none = tunnelForwardHook(() => 'wg0', new Map([['wg0', t.client]]), new Map([['wg0', []]]))!;
    expect(none(wrapped(udpPacket(DEV, dnsServer, new Uint8Array(12))), -1)).toBe(false);
  });

  it('an echo request to a tunnel destination goes through the tunnel instead of being answered locally; others are answered', () => {
    const t = makeTunnelPair();
    const link = new CaptureLink();
    const forward = tunnelForwardHook((dst) => ((dst & 0xffff0000) >>> 0 === ipToU32('10.8.0.0') ? 'wg0' : 'block'), new Map([['wg0', t.client]]));
    const d = new PacketDispatcher({ link, icmp: 'reply', logger: silentLogger(), forward });
    const toTunnel = icmpEcho(DEV, S_ADDR, 1);
    d.onPacket(toTunnel, 0, toTunnel.length);
    const local = icmpEcho(DEV, ipToU32('10.66.1.7')!, 2);
    d.onPacket(local, 0, local.length);
    expect(d.stats().icmpEchoReplied).toBe(1);
    expect(link.sent.length).toBe(1); // only the local reply
    t.net.pump();
    expect(icmpOf(t.serverLink.take()[0]).icmp.seq).toBe(1);
  });

  it('fragments of a tunnel destination are forwarded as they are (no reassembly, no drop)', () => {
    const t = makeTunnelPair();
    const forward = tunnelForwardHook(() => 'wg0', new Map([['wg0', t.client]]));
    const d = new PacketDispatcher({ link: new CaptureLink(), icmp: 'reply', logger: silentLogger(), forward });
    const whole = udpPacket(DEV, S_ADDR, new Uint8Array(100).fill(7));
    // A first fragment: MF set, 48 data bytes.
    const frag = whole.slice(0, 20 + 48);
    const ip = new Ipv4Packet();
    ip.wrapUnchecked(frag, 0, frag.length);
    ip.setTotalLen(68);
    frag[6] = (frag[6] & 0xbf) | 0x20; // clear DF, set MF
    ip.fillChecksum();
    d.onPacket(frag, 0, frag.length);
    expect(d.stats().dropped).toBe(0);
    t.net.pump();
    const [got] = t.serverLink.take();
    const g = wrapped(got);
    expect([g.isFragment, g.moreFrags, g.src, g.length]).toEqual([true, true, C_ADDR, 68]);
  });
});
