/**
 * Offline replay of a real exchange with wireguard-go (captured by test/e2e/wg-interop.test.ts
 * with WG_WRITE_FIXTURE=1; test keys only). Our randomness was seeded during the capture, so
 * replaying the same calls reproduces our messages byte for byte, and wireguard-go's messages
 * must open with the keys we derive. Runs without root.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { CookieChecker } from '../../src/wireguard/cookie.js';
import type { Endpoint } from '../../src/wireguard/endpoint.js';
import { openInitiation, StaticIdentity } from '../../src/wireguard/handshake.js';
import { parseKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { InitiationMessage, ResponseMessage } from '../../src/wireguard/messages.js';
import { Peer } from '../../src/wireguard/peer.js';
import { echoReplyInPlace, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpPacket } from '../../src/wire/icmp.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { hex, seededRandom, toHex } from './wg-harness.js';

interface Side {
  ourPrivateKey: string;
  ourPublicKey: string;
  presharedKey?: string;
  seed: string;
  wallMs?: number;
  echoRequest: string;
  exchange: { from: 'us' | 'wg'; hex: string }[];
}
interface Fixture {
  wireguardGo: string;
  wgPrivateKey: string;
  wgPublicKey: string;
  initiator: Side;
  responder: Side;
}

const fx = JSON.parse(readFileSync(fileURLToPath(new URL('../fixtures/wg/interop.json', import.meta.url)), 'utf8')) as Fixture;
const WG_EP: Endpoint = { address: '10.201.0.1', port: 51820 };
const WG_IP = 0x0aca0001;
const OUR_IP = 0x0aca0002;
const wgPub = parseKey(fx.wgPublicKey);

function icmp(p: Uint8Array): { ip: Ipv4Packet; icmp: IcmpPacket } {
  const ip = new Ipv4Packet();
  expect(ip.wrap(p, 0, p.length)).toBeUndefined();
  const ic = new IcmpPacket();
  expect(ic.wrap(p, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
  return { ip, icmp: ic };
}

function answer(p: Uint8Array): Uint8Array {
  const { ip, icmp: ic } = icmp(p);
  echoReplyInPlace(ip, ic);
  return p;
}

describe(`interop vectors captured from ${fx.wireguardGo}`, () => {
  it('the fixture keys are consistent', () => {
    expect(toHex(publicKeyOf(parseKey(fx.wgPrivateKey)))).toBe(toHex(wgPub));
    for (const s of [fx.initiator, fx.responder]) expect(toHex(publicKeyOf(parseKey(s.ourPrivateKey)))).toBe(toHex(parseKey(s.ourPublicKey)));
  });

  it('responder: wireguard-go’s initiation validates (mac1, static key, timestamp) and the session matches', () => {
    const s = fx.responder;
    const ex = s.exchange.map((e) => ({ from: e.from, data: hex(e.hex) }));
    const local = new StaticIdentity(parseKey(s.ourPrivateKey));
    // The initiation as wireguard-go sent it: mac1 under our key, its static key inside.
    const init = ex[0];
    expect(init.from).toBe('wg');
    expect(InitiationMessage.parse(init.data)).toBeDefined();
    expect(new CookieChecker(local.publicKey).checkMac1(init.data)).toBe(true);
    expect(toHex(InitiationMessage.parse(init.data)!.mac2)).toBe('00'.repeat(16));
    expect(toHex(openInitiation(local, init.data)!.remoteStatic)).toBe(toHex(wgPub));

    const clock = new ManualClock(1000);
    const peer = new Peer({ local, publicKey: wgPub, presharedKey: parseKey(s.presharedKey!), random: seededRandom(`${s.seed}/rand`) });
    const r1 = peer.receive(clock.now(), init.data, WG_EP);
    expect(r1.datagrams.map((d) => toHex(d.data))).toEqual([toHex(ex[1].data)]); // our response, byte for byte
    expect(ResponseMessage.parse(ex[1].data)!.receiver).toBe(InitiationMessage.parse(init.data)!.sender);
    // wireguard-go's first transport message: its ping to us.
    const r2 = peer.receive(clock.now(), ex[2].data, WG_EP);
    expect(r2.packets).toHaveLength(1);
    const req = icmp(r2.packets[0]);
    expect([req.ip.src, req.ip.dst, req.icmp.type]).toEqual([WG_IP, OUR_IP, ICMP_ECHO_REQUEST]);
    expect(peer.send(clock.now(), answer(r2.packets[0])).map((d) => toHex(d.data))).toEqual([toHex(ex[3].data)]);
    // Our own ping and wireguard-go's reply.
    expect(peer.send(clock.now(), hex(s.echoRequest)).map((d) => toHex(d.data))).toEqual([toHex(ex[4].data)]);
    const r3 = peer.receive(clock.now(), ex[5].data, WG_EP);
    const rep = icmp(r3.packets[0]);
    expect([rep.ip.src, rep.ip.dst, rep.icmp.type]).toEqual([WG_IP, OUR_IP, ICMP_ECHO_REPLY]);
    expect(Object.values(peer.counters.dropped).every((n) => n === 0)).toBe(true);
  });

  it('initiator: our initiation is reproduced exactly and wireguard-go’s response completes it', () => {
    const s = fx.initiator;
    const ex = s.exchange.map((e) => ({ from: e.from, data: hex(e.hex) }));
    const clock = new ManualClock(1000);
    const peer = new Peer({
      local: new StaticIdentity(parseKey(s.ourPrivateKey)),
      publicKey: wgPub,
      endpoint: WG_EP,
      random: seededRandom(`${s.seed}/rand`),
      wallClock: () => s.wallMs!,
    });
    const sent = peer.send(clock.now(), hex(s.echoRequest));
    expect(sent.map((d) => toHex(d.data))).toEqual([toHex(ex[0].data)]);
    const r1 = peer.receive(clock.now(), ex[1].data, WG_EP); // wireguard-go's response
    expect(r1.datagrams.map((d) => toHex(d.data))).toEqual([toHex(ex[2].data)]); // the queued ping
    const r2 = peer.receive(clock.now(), ex[3].data, WG_EP);
    const rep = icmp(r2.packets[0]);
    expect([rep.ip.src, rep.ip.dst, rep.icmp.type]).toEqual([WG_IP, OUR_IP, ICMP_ECHO_REPLY]);
    const r3 = peer.receive(clock.now(), ex[4].data, WG_EP); // wireguard-go's ping
    expect(icmp(r3.packets[0]).icmp.type).toBe(ICMP_ECHO_REQUEST);
    expect(peer.send(clock.now(), answer(r3.packets[0])).map((d) => toHex(d.data))).toEqual([toHex(ex[5].data)]);
    expect(Object.values(peer.counters.dropped).every((n) => n === 0)).toBe(true);
  });
});
