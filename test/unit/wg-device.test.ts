/**
 * A device with several peers: initiations routed by the decrypted static key, everything
 * else by receiver index; unknown peers, forged initiations and floods counted at the device.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { Device } from '../../src/wireguard/device.js';
import type { Datagram, Endpoint } from '../../src/wireguard/endpoint.js';
import { StaticIdentity } from '../../src/wireguard/handshake.js';
import { generatePrivateKey } from '../../src/wireguard/keys.js';
import { Peer } from '../../src/wireguard/peer.js';
import { REKEY_TIMEOUT_JITTER_MAX_MS, REKEY_TIMEOUT_MS } from '../../src/wireguard/timers.js';
import { icmpEcho, seededRandom, toHex } from './wg-harness.js';

const SERVER_EP: Endpoint = { address: '198.51.100.1', port: 51820 };
const SERVER_IP = 0x0a000001;

function setup(underLoad?: () => boolean) {
  const clock = new ManualClock(5000);
  let wall = Date.UTC(2026, 0, 1);
  const device = new Device({ privateKey: generatePrivateKey(seededRandom('dev')), random: seededRandom('dev/rand'), wallClock: () => wall, underLoad });
  const clients = [1, 2, 3].map((n) => {
    const id = new StaticIdentity(generatePrivateKey(seededRandom(`client${n}`)));
    const peer = new Peer({ local: id, publicKey: device.publicKey, endpoint: SERVER_EP, random: seededRandom(`c${n}/rand`), wallClock: () => wall });
    return { n, id, peer, ep: { address: `203.0.113.${n}`, port: 40000 + n }, ip: 0x0a000010 + n };
  });
  // Only clients 1 and 2 are configured on the server.
  for (const c of clients.slice(0, 2)) device.addPeer({ publicKey: c.id.publicKey });
  /** Deliver datagrams between the device and the clients until quiet; returns packets the device delivered. */
  function exchange(from: 'device' | number, ds: Datagram[]): { atDevice: Uint8Array[]; atClients: Map<number, Uint8Array[]>; types: string[] } {
    const atDevice: Uint8Array[] = [];
    const atClients = new Map<number, Uint8Array[]>();
    const types: string[] = [];
    const q = ds.map((d) => ({ from, d }));
    while (q.length > 0) {
      const { from: f, d } = q.shift()!;
      types.push(`${f}:${d.data[0]}`);
      if (f === 'device') {
        const c = clients.find((x) => x.ep.address === d.to.address && x.ep.port === d.to.port);
        if (!c) continue;
        const r = c.peer.receive(clock.now(), d.data, SERVER_EP);
        atClients.set(c.n, [...(atClients.get(c.n) ?? []), ...r.packets]);
        q.push(...r.datagrams.map((x) => ({ from: c.n, d: x })));
      } else {
        const c = clients.find((x) => x.n === f)!;
        const r = device.receive(clock.now(), d.data, c.ep);
        atDevice.push(...r.packets);
        q.push(...r.datagrams.map((x) => ({ from: 'device' as const, d: x })));
      }
    }
    return { atDevice, atClients, types };
  }
  return { clock, device, clients, exchange, tick: (ms: number) => { clock.advance(ms); wall += ms; } };
}

describe('Device', () => {
  it('routes two clients to their own peers, both directions', () => {
    const s = setup();
    for (const c of s.clients.slice(0, 2)) {
      const r = s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, c.n)));
      expect(r.types).toEqual([`${c.n}:1`, 'device:2', `${c.n}:4`]);
      expect(r.atDevice.map(toHex)).toEqual([toHex(icmpEcho(c.ip, SERVER_IP, c.n))]);
    }
    for (const c of s.clients.slice(0, 2)) {
      const sp = s.device.peer(c.id.publicKey)!;
      expect(sp.endpoint).toEqual(c.ep);
      const r = s.exchange('device', sp.send(s.clock.now(), icmpEcho(SERVER_IP, c.ip, 9)));
      expect(r.atClients.get(c.n)?.map(toHex)).toEqual([toHex(icmpEcho(SERVER_IP, c.ip, 9))]);
    }
    expect(Object.values(s.device.dropped).every((n) => n === 0)).toBe(true);
  });

  it('an initiation from an unknown key is dropped; garbage and unknown indices are counted', () => {
    const s = setup();
    const stranger = s.clients[2];
    s.exchange(stranger.n, stranger.peer.send(s.clock.now(), icmpEcho(stranger.ip, SERVER_IP, 1)));
    expect(s.device.dropped.unknown_peer).toBe(1);
    const now = s.clock.now();
    s.device.receive(now, new Uint8Array(3), stranger.ep);
    s.device.receive(now, Uint8Array.of(4, 0, 0, 0, 1, 2, 3, 4, ...new Uint8Array(40)), stranger.ep);
    const badMac = new Uint8Array(148);
    badMac[0] = 1;
    s.device.receive(now, badMac, stranger.ep);
    expect(s.device.dropped).toMatchObject({ unknown_peer: 1, truncated: 1, unknown_index: 1, bad_mac1: 1 });
  });

  it('removing a peer erases it: its sessions stop and its initiations are unknown', () => {
    const s = setup();
    const c = s.clients[0];
    s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, 1)));
    expect(s.device.removePeer(c.id.publicKey)).toBe(true);
    const r = s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, 2)));
    expect(r.atDevice).toEqual([]);
    expect(s.device.dropped.unknown_index).toBe(1);
    expect(s.device.removePeer(c.id.publicKey)).toBe(false);
  });

  it('under load: cookie reply first, then the retransmitted initiation with mac2 is accepted', () => {
    const s = setup(() => true);
    const c = s.clients[0];
    const r1 = s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, 1)));
    expect(r1.types).toEqual([`${c.n}:1`, 'device:3']);
    expect(s.device.dropped.cookie_required).toBe(1);
    s.tick(REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    const r2 = s.exchange(c.n, c.peer.poll(s.clock.now()));
    expect(r2.types).toEqual([`${c.n}:1`, 'device:2', `${c.n}:4`]);
    expect(r2.atDevice).toHaveLength(1);
  });

  it('under load, a flood of valid-cookie initiations from one address is rate limited (burst 5)', () => {
    const s = setup(() => true);
    const c = s.clients[0];
    s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, 1))); // gets a cookie
    s.tick(REKEY_TIMEOUT_MS);
    const [init] = c.peer.initiate(s.clock.now()); // carries mac2
    for (let k = 0; k < 10; k++) s.device.receive(s.clock.now(), init.data, c.ep);
    expect(s.device.dropped.rate_limited).toBe(5);
    const sp = s.device.peer(c.id.publicKey)!;
    expect(sp.counters.initiationsReceived).toBe(1);
    expect(sp.counters.dropped.replayed_timestamp).toBe(4); // the other four of the burst
    // Tokens come back at 20 per second.
    s.tick(100);
    s.device.receive(s.clock.now(), init.data, c.ep);
    expect(s.device.dropped.rate_limited).toBe(5);
  });

  it('pollAt and poll cover all peers', () => {
    const s = setup();
    const c = s.clients[0];
    s.exchange(c.n, c.peer.send(s.clock.now(), icmpEcho(c.ip, SERVER_IP, 1)));
    const at = s.device.pollAt()!;
    expect(at).toBeGreaterThan(s.clock.now());
    s.clock.set(at);
    const out = s.device.poll(at);
    expect(out.map((d) => d.data.length)).toEqual([32]); // the passive keepalive to client 1
    expect(out[0].to).toEqual(c.ep);
  });
});
