/**
 * native/fake_dns.c, the TUN reader's own answers to plain A queries, through the addon's
 * fakeDnsAnswer (the reader's answer for one packet, without a device): the answer is the
 * stack's (writeAddressAnswer's DNS bytes in a valid IPv4/UDP packet back to the asker), what is
 * not plain goes to JS untouched (decide() is not even asked), and no byte sequence breaks it.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../helpers/random.js';
import { addonPath, tryLoadNative } from '../../src/native/addon.js';
import { emitDnsMessage, writeAddressAnswer, DNS_TYPE_A, DNS_TYPE_AAAA } from '../../src/dns/message.js';
import { QueryQuestion, readQueryQuestion } from '../../src/dns/question-key.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { Ipv4Packet } from '../../src/wire/ipv4.js';
import { UdpPacket, emitUdpIpv4 } from '../../src/wire/udp.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, VNET_HDR_LEN } from '../../src/wire/virtio-net.js';

const native = tryLoadNative();
const answer = native?.fakeDnsAnswer?.bind(native);
if (answer === undefined) console.warn(`fake-dns-native: SKIPPED — the native addon is not built (${addonPath()}); run \`npm run build\`.`);

const APP = ipToU32('198.18.0.1') ?? 0;
const RESOLVER = ipToU32('10.66.1.53') ?? 0;
const FAKE = ipToU32('198.18.3.4') ?? 0;
const TTL = 1;

function query(name: string, qtype = DNS_TYPE_A, flags = 0x0100): Uint8Array {
  return emitDnsMessage({ id: 0xbeef, flags, question: { name, qtype }, additional: [{ name: '.', type: 41, rclass: 1232, ttl: 0, data: new Uint8Array(0) }] });
}

/** `dns` to RESOLVER:dstPort as the device hands it over (with a virtio-net header when vnet). */
function packet(dns: Uint8Array, o: { vnet?: boolean; vnetFlags?: number; gso?: number; dstPort?: number } = {}): Buffer {
  const v = o.vnet === false ? 0 : VNET_HDR_LEN;
  const buf = Buffer.alloc(v + 28 + dns.length);
  if (v > 0) {
    buf[0] = o.vnetFlags ?? 0;
    buf[1] = o.gso ?? 0;
  }
  emitUdpIpv4({ srcPort: 40000, dstPort: o.dstPort ?? 53, payload: dns }, buf, v, APP, RESOLVER);
  return buf;
}

interface Asked {
  name: string;
  queryBytes: number;
  answerBytes: number;
}

function ask(pkt: Uint8Array, vnet = VNET_HDR_LEN, give = FAKE): { out: Buffer | null; asked: Asked[] } {
  const asked: Asked[] = [];
  const out = answer!(pkt, vnet, TTL, (name, queryBytes, answerBytes) => {
    asked.push({ name, queryBytes, answerBytes });
    return give;
  });
  return { out, asked };
}

describe.skipIf(answer === undefined)('the TUN reader\'s fake-IP answers (native/fake_dns.c)', () => {
  it.each([
    ['with a virtio-net header', true],
    ['without one', false],
  ])('answers a plain A query %s: the stack\'s DNS bytes, in a valid packet back to the asker', (_, vnet) => {
    const q = query('WeB.Lab');
    const { out, asked } = ask(packet(q, { vnet }), vnet ? VNET_HDR_LEN : 0);
    if (out === null) throw new Error('not answered');
    const v = vnet ? VNET_HDR_LEN : 0;
    expect([...out.subarray(0, v)]).toEqual(new Array(v).fill(0));
    const ip = new Ipv4Packet();
    expect(ip.wrap(out, v, out.length - v)).toBeUndefined(); // header checksum, lengths
    expect([ip.src, ip.dst, ip.ttl, ip.dontFrag]).toEqual([RESOLVER, APP, 64, true]);
    const udp = new UdpPacket();
    expect(udp.wrap(ip.buffer, ip.payloadOffset, ip.payloadLen)).toBeUndefined();
    expect(udp.verifyChecksum(ip.src, ip.dst)).toBe(true);
    expect([udp.srcPort, udp.dstPort]).toEqual([53, 40000]);
    const qq = new QueryQuestion();
    expect(readQueryQuestion(q, qq)).toBe(true);
    const expected = new Uint8Array(512);
    const n = writeAddressAnswer(q, qq.end, [FAKE], TTL, expected);
    expect(Buffer.from(udp.payload()).toString('hex')).toBe(Buffer.from(expected.subarray(0, n)).toString('hex'));
    expect(asked).toEqual([{ name: 'web.lab', queryBytes: q.length, answerBytes: n }]);
  });

  it('answers when the kernel left the UDP checksum partial, and when there is none', () => {
    const pkt = packet(query('web.lab'), { vnetFlags: VNET_F_NEEDS_CSUM });
    pkt.writeUInt16BE(0x1234, VNET_HDR_LEN + 26);
    expect(ask(pkt).out).not.toBeNull();
    const none = packet(query('web.lab'));
    none.writeUInt16BE(0, VNET_HDR_LEN + 26);
    expect(ask(none).out).not.toBeNull();
  });

  it('hands to JS, without asking decide(), what is not a plain A query', () => {
    const plain = packet(query('web.lab'));
    const cases: Array<[string, Buffer]> = [
      ['AAAA', packet(query('web.lab', DNS_TYPE_AAAA))],
      ['a response', packet(query('web.lab', DNS_TYPE_A, 0x8100))],
      ['another opcode', packet(query('web.lab', DNS_TYPE_A, 0x2100))],
      ['a name with a *', packet(query('*.lab'))],
      ['a label starting with -', packet(query('-web.lab'))],
      ['a label ending with -', packet(query('web-.lab'))],
      ['the root', packet(query('.'))],
      ['another port', packet(query('web.lab'), { dstPort: 5353 })],
      ['UDP segmentation offload', packet(query('web.lab'), { gso: VNET_GSO_UDP_L4 })],
      ['cut short', plain.subarray(0, plain.length - 3)],
    ];
    const mutate = (f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(plain);
      f(b);
      return b;
    };
    cases.push(['a bad IPv4 checksum', mutate((b) => (b[VNET_HDR_LEN + 10] ^= 1))]);
    cases.push(['a bad UDP checksum', mutate((b) => (b[VNET_HDR_LEN + 26] ^= 1))]);
    cases.push(['a fragment', mutate((b) => (b[VNET_HDR_LEN + 6] |= 0x20))]);
    cases.push(['IPv4 options', mutate((b) => (b[VNET_HDR_LEN] = 0x46))]);
    cases.push(['two questions', mutate((b) => (b[VNET_HDR_LEN + 28 + 5] = 2))]);
    for (const [what, pkt] of cases) {
      const { out, asked } = ask(pkt);
      expect(out, what).toBeNull();
      expect(asked, what).toEqual([]);
    }
    // And a name decide() leaves alone (0) is not answered either.
    const { out, asked } = ask(plain, VNET_HDR_LEN, 0);
    expect(out).toBeNull();
    expect(asked).toHaveLength(1);
  });

  it('takes any bytes: 50,000 damaged queries never break it, and what it answers is a plain name', () => {
    const rand = mulberry32(11);
    const base = packet(query('www.example.corp-1.test'));
    let answered = 0;
    for (let i = 0; i < 50_000; i++) {
      const b = Buffer.from(base.subarray(0, rand() < 0.2 ? Math.floor(rand() * base.length) : base.length));
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips && b.length > 0; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
      const { out, asked } = ask(b);
      for (const a of asked) expect(a.name).toMatch(/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/);
      if (out !== null) {
        answered++;
        const ip = new Ipv4Packet();
        expect(ip.wrap(out, VNET_HDR_LEN, out.length - VNET_HDR_LEN)).toBeUndefined();
      }
    }
    // Damage in the DNS payload mostly keeps a valid checksum out of reach: few are answered.
    expect(answered).toBeLessThan(50_000);
  });
});
