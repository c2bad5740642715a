/**
 * Garbage and mutated messages never throw, never deliver a packet, never move the endpoint,
 * and never break the session: every one is counted as dropped.
 */
import { describe, expect, it } from 'vitest';
import { Device } from '../../src/wireguard/device.js';
import { deliver, EP_A, icmpEcho, IP_A, IP_B, makePair, seededRandom } from './wg-harness.js';

describe('fuzz: peers and devices drop what they cannot authenticate', () => {
  it('random and bit-flipped datagrams', () => {
    const p = makePair({ seed: 'fuzz' });
    deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 0)));
    const r = seededRandom('fuzz/input');
    const now = p.clock.now();
    // Valid messages of every type to mutate.
    const [init] = makePair({ seed: 'fuzz' }).a.initiate(now);
    const transport = p.a.send(now, icmpEcho(IP_A, IP_B, 1))[0].data;
    const keepalive = p.a.send(now, new Uint8Array(0))[0].data;
    const samples = [init.data, transport, keepalive];
    const before = { ...p.b.counters.dropped };
    const rxBefore = p.b.counters.rxPackets;
    const device = new Device({ privateKey: r(32), random: seededRandom('fuzz/dev') });
    device.addPeer({ publicKey: r(32) });
    let n = 0;
    for (let i = 0; i < 3000; i++) {
      let data: Uint8Array;
      const kind = i % 3;
      if (kind === 0) {
        const len = r(2)[0] % 200;
        data = r(len);
        if (len >= 4) {
          data[0] = 1 + (r(1)[0] % 4); // make it look like one of the four types
          data[1] = data[2] = data[3] = 0;
        }
      } else {
        const base = samples[i % samples.length];
        data = new Uint8Array(base);
        const flips = 1 + (r(1)[0] % 3);
        for (let k = 0; k < flips; k++) {
          const at = 4 + (((r(2)[0] << 8) | r(2)[1]) % (data.length - 4)); // keep the type: exercise the crypto
          data[at] ^= 1 << (r(1)[0] % 8);
        }
        if (kind === 2) data = data.subarray(0, r(1)[0] % data.length);
      }
      const from = { address: `198.51.100.${i % 250}`, port: 1000 + i };
      const res = p.b.receive(now + i, data, from);
      expect(res.packets).toEqual([]);
      device.receive(now + i, data, from);
      n++;
    }
    const dropped = Object.entries(p.b.counters.dropped).reduce((s, [k, v]) => s + v - before[k as keyof typeof before], 0);
    // Mutated initiations may still be answered by nobody; nothing was delivered or accepted.
    expect(p.b.counters.rxPackets).toBe(rxBefore);
    expect(dropped).toBe(n);
    expect(p.b.endpoint).toEqual(EP_A);
    // The real session is unharmed.
    expect(deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 2))).toB).toHaveLength(1);
  });
});
