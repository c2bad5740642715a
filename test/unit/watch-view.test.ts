/**
 * `status --watch`'s screen (issue 15, item 4) from fixed snapshots: rates from two successive
 * snapshots, busiest flows first, drops with what they grew by, and a screen that fits the
 * terminal at every size (columns dropped, lines cut, rows counted).
 */
import { describe, expect, it } from 'vitest';
import { busiestFlows, renderWatch } from '../../src/control/watch-view.js';
import type { StatusSnapshot } from '../../src/control/protocol.js';
import { newOutboundStats } from '../../src/outbound/outbound.js';
import type { TcpFlowInfo } from '../../src/relay/tcp-relay.js';
import { newDropCounters } from '../../src/wire/drop.js';

function flow(id: number, bytesUp: number, bytesDown: number, ageMs: number, dst = `93.184.216.${id}:443`): TcpFlowInfo {
  return { id, src: `198.18.0.1:${40000 + id}`, dst, outbound: 'proxy', state: 'ESTABLISHED', bytesUp, bytesDown, ageMs };
}

/** The daemon at uptime `t` ms, after `k` seconds of a steady download on flow 12. */
function snapshot(t: number, k: number): StatusSnapshot {
  const drops = newDropCounters();
  drops.ipv6 = 10 + 2 * k;
  const proxy = newOutboundStats();
  proxy.tcpAttempts = 57 + k;
  proxy.tcpEstablished = 54 + k;
  proxy.tcpFailures.timeout = 2;
  return {
    version: '0.1.0',
    pid: 4242,
    startedAt: '2024-05-01T10:00:00.000Z',
    uptimeMs: t,
    device: { name: 'tun0', mtu: 1500, address: '198.18.0.1/15' },
    routes: 3,
    link: { rxPackets: 10_000 + 800 * k, rxBytes: 4_000_000 + 100_000 * k, txPackets: 11_000 + 3_200 * k, txBytes: 3_000_000 + 4_718_592 * k, txErrors: 0 },
    packets: { rxPackets: 10_000, tcpPackets: 10_000, udpPackets: 0, icmpEchoReplied: 3, icmpEchoDropped: 0, fragments: 0, dropped: drops.ipv6, drops },
    tcp: { flowsOpen: 3, flowsTotal: 57 + k, refusedLimit: 0, refusedMemory: 0, refusedFds: 0, refusedUid: 0, refusedNoName: 0, upstreamErrors: { ...newOutboundStats().tcpFailures, timeout: 2 }, bytesUp: 0, bytesDown: 0 },
    outbounds: { proxy, block: newOutboundStats() },
    flows: [flow(7, 300, 900, 4_000 + t), flow(12, 1_000 * k, 47_000_000 + 4_718_592 * k, 123_000 + t), flow(9, 5_000, 9_000_000, 800 + t)],
    udp: { flowsOpen: 1, flowsTotal: 4, datagramsUp: 8, datagramsDown: 8, bytesUp: 500, bytesDown: 900, dropped: 0, dnsQueries: 0, dnsAnswered: 0, dnsFailed: 0 },
    udpFlows: [{ ...flow(3, 200 + 1024 * k, 300, 9_000 + t, '1.1.1.1:53'), idleMs: 10 }],
  };
}

const A = snapshot(60_000, 0);
const B = snapshot(62_000, 2); // two seconds later

const width = (l: string): number => [...l].length;

describe('renderWatch', () => {
  it('shows rates over the interval, totals, drops with their growth, and the busiest flows first', () => {
    expect(renderWatch(B, A, { width: 100, height: 16, clock: '12:00:01' })).toEqual([
      'tunroute 0.1.0  pid 4242  up 1m 02s  tun0 198.18.0.1/15  mtu 1500  routes 3',
      'rate      up 97.7 KiB/s  800 pkt/s     down 4.5 MiB/s  3,200 pkt/s',
      'total     up 4.0 MiB  11,600 pkt     down 11.9 MiB  17,400 pkt',
      'flows     tcp 3 open / 59 total  udp 1 open / 4 total  new 1/s',
      'drops     ipv6 14 (+4)',
      'upstream  timeout 2',
      'outbound  proxy  attempts 59  established 56  failed: timeout 2',
      '',
      'PROTO  SOURCE            DESTINATION        OUTBOUND       UP/s     DOWN/s     TOTAL     AGE',
      'tcp    198.18.0.1:40012  93.184.216.12:443  proxy      1000 B/s  4.5 MiB/s  53.8 MiB  3m 05s',
      'udp    198.18.0.1:40003  1.1.1.1:53         proxy     1.0 KiB/s      0 B/s   2.5 KiB  1m 11s',
      'tcp    198.18.0.1:40009  93.184.216.9:443   proxy         0 B/s      0 B/s   8.6 MiB  1m 02s',
      'tcp    198.18.0.1:40007  93.184.216.7:443   proxy         0 B/s      0 B/s   1.2 KiB  1m 06s',
      '',
      '',
      'q quit  ·  every 1s  ·  4 flows  ·  12:00:01',
    ]);
  });

  it('has no rates for the first snapshot, nor across a restart of the daemon', () => {
    for (const prev of [undefined, { ...A, pid: 1 }]) {
      const lines = renderWatch(B, prev, { width: 100, height: 16 });
      expect(lines[1]).toBe('rate      up –  – pkt/s     down –  – pkt/s');
      expect(lines[9]).toMatch(/^tcp .* –\s+–\s+53\.8 MiB/);
    }
  });

  it('fits a narrow terminal: the least useful columns go first, then lines are cut', () => {
    const lines = renderWatch(B, A, { width: 50, height: 16 });
    for (const l of lines) expect(width(l)).toBeLessThanOrEqual(50);
    const header = lines.find((l) => l.startsWith('PROTO') || l.startsWith('DESTINATION'));
    expect(header).toBeDefined();
    expect(header).not.toContain('SOURCE');
    expect(header).not.toContain('AGE');
    expect(header).toContain('DOWN/s');
    expect(lines[0]).toMatch(/…$/);
    // Very narrow: still one column per cell, nothing wider than the terminal.
    for (const l of renderWatch(B, A, { width: 20, height: 16 })) expect(width(l)).toBeLessThanOrEqual(20);
  });

  it('fills the height exactly and says how many flows did not fit', () => {
    const lines = renderWatch(B, A, { width: 100, height: 12 });
    expect(lines).toHaveLength(12);
    expect(lines[8]).toMatch(/^PROTO/);
    expect(lines[9]).toMatch(/^tcp .*93\.184\.216\.12:443/);
    expect(lines[10]).toBe('… and 3 more');
    expect(lines[11]).toMatch(/^q quit/);
    expect(renderWatch(B, A, { width: 100, height: 3 })).toHaveLength(3);
  });

  it('keeps the last snapshot on screen and shows why the next one failed', () => {
    const lines = renderWatch(B, A, { width: 100, height: 16, error: 'No tunroute is running with control socket /x.sock: start one.', color: true });
    expect(lines[15]).toBe('\x1b[31mNo tunroute is running with control socket /x.sock: start one.  ·  q quit\x1b[0m');
    expect(lines[0].startsWith('\x1b[1mtunroute 0.1.0')).toBe(true);
    expect(lines[8].startsWith('\x1b[7mPROTO')).toBe(true);
  });

  it('never passes a control character from the daemon to the terminal', () => {
    const evil = { ...B, flows: [flow(1, 1, 1, 1, 'x\x1b]0;pwned\x07.example:443')], udpFlows: [] };
    const lines = renderWatch(evil, undefined, { width: 100, height: 16 });
    expect(lines.join('\n')).toContain('x\\x1b]0;pwned\\x07.example:443');
    expect(lines.join('').includes('\x1b')).toBe(false);
  });

  it('shows each WireGuard tunnel with its rates and drops, and its peers', () => {
    const tunnel = (k: number): NonNullable<StatusSnapshot['tunnels']>[number] => ({
      name: 'wg0',
      listenPort: 51820,
      mtu: 1420,
      txPackets: 100 * k,
      txBytes: 2048 * k,
      rxPackets: 200 * k,
      rxBytes: 4096 * k,
      drops: k === 0 ? {} : { replayed: 3 * k },
      peers: [{ publicKey: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=', allowedIPs: ['10.9.0.0/16'], endpoint: '203.0.113.1:51820', lastHandshakeAgoMs: 12_000, rxBytes: 4096 * k, txBytes: 2048 * k, drops: {} }],
    });
    const lines = renderWatch({ ...B, tunnels: [tunnel(2)] }, { ...A, tunnels: [tunnel(0)] }, { width: 120, height: 20 });
    expect(lines).toContain('tunnel    wg0  up 2.0 KiB/s  down 4.0 KiB/s  drops replayed 6 (+6)');
    expect(lines).toContain('  peer    xTIBA5rb…  203.0.113.1:51820  handshake 12s ago  rx 8.0 KiB  tx 4.0 KiB');
  });

  it('says so when there are no flows', () => {
    const lines = renderWatch({ ...B, flows: [], udpFlows: [] }, A, { width: 100, height: 16 });
    expect(lines).toContain('no flows');
    expect(lines[15]).toBe('q quit  ·  every 1s  ·  0 flows');
  });
});

describe('busiestFlows', () => {
  it('orders by current rate, then bytes so far; a flow born in the interval counts all its bytes', () => {
    const born = { ...B, flows: [...B.flows, flow(99, 0, 10_000_000, 500)] };
    expect(busiestFlows(born, A).map((f) => `${f.proto}${f.id}`)).toEqual(['tcp99', 'tcp12', 'udp3', 'tcp9', 'tcp7']);
    expect(busiestFlows(born, A)[0].downRate).toBe(5_000_000);
  });
});
