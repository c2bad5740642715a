import { describe, expect, it } from 'vitest';
import { MemoryLink } from '../../src/link/memory.js';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { silentLogger } from '../../src/logger.js';
import { Ipv4Packet, writeIpv4Header, IP_PROTO_ICMP, IP_PROTO_UDP } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { IcmpPacket, ICMP_ECHO_REPLY } from '../../src/wire/icmp.js';
import { emitUdpIpv4 } from '../../src/wire/udp.js';
import { mulberry32 } from '../helpers/random.js';
import { DROP_REASONS } from '../../src/wire/drop.js';

const APP = ipToU32('198.18.0.1')!;
const REMOTE = ipToU32('10.66.1.7')!;

function echoRequest(ident: number, seq: number, data: Uint8Array): Uint8Array {
  const p = new Uint8Array(20 + 8 + data.length);
  writeIpv4Header(p, 0, APP, REMOTE, IP_PROTO_ICMP, 8 + data.length, 64, 0, 0x1234, true);
  p[20] = 8; // echo request
  p[24] = ident >> 8;
  p[25] = ident & 0xff;
  p[26] = seq >> 8;
  p[27] = seq & 0xff;
  p.set(data, 28);
  const icmp = new IcmpPacket();
  icmp.wrapUnchecked(p, 20, 8 + data.length);
  icmp.fillChecksum();
  return p;
}

function setup(icmp: 'reply' | 'drop' = 'reply') {
  const link = new MemoryLink({ mtu: 1500 });
  const d = new PacketDispatcher({ link, icmp, logger: silentLogger() });
  const feed = (p: Uint8Array): void => d.onPacket(p, 0, p.length);
  return { link, d, feed };
}

describe('ICMP echo', () => {
  it('answers an echo request with a valid reply from the address that was pinged', () => {
    const { link, d, feed } = setup();
    const data = new TextEncoder().encode('tunroute ping payload');
    feed(echoRequest(0x77, 3, data));
    const [reply] = link.drain();
    expect(reply).toBeDefined();
    const ip = new Ipv4Packet();
    expect(ip.wrap(reply, 0, reply.length)).toBeUndefined(); // header checksum valid
    expect(ip.src).toBe(REMOTE);
    expect(ip.dst).toBe(APP);
    const icmp = new IcmpPacket();
    expect(icmp.wrap(reply, ip.payloadOffset, ip.payloadLen)).toBeUndefined(); // ICMP checksum valid
    expect(icmp.type).toBe(ICMP_ECHO_REPLY);
    expect([icmp.ident, icmp.seq]).toEqual([0x77, 3]);
    expect(Buffer.from(icmp.data()).toString()).toBe('tunroute ping payload');
    expect(d.stats().icmpEchoReplied).toBe(1);
  });

  it('drops echo requests when told to', () => {
    const { link, d, feed } = setup('drop');
    feed(echoRequest(1, 1, new Uint8Array(8)));
    expect(link.drain()).toHaveLength(0);
    expect(d.stats().icmpEchoDropped).toBe(1);
  });
});

describe('malformed packets', () => {
  it('are counted by reason', () => {
    const { link, d, feed } = setup();
    const good = echoRequest(1, 1, new Uint8Array(16));
    feed(good.subarray(0, 12)); // too short
    const v6 = good.slice();
    v6[0] = 0x55; // version 5: not a version we know (6 is counted apart as ipv6)
    feed(v6);
    const badSum = good.slice();
    badSum[10] ^= 0xff;
    feed(badSum);
    const lying = good.slice();
    lying[3] += 40; // total length beyond the buffer (checksum irrelevant: checked later)
    feed(lying);
    const badIcmp = good.slice();
    badIcmp[30] ^= 1;
    feed(badIcmp);
    const frag = new Uint8Array(28);
    writeIpv4Header(frag, 0, APP, REMOTE, IP_PROTO_UDP, 8, 64, 0, 1, false);
    frag[6] |= 0x20; // MF
    const ip = new Ipv4Packet();
    ip.wrapUnchecked(frag, 0, 28);
    ip.fillChecksum();
    feed(frag);
    const s = d.stats();
    expect(s.drops.too_short).toBe(1);
    expect(s.drops.bad_version).toBe(1);
    expect(s.drops.bad_header_checksum).toBe(1);
    expect(s.drops.bad_total_length).toBe(1);
    expect(s.drops.bad_icmp_checksum).toBe(1);
    expect(s.drops.fragment).toBe(1);
    expect(s.dropped).toBe(6);
    expect(link.drain()).toHaveLength(0);
  });

  it('counts UDP as no_handler until a handler is installed, then hands it over', () => {
    const { d, feed } = setup();
    const p = new Uint8Array(64);
    const n = emitUdpIpv4({ srcPort: 5000, dstPort: 53, payload: new Uint8Array(10) }, p, 0, APP, REMOTE);
    feed(p.subarray(0, n));
    expect(d.stats().drops.no_handler).toBe(1);
    let seen = 0;
    d.setUdpHandler(() => seen++);
    feed(p.subarray(0, n));
    expect(seen).toBe(1);
  });

  it('100,000 random and mutated buffers crash nothing and are all accounted for', () => {
    const { d, feed } = setup();
    const rnd = mulberry32(2026);
    const good = echoRequest(9, 9, new Uint8Array(32));
    for (let i = 0; i < 100_000; i++) {
      let p: Uint8Array;
      if (i % 2 === 0) {
        p = new Uint8Array(Math.floor(rnd() * 80));
        for (let j = 0; j < p.length; j++) p[j] = Math.floor(rnd() * 256);
        if (p.length > 0 && rnd() < 0.5) p[0] = 0x45; // get past the version check often
      } else {
        p = good.slice(0, Math.max(0, good.length - Math.floor(rnd() * 8)));
        const flips = 1 + Math.floor(rnd() * 3);
        for (let k = 0; k < flips && p.length > 0; k++) p[Math.floor(rnd() * p.length)] ^= 1 << Math.floor(rnd() * 8);
      }
      feed(p);
    }
    const s = d.stats();
    expect(s.rxPackets).toBe(100_000);
    const byReason = DROP_REASONS.reduce((a, r) => a + s.drops[r], 0);
    expect(byReason).toBe(s.dropped);
    // Every packet ends exactly one way: dropped for a reason, or answered.
    expect(s.dropped + s.icmpEchoReplied + s.icmpEchoDropped + s.tcpPackets + s.udpPackets + s.fragments).toBe(s.rxPackets);
    expect(s.dropped).toBeGreaterThan(90_000);
  });
});
