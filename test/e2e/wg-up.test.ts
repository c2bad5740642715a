/**
 * `tunroute up --tunnel wg.conf` against a real WireGuard peer (Debian's wireguard-go), in a
 * lab this file creates and removes:
 *
 *   ns c: tunroute up --tunnel wg.conf                 ns s: wireguard-go trs… 10.8.0.1/16, UDP :51820
 *         tun0 ← 10.8.0.0/16 (AllowedIPs)                    HTTP :8080, iperf3 :5201, dnsmasq on 10.8.0.1
 *         (with --proxy: also 10.66.1.0/24 → dante)          dante 10.99.0.2:1080, 10.66.1.7 on lo
 *   10.99.0.1 ──────────────────── veth ─────────────────── 10.99.0.2
 *
 * Ping, 100 MB over HTTP with its sha256, iperf3 both ways (printed, with wireguard-go ↔
 * wireguard-go over the same veth for comparison), UDP (DNS and an iperf3 -u run), a wrong key
 * (nothing passes, nothing crashes), and one `up` with both --proxy and --tunnel.
 */
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labBytesSha256, startDante, startDnsmasq, startHttpServer, startIperf3, startWireguardGo, type Namespace } from '../../tools/lab/index.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { e2eAvailable, finalCounters, logLines, routingSnapshot, startTunrouteIn } from '../helpers/e2e.js';

const haveWg = existsSync('/usr/bin/wireguard-go') && existsSync('/usr/bin/wg');
if (!haveWg) console.log('[e2e/wg-up] SKIPPED: apt-get install wireguard-go wireguard-tools');
const run = e2eAvailable('tunroute up --tunnel') && haveWg;

const S_VETH = '10.99.0.2';
const C_VETH = '10.99.0.1';
const S_TUN = '10.8.0.1';
const C_TUN = '10.8.0.2';
const PROXIED = '10.66.1.7';

interface Iperf3Result {
  end: {
    sum_received?: { bits_per_second: number; bytes: number };
    sum?: { bits_per_second: number; lost_percent: number; lost_packets: number; packets: number };
  };
}

async function iperf3(ns: Namespace, args: string[]): Promise<Iperf3Result> {
  const r = await ns.exec(['iperf3', '-J', ...args], { timeoutMs: 60_000, allowFail: true });
  if (r.code !== 0) throw new Error(`iperf3 ${args.join(' ')} failed (${r.code}): ${r.stdout.slice(-1500)} ${r.stderr.slice(-500)}`);
  return JSON.parse(r.stdout) as Iperf3Result;
}

const mbit = (bps: number): number => Math.round(bps / 1e5) / 10;

describe.skipIf(!run)('tunroute up --tunnel with wireguard-go (lab)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let sIf: string;
  const sKey = generatePrivateKey();
  const cKey = generatePrivateKey();
  const figures: Record<string, number> = {};

  function wgConf(name: string, opts: { serverKey?: Uint8Array; keepalive?: boolean; endpoint?: string } = {}): string {
    const file = join(lab.tmpDir, `${name}.conf`);
    writeFileSync(
      file,
      [
        '# written by test/e2e/wg-up.test.ts',
        '[Interface]',
        `PrivateKey = ${formatKey(cKey)}`,
        `Address = ${C_TUN}/16`,
        '',
        '[Peer]',
        `PublicKey = ${formatKey(publicKeyOf(opts.serverKey ?? sKey))}`,
        `Endpoint = ${opts.endpoint ?? S_VETH}:51820`,
        'AllowedIPs = 10.8.0.0/16, fd00:8::/64',
        ...(opts.keepalive === false ? [] : ['PersistentKeepalive = 25']),
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    return file;
  }

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    await lab.link(c, s, { cidrA: `${C_VETH}/24`, cidrB: `${S_VETH}/24` });
    await s.exec(['ip', 'addr', 'add', `${PROXIED}/32`, 'dev', 'lo']);
    sIf = `trs${lab.id.slice(-4)}`;
    await startWireguardGo(s, sIf, { privateKey: sKey, listenPort: 51820, address: `${S_TUN}/16`, peers: [{ publicKey: publicKeyOf(cKey), allowedIPs: `${C_TUN}/32` }] });
    await startHttpServer(s, { port: 8080 });
    await startIperf3(s, 5201);
    await startDnsmasq(s, { listen: S_TUN, records: { 'office.lab': '10.8.7.7' } });
    await startDante(s, { listen: S_VETH, port: 1080 });
  });

  afterAll(async () => {
    if (Object.keys(figures).length > 0) console.log(`[e2e/wg-up] throughput (Mbit/s): ${JSON.stringify(figures)}`);
    await lab?.destroy();
  });

  it('ping, 100 MB with a matching sha256, iperf3 both ways, UDP; the host is given back as it was', async () => {
    const before = await routingSnapshot(c);
    const up = await startTunrouteIn(c, ['--tunnel', wgConf('wg')]);
    try {
      expect((await c.exec(['ip', 'route'])).stdout).toContain('10.8.0.0/16 dev tun0');
      const warned = logLines(up).filter((l) => l.level === 40).map((l) => l.msg);
      expect(warned.join('\n')).toContain('IPv6 AllowedIPs fd00:8::/64 skipped');

      const ping = await c.exec(['ping', '-c', '5', '-i', '0.2', '-W', '3', S_TUN], { allowFail: true });
      expect(ping.stdout, ping.stdout + ping.stderr).toContain('5 packets transmitted, 5 received');
      const hs = await s.exec(['wg', 'show', sIf, 'latest-handshakes']);
      expect(Number(hs.stdout.trim().split(/\s+/)[1])).toBeGreaterThan(0);
      // The peer sees our tunnel address, not the device's.
      expect((await c.exec(['curl', '-sS', '--max-time', '10', `http://${S_TUN}:8080/ip`])).stdout.trim()).toBe(C_TUN);

      const size = 100 * 1024 * 1024;
      const t0 = performance.now();
      const get = await c.sh(`curl -sS --max-time 120 http://${S_TUN}:8080/bytes/${size} | sha256sum`, { timeoutMs: 130_000 });
      const secs = (performance.now() - t0) / 1000;
      expect(get.stdout.split(' ')[0]).toBe(labBytesSha256(size));
      figures.curl100MB = Math.round((size * 8) / secs / 1e5) / 10;

      const upload = await iperf3(c, ['-c', S_TUN, '-t', '5']);
      const download = await iperf3(c, ['-c', S_TUN, '-t', '5', '-R']);
      figures.tunrouteUpload = mbit(upload.end.sum_received!.bits_per_second);
      figures.tunrouteDownload = mbit(download.end.sum_received!.bits_per_second);
      expect(upload.end.sum_received!.bytes).toBeGreaterThan(1e6);
      expect(download.end.sum_received!.bytes).toBeGreaterThan(1e6);

      // UDP: a DNS answer from the tunnel's side, and a short iperf3 -u run.
      const dig = await c.exec(['dig', '+short', '+time=3', '+tries=2', `@${S_TUN}`, 'office.lab'], { allowFail: true });
      expect(dig.stdout.trim(), dig.stderr).toBe('10.8.7.7');
      // (At higher rates the receiving iperf3, not the tunnel, starts to drop on this busy box.)
      const udp = await iperf3(c, ['-c', S_TUN, '-u', '-b', '20M', '-t', '3']);
      expect(udp.end.sum!.packets).toBeGreaterThan(1000);
      expect(udp.end.sum!.lost_percent).toBeLessThan(5);
      figures.udp20M_lostPercent = Math.round(udp.end.sum!.lost_percent * 100) / 100;
    } finally {
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    const counters = finalCounters(up) as unknown as { tunnels: Record<string, { txPackets: number; rxPackets: number; peers: Array<{ counters: { handshakesCompleted: number } }>; peerDropped: Record<string, number> }> };
    const wg = counters.tunnels.wg;
    expect(wg.peers[0].counters.handshakesCompleted).toBeGreaterThanOrEqual(1);
    expect(wg.rxPackets).toBeGreaterThan(50_000);
    expect(wg.peerDropped).toEqual({});
    expect(await routingSnapshot(c)).toBe(before);
  });

  it('wireguard-go ↔ wireguard-go over the same veth, for comparison (measured, not asserted)', async () => {
    const k1 = generatePrivateKey();
    const k2 = generatePrivateKey();
    const id = lab.id.slice(-4);
    await startWireguardGo(s, `trt${id}`, { privateKey: k1, listenPort: 51821, address: '10.9.0.1/16', peers: [{ publicKey: publicKeyOf(k2), allowedIPs: '10.9.0.2/32' }] });
    await startWireguardGo(c, `trc${id}`, { privateKey: k2, listenPort: 51822, address: '10.9.0.2/16', peers: [{ publicKey: publicKeyOf(k1), allowedIPs: '10.9.0.0/16', endpoint: `${S_VETH}:51821` }] });
    const ping = await c.exec(['ping', '-c', '2', '-i', '0.2', '-W', '3', '10.9.0.1'], { allowFail: true });
    expect(ping.code, ping.stdout).toBe(0);
    const upload = await iperf3(c, ['-c', '10.9.0.1', '-t', '5']);
    const download = await iperf3(c, ['-c', '10.9.0.1', '-t', '5', '-R']);
    figures.wgGoUpload = mbit(upload.end.sum_received!.bits_per_second);
    figures.wgGoDownload = mbit(download.end.sum_received!.bits_per_second);
    expect(upload.end.sum_received!.bytes).toBeGreaterThan(1e6);
  });

  it('a wrong server key lets nothing through and crashes nothing', async () => {
    const wrong = generatePrivateKey();
    const up = await startTunrouteIn(c, ['--tunnel', wgConf('wrong', { serverKey: wrong })], 'tunroute-wrong');
    try {
      const ping = await c.exec(['ping', '-c', '3', '-i', '0.3', '-W', '1', S_TUN], { allowFail: true });
      expect(ping.stdout).toContain('3 packets transmitted, 0 received');
      const curl = await c.exec(['curl', '-sS', '--max-time', '3', `http://${S_TUN}:8080/ip`], { allowFail: true });
      expect(curl.code).not.toBe(0);
      expect(up.exited).toBe(false);
    } finally {
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    const counters = finalCounters(up) as unknown as { tunnels: Record<string, { rxPackets: number; peers: Array<{ counters: { initiationsSent: number; handshakesCompleted: number } }> }> };
    const wg = counters.tunnels.wrong;
    expect(wg.rxPackets).toBe(0);
    expect(wg.peers[0].counters.initiationsSent).toBeGreaterThanOrEqual(1);
    expect(wg.peers[0].counters.handshakesCompleted).toBe(0);
  });

  it('an endpoint given by name is resolved again after a network change, and the tunnel follows it (issue 14)', async () => {
    const etc = lab.etcOverlayDir(c); // removed by lab.destroy()
    mkdirSync(etc, { recursive: true });
    const hosts = join(etc, 'hosts');
    // At first the name points where no peer answers (a network whose DNS told something else).
    writeFileSync(hosts, '127.0.0.1 localhost\n10.99.0.3 wg.lab\n');
    const up = await startTunrouteIn(c, ['--tunnel', wgConf('named', { endpoint: 'wg.lab' })], 'tunroute-named');
    const cIf = (await c.sh(`ip -o -4 addr show | awk '/ ${C_VETH}\\// {print $2}'`)).stdout.trim();
    try {
      const ping = await c.exec(['ping', '-c', '1', '-W', '1', S_TUN], { allowFail: true });
      expect(ping.code).not.toBe(0);
      writeFileSync(hosts, `127.0.0.1 localhost\n${S_VETH} wg.lab\n`);
      // A new address on the uplink (a new network): tunroute asks for the name again.
      await c.exec(['ip', 'addr', 'add', '10.99.0.5/24', 'dev', cIf]);
      await up.waitForLine(/its endpoint name now resolves to 10\.99\.0\.2:51820/, 15_000);
      const t0 = performance.now();
      for (let i = 0; i < 30; i++) {
        if ((await c.exec(['ping', '-c', '1', '-W', '1', S_TUN], { allowFail: true })).code === 0) break;
      }
      console.log(`[e2e/wg-up] tunnel working ${Math.round(performance.now() - t0)} ms after the endpoint was followed (the next handshake attempt; WireGuard retries every 5 s)`);
      expect((await c.exec(['ping', '-c', '1', '-W', '2', S_TUN], { allowFail: true })).code).toBe(0);
      expect((await c.exec(['ip', 'route', 'get', S_VETH])).stdout).not.toContain('tun0');
    } finally {
      await c.exec(['ip', 'addr', 'del', '10.99.0.5/24', 'dev', cIf], { allowFail: true });
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
  });

  it('one up with --proxy and --tunnel: 10.8.0.0/16 through the tunnel, 10.66.1.0/24 through SOCKS5', async () => {
    const up = await startTunrouteIn(c, ['--tunnel', wgConf('wg', { keepalive: false }), '--proxy', `socks5://${S_VETH}:1080`, '--route', '10.66.1.0/24']);
    try {
      const routes = (await c.exec(['ip', 'route'])).stdout;
      expect(routes).toContain('10.8.0.0/16 dev tun0');
      expect(routes).toContain('10.66.1.0/24 dev tun0');
      // The HTTP server reports who connected: the tunnel address through the tunnel,
      // dante's address through the proxy.
      expect((await c.exec(['curl', '-sS', '--max-time', '10', `http://${S_TUN}:8080/ip`])).stdout.trim()).toBe(C_TUN);
      expect((await c.exec(['curl', '-sS', '--max-time', '10', `http://${PROXIED}:8080/ip`])).stdout.trim()).toBe(S_VETH);
      const ping = await c.exec(['ping', '-c', '2', '-i', '0.2', '-W', '3', S_TUN], { allowFail: true });
      expect(ping.stdout).toContain('2 packets transmitted, 2 received');
      const size = 10 * 1024 * 1024;
      const a = await c.sh(`curl -sS --max-time 60 http://${S_TUN}:8080/bytes/${size} | sha256sum`, { timeoutMs: 70_000 });
      const b = await c.sh(`curl -sS --max-time 60 http://${PROXIED}:8080/bytes/${size} | sha256sum`, { timeoutMs: 70_000 });
      expect(a.stdout.split(' ')[0]).toBe(labBytesSha256(size));
      expect(b.stdout.split(' ')[0]).toBe(labBytesSha256(size));
    } finally {
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    const counters = finalCounters(up) as unknown as { tcp: { flowsTotal: number }; tunnels: Record<string, { txPackets: number }> };
    // Only the flows to 10.66.1.7 were terminated; the tunnel's TCP passed through whole.
    expect(counters.tcp.flowsTotal).toBe(2);
    expect(counters.tunnels.wg.txPackets).toBeGreaterThan(100);
  });

  it('a full tunnel (--proxy, no --route) with --tunnel: AllowedIPs through the tunnel, the rest through SOCKS5, the endpoint direct', async () => {
    const before = await routingSnapshot(c);
    const up = await startTunrouteIn(c, ['--tunnel', wgConf('wg'), '--proxy', `socks5://${S_VETH}:1080`]);
    try {
      // The endpoint (and the proxy, the same address here) stay in the main table.
      expect((await c.exec(['ip', 'route', 'get', S_VETH])).stdout).not.toContain('tun0');
      expect((await c.exec(['ip', 'route', 'get', S_TUN])).stdout).toContain('dev tun0');
      expect((await c.exec(['curl', '-sS', '--max-time', '10', `http://${S_TUN}:8080/ip`])).stdout.trim()).toBe(C_TUN);
      expect((await c.exec(['curl', '-sS', '--max-time', '10', `http://${PROXIED}:8080/ip`])).stdout.trim()).toBe(S_VETH);
      const ping = await c.exec(['ping', '-c', '2', '-i', '0.2', '-W', '3', S_TUN], { allowFail: true });
      expect(ping.stdout).toContain('2 packets transmitted, 2 received');
    } finally {
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    expect(await routingSnapshot(c)).toBe(before);
  });
});
