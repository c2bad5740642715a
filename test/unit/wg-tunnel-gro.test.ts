/**
 * Receive coalescing into a vnet device: consecutive segments of a flow become one super-packet
 * that the kernel's own segmentation (here: offload.ts, which does the same cut) turns back
 * into the very same segments; anything that differs keeps segments apart, and order within a
 * flow is kept.
 */
import { describe, expect, it } from 'vitest';
import { TcpCoalescer } from '../../src/wireguard/gro.js';
import { splitTcpV4 } from '../../src/wireguard/offload.js';
import { getU16, sum16 } from '../../src/wire/checksum.js';
import { emitTcpIpv4, TCP_ACK, TCP_FIN, TCP_PSH } from '../../src/wire/tcp.js';
import { emitUdpIpv4 } from '../../src/wire/udp.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_HDR_LEN, vnetGsoSize, vnetGsoType } from '../../src/wire/virtio-net.js';
import { icmpEcho } from './wg-harness.js';
import { C_ADDR, DEV, makeTunnelPair, S_ADDR, sendThrough, wrapped } from './wg-tunnel-harness.js';

interface Seg {
  seq: number;
  len: number;
  flags?: number;
  ack?: number;
  ts?: number;
  id?: number;
  srcPort?: number;
}

function seg(s: Seg): Uint8Array {
  const payload = new Uint8Array(s.len);
  for (let i = 0; i < s.len; i++) payload[i] = (s.seq + i) & 0xff;
  const buf = new Uint8Array(80 + s.len);
  const n = emitTcpIpv4(
    { srcPort: s.srcPort ?? 80, dstPort: 40000, seq: s.seq, ack: s.ack ?? 777, flags: s.flags ?? TCP_ACK, window: 500, options: { timestamp: [s.ts ?? 1000, 55] }, payload },
    buf,
    0,
    S_ADDR,
    DEV,
    64,
    s.id ?? 0,
  );
  return buf.slice(0, n);
}

function run(packets: Uint8Array[]): Uint8Array[] {
  const frames: Uint8Array[] = [];
  const c = new TcpCoalescer((f) => (frames.push(f.slice()), true));
  expect(c.write(packets)).toBe(0);
  return frames;
}

describe('TcpCoalescer', () => {
  it('merges consecutive segments into one super-packet that segments back into the same bytes', () => {
    const segs = [seg({ seq: 1000, len: 1368, id: 5 }), seg({ seq: 2368, len: 1368, id: 6 }), seg({ seq: 3736, len: 400, id: 7, flags: TCP_ACK | TCP_PSH })];
    const [frame, ...rest] = run(segs);
    expect(rest).toEqual([]);
    expect([frame[0], vnetGsoType(frame, 0), vnetGsoSize(frame, 0)]).toEqual([VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 1368]);
    const ip = wrapped(frame.subarray(VNET_HDR_LEN));
    expect(ip.length).toBe(52 + 1368 * 2 + 400);
    expect(ip.verifyChecksum()).toBe(true);
    // The kernel's cut (offload.ts does the same) gives back the original segments exactly.
    const back: Uint8Array[] = [];
    const scratch = new Uint8Array(70_000);
    expect(splitTcpV4(frame, VNET_HDR_LEN, ip.length, 1368, scratch, (p) => back.push(p.slice()))).toBeUndefined();
    expect(back).toEqual(segs);
  });

  it('the partial checksum is the pseudo-header sum, so the completed checksum is right', () => {
    const [frame] = run([seg({ seq: 1, len: 100 }), seg({ seq: 101, len: 100 })]);
    const p = frame.subarray(VNET_HDR_LEN);
    const tcpLen = p.length - 20;
    const completed = ~sum16(p, 20, tcpLen) & 0xffff;
    const q = p.slice();
    q[36] = completed >>> 8;
    q[37] = completed & 0xff;
    const pseudo = [...q.subarray(12, 20)];
    const ph = ((pseudo[0] << 8) | pseudo[1]) + ((pseudo[2] << 8) | pseudo[3]) + ((pseudo[4] << 8) | pseudo[5]) + ((pseudo[6] << 8) | pseudo[7]) + 6 + tcpLen;
    expect(sum16(q, 20, tcpLen, ph)).toBe(0xffff);
  });

  it('keeps apart what differs: a gap, another ack, other options, PSH or a short segment in the middle', () => {
    const count = (ps: Uint8Array[]): number[] => run(ps).map((f) => (vnetGsoType(f, 0) === VNET_GSO_NONE ? 1 : getU16(f, VNET_HDR_LEN + 2)));
    expect(count([seg({ seq: 1, len: 100 }), seg({ seq: 201, len: 100 })])).toEqual([1, 1]); // gap
    expect(count([seg({ seq: 1, len: 100 }), seg({ seq: 101, len: 100, ack: 9 })])).toEqual([1, 1]);
    expect(count([seg({ seq: 1, len: 100 }), seg({ seq: 101, len: 100, ts: 1001 })])).toEqual([1, 1]);
    expect(count([seg({ seq: 1, len: 100, flags: TCP_ACK | TCP_PSH }), seg({ seq: 101, len: 100 })])).toEqual([1, 1]);
    expect(count([seg({ seq: 1, len: 100 }), seg({ seq: 101, len: 50 }), seg({ seq: 151, len: 50 })])).toEqual([52 + 150, 1]);
    expect(count([seg({ seq: 1, len: 100 }), seg({ seq: 101, len: 120 })])).toEqual([1, 1]); // longer than gso_size
  });

  it('keeps each flow in order: a FIN after data comes after the merged data; flows and UDP interleave freely', () => {
    const udp = new Uint8Array(40);
    emitUdpIpv4({ srcPort: 53, dstPort: 5353, payload: new Uint8Array(12) }, udp, 0, S_ADDR, DEV);
    const frames = run([
      seg({ seq: 1, len: 100 }),
      seg({ seq: 5000, len: 100, srcPort: 81 }),
      udp,
      seg({ seq: 101, len: 100 }),
      seg({ seq: 5100, len: 100, srcPort: 81 }),
      seg({ seq: 201, len: 0, flags: TCP_ACK | TCP_FIN }),
    ]);
    const what = frames.map((f) => {
      const p = wrapped(f.subarray(VNET_HDR_LEN));
      return p.protocol === 17 ? 'udp' : `${getU16(f, VNET_HDR_LEN + 20)}:${p.length}:${f[VNET_HDR_LEN + 33]}`;
    });
    expect(what).toEqual(['udp', '80:252:16', `80:52:${TCP_ACK | TCP_FIN}`, '81:252:16']);
  });
});

describe('coalescing in the tunnel', () => {
  it('segments the peer sent in one burst reach a vnet device as one super-packet', () => {
    const t = makeTunnelPair({ vnet: true });
    sendThrough(t.client, icmpEcho(DEV, S_ADDR, 1)); // starts the session
    t.net.pump();
    t.serverLink.take();
    for (let i = 0; i < 4; i++) {
      const p = new Uint8Array(1500);
      const n = emitTcpIpv4({ srcPort: 80, dstPort: 40000, seq: 1 + i * 1368, ack: 9, flags: TCP_ACK, window: 500, options: { timestamp: [1, 2] }, payload: new Uint8Array(1368).fill(i) }, p, 0, S_ADDR, C_ADDR);
      sendThrough(t.server, p.subarray(0, n));
    }
    t.net.pump();
    expect(t.clientLink.sent.length).toBe(1);
    expect(vnetGsoType(t.clientLink.headers[0], 0)).toBe(VNET_GSO_TCPV4);
    const ip = wrapped(t.clientLink.sent[0]);
    expect([ip.dst, ip.length]).toEqual([DEV, 52 + 4 * 1368]);
    expect(t.client.stats().gro).toEqual({ frames: 1, packets: 4, superPackets: 1 });
  });
});
