/**
 * `tunroute server` in `mode: tun` (root): decrypted packets go into a TUN device in s and s's
 * kernel forwards them, so even ICMP to hosts behind the server is answered honestly.
 *
 *   ns c   wireguard-go trc…, 10.8.0.2/16; 10.77.0.0/24 routed into it
 *     │ veth 10.200.0.1 ─ 10.200.0.2
 *   ns s   tunroute server (root, mode tun, device trs…, 10.8.0.1/16), ip_forward = 1
 *     │ veth 10.77.0.1 ─ 10.77.0.2
 *   ns w   HTTP :8080, iperf3 :5201, UDP echo :7000; 10.8.0.0/16 via 10.77.0.1
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labBytesSha256, startHttpServer, startIperf3, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { CLI, e2eAvailable, logLines } from '../helpers/e2e.js';
import { existsSync } from 'node:fs';
import { MB, UDP_CLIENT, UDP_ECHO, mbps, startWireguardGo } from './server-lab.js';

const haveWg = existsSync('/usr/bin/wireguard-go') && existsSync('/usr/bin/wg');
const run = e2eAvailable('server-tun') && haveWg;
if (!haveWg) console.log('[e2e/server-tun] SKIPPED: apt-get install wireguard-go wireguard-tools');

describe.skipIf(!run)('tunroute server, mode: tun, with a wireguard-go client', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let w: Namespace;
  let server: LabProcess;
  let dev: string;
  let control: string;
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const numbers: Record<string, string> = {};

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s', { ipForward: true });
    w = await lab.addNamespace('w');
    await lab.link(c, s, { cidrA: '10.200.0.1/24', cidrB: '10.200.0.2/24' });
    await lab.link(s, w, { cidrA: '10.77.0.1/24', cidrB: '10.77.0.2/24' });
    await w.exec(['ip', 'route', 'add', '10.8.0.0/16', 'via', '10.77.0.1']);
    await startHttpServer(w, { listen: '10.77.0.2', port: 8080 });
    await startIperf3(w, 5201, { listen: '10.77.0.2' });
    writeFileSync(join(lab.tmpDir, 'udp-echo.cjs'), UDP_ECHO);
    writeFileSync(join(lab.tmpDir, 'udp-client.cjs'), UDP_CLIENT);
    await w.spawn(['node', join(lab.tmpDir, 'udp-echo.cjs'), '10.77.0.2', '7000'], { name: 'udp-echo' }).waitForLine(/udp echo ready/, 10_000);

    const id = lab.id.slice(-4);
    dev = `trs${id}`;
    control = join(lab.tmpDir, 'server.sock');
    const cfg = join(lab.tmpDir, 'server.yaml');
    writeFileSync(
      cfg,
      [
        'listen: "10.200.0.2:51820"',
        `privateKey: "${formatKey(serverKey)}"`,
        'address: 10.8.0.1/16',
        'mode: tun',
        `tun: {name: ${dev}}`,
        `control: {socket: "${control}"}`,
        'peers:',
        '  - name: laptop',
        `    publicKey: "${formatKey(publicKeyOf(clientKey))}"`,
        '    allowedIPs: [10.8.0.2/32]',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    server = s.spawn(['node', CLI, 'server', '-c', cfg], { name: 'tunroute-server' });
    await server.waitForLine(/"msg":"tunroute server is up"/, 15_000);
    await startWireguardGo(c, { ifname: `trc${id}`, key: clientKey, serverPub: publicKeyOf(serverKey), endpoint: '10.200.0.2:51820', address: '10.8.0.2/16', routes: ['10.77.0.0/24'] });
  }, 120_000);

  afterAll(async () => {
    if (Object.keys(numbers).length > 0) console.log(`[e2e/server-tun] ${JSON.stringify(numbers)}`);
    await lab?.destroy();
  }, 60_000);

  it('gives the device its address and MTU, and warns about nothing (forwarding is on)', async () => {
    const r = await s.exec(['ip', '-o', '-4', 'addr', 'show', 'dev', dev]);
    expect(r.stdout).toContain('inet 10.8.0.1/16');
    const l = await s.exec(['ip', '-o', 'link', 'show', 'dev', dev]);
    expect(l.stdout).toMatch(/mtu 1420 .*state (UP|UNKNOWN)/);
    expect(logLines(server).some((x) => /ip_forward is 0/.test(String(x.msg)))).toBe(false);
  });

  it('lets the kernel answer ping, to the server and to the host behind it', async () => {
    for (const dst of ['10.8.0.1', '10.77.0.2']) {
      const r = await c.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', dst], { timeoutMs: 20_000 });
      expect(r.stdout).toMatch(/3 received, 0% packet loss/);
    }
  });

  it('carries 100 MB of HTTP (sha256 checked), iperf3 both ways and UDP', async () => {
    const ip = await c.exec(['curl', '-sS', '--max-time', '10', 'http://10.77.0.2:8080/ip']);
    expect(ip.stdout.trim()).toBe('10.8.0.2'); // forwarded, not re-originated: w sees the peer
    const n = 100 * MB;
    const t0 = performance.now();
    const r = await c.sh(`curl -sS --max-time 120 http://10.77.0.2:8080/bytes/${n} | sha256sum`, { timeoutMs: 150_000 });
    const secs = (performance.now() - t0) / 1000;
    expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(n));
    numbers.curl100MB = `${(n / MB / secs).toFixed(1)} MiB/s (${secs.toFixed(1)} s)`;
    for (const [name, extra] of [['iperf3 c→w', []], ['iperf3 w→c', ['-R']]] as const) {
      const i = await c.exec(['iperf3', '-c', '10.77.0.2', '-p', '5201', '-t', '5', '-J', ...extra], { timeoutMs: 60_000 });
      const j = JSON.parse(i.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
      expect(j.end.sum_received.bytes).toBeGreaterThan(MB);
      numbers[name] = mbps(j.end.sum_received.bits_per_second);
    }
    const u = await c.exec(['node', join(lab.tmpDir, 'udp-client.cjs'), '10.77.0.2', '7000', '500', '1200'], { timeoutMs: 30_000 });
    const res = JSON.parse(u.stdout.trim().split('\n').pop()!) as { sent: number; received: number; bad: number };
    expect(res.bad).toBe(0);
    expect(res.received).toBeGreaterThanOrEqual(490);
    numbers.udpEcho = `${res.received}/${res.sent} echoed`;
  }, 180_000);

  it('reports mode tun in status, and the device goes with the process', async () => {
    const st = await s.exec(['node', CLI, 'status', '--control', control]);
    expect(st.stdout).toContain('mode tun');
    expect(st.stdout).toContain(`device    ${dev}  10.8.0.1/16  mtu 1420`);
    expect((await server.stop('SIGTERM', 5000)).code).toBe(0);
    const gone = await s.exec(['ip', 'link', 'show', 'dev', dev], { allowFail: true });
    expect(gone.code).not.toBe(0);
  });
});
