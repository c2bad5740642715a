import { describe, expect, it } from 'vitest';
import { formatBytes, formatCount, formatDuration, formatFlowTable, formatStatus } from '../../src/control/format.js';
import type { StatusSnapshot } from '../../src/control/protocol.js';
import { newOutboundStats } from '../../src/outbound/outbound.js';
import type { TcpFlowInfo } from '../../src/relay/tcp-relay.js';
import { newDropCounters } from '../../src/wire/drop.js';

function flow(id: number, bytesUp: number, bytesDown: number, ageMs: number, state = 'ESTABLISHED'): TcpFlowInfo {
  return { id, src: `198.18.0.1:${40000 + id}`, dst: `93.184.216.${id}:443`, outbound: 'proxy', state, bytesUp, bytesDown, ageMs };
}

function snapshot(): StatusSnapshot {
  const drops = newDropCounters();
  drops.ipv6 = 12;
  drops.bad_tcp_checksum = 1;
  const proxy = newOutboundStats();
  proxy.tcpAttempts = 57;
  proxy.tcpEstablished = 54;
  proxy.tcpFailures.timeout = 2;
  proxy.tcpFailures.refused = 1;
  const tcp: StatusSnapshot['tcp'] = {
    flowsOpen: 3,
    flowsTotal: 57,
    refusedLimit: 0,
    refusedMemory: 0,
    refusedFds: 0,
    refusedUid: 0,
    refusedNoName: 0,
    upstreamErrors: { ...newOutboundStats().tcpFailures, timeout: 2, refused: 1 },
    bytesUp: 1_258_291,
    bytesDown: 47_815_065,
  };
  return {
    version: '0.1.0',
    pid: 4242,
    startedAt: '2024-05-01T10:00:00.000Z',
    uptimeMs: 7_384_000,
    device: { name: 'tun0', mtu: 1500, address: '198.18.0.1/15' },
    routes: 3,
    link: { rxPackets: 12_345, rxBytes: 4_718_592, txPackets: 11_002, txBytes: 3_355_443, txErrors: 0 },
    packets: { rxPackets: 12_345, tcpPackets: 12_000, udpPackets: 0, icmpEchoReplied: 3, icmpEchoDropped: 0, fragments: 0, dropped: 13, drops },
    tcp,
    outbounds: { proxy, block: newOutboundStats() },
    flows: [flow(7, 300, 900, 4_000, 'FIN-WAIT-1'), flow(12, 1_258_000, 47_000_000, 123_000), flow(9, 0, 0, 800, 'SYN-RECEIVED')],
  };
}

describe('formatStatus', () => {
  it('prints header, totals with only the non-zero reasons, and flows by bytes', () => {
    expect(formatStatus(snapshot())).toBe(
      [
        'tunroute 0.1.0  pid 4242  up 2h 03m  since 2024-05-01T10:00:00.000Z',
        'device    tun0  198.18.0.1/15  mtu 1500  routes 3',
        'packets   in 12,345 (4.5 MiB)  out 11,002 (3.2 MiB)  tcp 12,000  udp 0  icmp echo 3',
        'drops     bad_tcp_checksum 1  ipv6 12',
        'tcp       3 open / 57 total  up 1.2 MiB  down 45.6 MiB',
        'upstream  refused 1  timeout 2',
        'outbound  block  attempts 0  established 0',
        'outbound  proxy  attempts 57  established 54  failed: refused 1  timeout 2',
        '',
        'ID  SOURCE            DESTINATION        OUTBOUND  STATE              UP      DOWN     AGE',
        '12  198.18.0.1:40012  93.184.216.12:443  proxy     ESTABLISHED   1.2 MiB  44.8 MiB  2m 03s',
        ' 7  198.18.0.1:40007  93.184.216.7:443   proxy     FIN-WAIT-1      300 B     900 B      4s',
        ' 9  198.18.0.1:40009  93.184.216.9:443   proxy     SYN-RECEIVED      0 B       0 B   800ms',
      ].join('\n'),
    );
  });

  it('says "none" when nothing was dropped or failed, and "no flows" when idle', () => {
    const s = snapshot();
    s.packets.drops = newDropCounters();
    s.tcp.upstreamErrors = newOutboundStats().tcpFailures;
    s.outbounds = {};
    s.flows = [];
    const text = formatStatus(s).split('\n');
    expect(text).toContain('drops     none');
    expect(text).toContain('upstream  no errors');
    expect(text.at(-1)).toBe('no flows');
  });

  it('shows tx errors, echo drops and flow-limit refusals only when non-zero', () => {
    const s = snapshot();
    s.link.txErrors = 4;
    s.packets.icmpEchoDropped = 2;
    s.tcp.refusedLimit = 1_500;
    const text = formatStatus(s);
    expect(text).toContain('icmp echo 3  icmp echo dropped 2  tx errors 4\n');
    expect(text).toContain('tcp       3 open / 57 total  up 1.2 MiB  down 45.6 MiB  refused at flow limit 1,500\n');
  });

  it('shows the limit refusals and the buffer budget when the daemon reports them', () => {
    const s = snapshot();
    s.tcp.refusedMemory = 2;
    s.tcp.refusedFds = 3;
    s.tcp.refusedUid = 4;
    s.tcp.memory = { budgetBytes: 256 * 1024 * 1024, floorBytes: 4096, heldBytes: 3 * 1024 * 1024, peakHeldBytes: 12 * 1024 * 1024, committedBytes: 0, overBudgetBytes: 0, refusedFlows: 2, shortGrants: 9 };
    const text = formatStatus(s);
    expect(text).toContain('refused: buffer budget full 2  refused: no file descriptor 3  refused: user\'s share used up 4\n');
    expect(text).toMatch(/buffers +3\.0 MiB held of 256(\.0)? MiB \(peak 12(\.0)? MiB, floor 4(\.0)? KiB per direction\)/);
  });

  it('shows UDP totals and UDP flows when the daemon reports them', () => {
    const s = snapshot();
    s.udp = { flowsOpen: 1, flowsTotal: 9, datagramsUp: 4, datagramsDown: 4, bytesUp: 2048, bytesDown: 4096, dropped: 0, dnsQueries: 3, dnsAnswered: 3, dnsFailed: 0 };
    s.udpFlows = [{ id: 7, src: '198.18.0.1:5353', dst: '10.66.1.53:53', outbound: 'dns', state: 'open', bytesUp: 60, bytesDown: 120, ageMs: 1500, idleMs: 200 }];
    const text = formatStatus(s);
    expect(text).toContain('1 open / 9 total  up 2.0 KiB  down 4.0 KiB  dns 3/3 answered');
    expect(text).toMatch(/udp flows:\nID +SOURCE +DESTINATION[^\n]*\n +7 +198\.18\.0\.1:5353 +10\.66\.1\.53:53 +dns +open/);
    expect(formatStatus(snapshot())).not.toContain('udp flows:');
  });

  it('lists WireGuard tunnels and their peers, like wg show, with only non-zero drops', () => {
    const s = snapshot();
    s.tunnels = [
      {
        name: 'wg0',
        listenPort: 51820,
        mtu: 1420,
        txPackets: 1200,
        txBytes: 3 * 1024 * 1024,
        rxPackets: 900,
        rxBytes: 1024,
        drops: { udp_send: 2 },
        peers: [{ publicKey: 'PEERKEY=', allowedIPs: ['10.8.0.0/16'], endpoint: '192.0.2.1:51820', lastHandshakeAgoMs: 4000, rxBytes: 4096, txBytes: 8192, drops: {} }],
      },
    ];
    const text = formatStatus(s);
    expect(text).toContain('wg0  listen 51820  mtu 1420  out 1,200 (3.0 MiB)  in 900 (1.0 KiB)');
    expect(text).toMatch(/drops +udp_send 2\n/);
    expect(text).toMatch(/peer +PEERKEY= {2}10\.8\.0\.0\/16 {2}192\.0\.2\.1:51820 {2}handshake 4s ago {2}rx 4\.0 KiB {2}tx 8\.0 KiB\n/);
    expect(formatStatus(snapshot())).not.toContain('tunnel');
  });

  it('lists the last network events, time of day first, at most eight', () => {
    const s = snapshot();
    s.network = Array.from({ length: 10 }, (_, i) => ({ at: `2026-12-02T01:0${i}:00.000Z`, kind: i === 9 ? 'upstream' : 'link-down', ...(i === 9 ? {} : { dev: 'wlan0' }), detail: i === 9 ? 'proxy is now 10.0.0.9' : 'down' }));
    const lines = formatStatus(s).split('\n').filter((l) => l.startsWith('network'));
    expect(lines).toHaveLength(8);
    expect(lines[0]).toBe('network   01:02:00  link-down wlan0  down');
    expect(lines[7]).toBe('network   01:09:00  upstream  proxy is now 10.0.0.9');
  });

  it('keeps reasons a newer daemon counts', () => {
    const s = snapshot();
    (s.packets.drops as Record<string, number>).udp_fragment = 5;
    expect(formatStatus(s)).toContain('drops     bad_tcp_checksum 1  ipv6 12  udp_fragment 5\n');
  });

  it('is the same text for the same snapshot', () => {
    expect(formatStatus(snapshot())).toBe(formatStatus(structuredClone(snapshot())));
  });
});

describe('formatFlowTable', () => {
  it('prints at most maxFlows rows, busiest first, then how many more', () => {
    const flows = Array.from({ length: 25 }, (_, i) => flow(i + 1, i * 1000, 0, 1000));
    const text = formatFlowTable(flows, { maxFlows: 2 }).split('\n');
    expect(text).toEqual([
      'ID  SOURCE            DESTINATION        OUTBOUND  STATE              UP  DOWN  AGE',
      '25  198.18.0.1:40025  93.184.216.25:443  proxy     ESTABLISHED  23.4 KiB   0 B   1s',
      '24  198.18.0.1:40024  93.184.216.24:443  proxy     ESTABLISHED  22.5 KiB   0 B   1s',
      '… and 23 more',
    ]);
  });

  it('breaks ties in bytes by id, oldest first', () => {
    const text = formatFlowTable([flow(3, 10, 0, 0), flow(1, 5, 5, 0), flow(2, 0, 10, 0)]);
    expect(text.split('\n').slice(1).map((l) => l.trim().split(' ')[0])).toEqual(['1', '2', '3']);
  });
});

describe('units', () => {
  it('formats bytes in binary units with one decimal', () => {
    expect([0, 1023, 1024, 1536, 1048575, 1048576, 5 * 2 ** 30, 3 * 2 ** 40].map(formatBytes)).toEqual([
      '0 B',
      '1023 B',
      '1.0 KiB',
      '1.5 KiB',
      '1.0 MiB',
      '1.0 MiB',
      '5.0 GiB',
      '3.0 TiB',
    ]);
  });

  it('formats durations from milliseconds to days', () => {
    expect([0, 999, 1000, 59_999, 60_000, 123_000, 3_600_000, 7_384_000, 86_400_000, 273_600_000].map(formatDuration)).toEqual([
      '0ms',
      '999ms',
      '1s',
      '59s',
      '1m 00s',
      '2m 03s',
      '1h 00m',
      '2h 03m',
      '1d 00h',
      '3d 04h',
    ]);
  });

  it('groups thousands the same in every locale', () => {
    expect([0, 999, 1000, 1234567, -1234].map(formatCount)).toEqual(['0', '999', '1,000', '1,234,567', '-1,234']);
  });
});
