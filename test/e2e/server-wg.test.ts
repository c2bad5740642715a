/**
 * `tunroute server` against a real WireGuard client (Debian's wireguard-go), in a lab this file
 * creates and removes. The server runs as the unprivileged user nobody: its default mode needs
 * no root.
 *
 *   ns c   wireguard-go trc…, 10.8.0.2/16; 10.77.0.0/24 routed into it
 *     │ veth 10.200.0.1 ─ 10.200.0.2
 *   ns s   tunroute server (uid 65534) on UDP 0.0.0.0:51820, address 10.8.0.1/16
 *     │ veth 10.77.0.1 ─ 10.77.0.2          ns x: wireguard-go with a key the server does
 *   ns w   HTTP :8080, iperf3 :5201,         not know, 10.8.0.9/16, veth 10.201.0.1 ─ .2 to s
 *          UDP echo :7000
 *
 * c reaches w only through the tunnel (s does not forward: ip_forward is 0), so every byte c
 * exchanges with w was decrypted by tunroute, terminated by its stack and re-originated from
 * s's own socket (w sees 10.77.0.1). 10.77.0.0/24 is a network s is directly connected to:
 * peers may not reach it unless `allow` says so, and the config allows w (10.77.0.2) only;
 * s's own address there (10.77.0.1, an HTTP server listens on it) stays refused.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labBytesSha256, startHttpServer, startIperf3, waitForPort, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { CLI, e2eAvailable, logLines } from '../helpers/e2e.js';
import { MB, UDP_CLIENT, UDP_ECHO, mbps, startWireguardGo } from './server-lab.js';

const haveWg = existsSync('/usr/bin/wireguard-go') && existsSync('/usr/bin/wg');
const run = e2eAvailable('server-wg') && haveWg;
if (!haveWg) console.log('[e2e/server-wg] SKIPPED: apt-get install wireguard-go wireguard-tools');

const NOBODY = 65534;

describe.skipIf(!run)('tunroute server with a wireguard-go client (server as nobody)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let w: Namespace;
  let x: Namespace;
  let server: LabProcess;
  let control: string;
  const serverKey = generatePrivateKey();
  const clientKey = generatePrivateKey();
  const strangerKey = generatePrivateKey();
  const numbers: Record<string, string> = {};

  async function status(json = true): Promise<string> {
    const r = await s.exec(['node', CLI, 'status', '--control', control, ...(json ? ['--json'] : [])], { timeoutMs: 10_000 });
    return r.stdout;
  }

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    w = await lab.addNamespace('w');
    x = await lab.addNamespace('x');
    await lab.link(c, s, { cidrA: '10.200.0.1/24', cidrB: '10.200.0.2/24' });
    await lab.link(s, w, { cidrA: '10.77.0.1/24', cidrB: '10.77.0.2/24' });
    await lab.link(x, s, { cidrA: '10.201.0.1/24', cidrB: '10.201.0.2/24' });

    await startHttpServer(w, { listen: '10.77.0.2', port: 8080 });
    await startHttpServer(s, { listen: '0.0.0.0', port: 8081 }); // a service of the server host
    await startIperf3(w, 5201, { listen: '10.77.0.2' });
    writeFileSync(join(lab.tmpDir, 'udp-echo.cjs'), UDP_ECHO);
    writeFileSync(join(lab.tmpDir, 'udp-client.cjs'), UDP_CLIENT);
    const echo = w.spawn(['node', join(lab.tmpDir, 'udp-echo.cjs'), '10.77.0.2', '7000'], { name: 'udp-echo' });
    await echo.waitForLine(/udp echo ready/, 10_000);

    // The server's files, readable by nobody (the lab's temp dir is 0700 root otherwise).
    chmodSync(lab.tmpDir, 0o755);
    const runDir = join(lab.tmpDir, 'run');
    mkdirSync(runDir);
    chownSync(runDir, NOBODY, NOBODY);
    control = join(runDir, 'server.sock');
    const cfg = join(lab.tmpDir, 'server.yaml');
    writeFileSync(
      cfg,
      [
        'listen: "0.0.0.0:51820"',
        `privateKey: "${formatKey(serverKey)}"`,
        'address: 10.8.0.1/16',
        `control: {socket: "${control}"}`,
        'log: {level: info}',
        'allow: [10.77.0.2/32]',
        'peers:',
        '  - name: laptop',
        `    publicKey: "${formatKey(publicKeyOf(clientKey))}"`,
        '    allowedIPs: [10.8.0.2/32]',
        '',
      ].join('\n'),
    );
    chmodSync(cfg, 0o644);
    server = s.spawn(['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'node', CLI, 'server', '-c', cfg], { name: 'tunroute-server' });
    await server.waitForLine(/"msg":"tunroute server is up"/, 15_000);

    const id = lab.id.slice(-4);
    await startWireguardGo(c, { ifname: `trc${id}`, key: clientKey, serverPub: publicKeyOf(serverKey), endpoint: '10.200.0.2:51820', address: '10.8.0.2/16', routes: ['10.77.0.0/24'] });
    await startWireguardGo(x, { ifname: `trx${id}`, key: strangerKey, serverPub: publicKeyOf(serverKey), endpoint: '10.201.0.2:51820', address: '10.8.0.9/16', routes: [] });
  }, 120_000);

  afterAll(async () => {
    if (Object.keys(numbers).length > 0) console.log(`[e2e/server-wg] ${JSON.stringify(numbers)}`);
    await lab?.destroy();
  }, 60_000);

  it('runs as nobody', () => {
    const up = logLines(server).find((l) => l.msg === 'tunroute server is up');
    expect(up?.uid).toBe(NOBODY);
  });

  it('answers ping to its own tunnel address', async () => {
    const r = await c.exec(['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.8.0.1'], { timeoutMs: 20_000 });
    expect(r.stdout).toMatch(/5 received, 0% packet loss/);
    numbers.pingRtt = /rtt min\/avg\/max\/mdev = ([\d./]+) ms/.exec(r.stdout)?.[1] ?? '?';
  });

  it('drops ping to other destinations instead of answering for them, and counts it', async () => {
    const r = await c.exec(['ping', '-c', '2', '-i', '0.2', '-W', '1', '10.77.0.2'], { allowFail: true, timeoutMs: 20_000 });
    expect(r.stdout).toMatch(/2 packets transmitted, 0 received/);
    const st = JSON.parse(await status()) as { server: { drops: Record<string, number> } };
    expect(st.server.drops.icmp_not_ours).toBe(2);
  });

  it('re-originates HTTP from the server host: 100 MB with the right sha256', async () => {
    const ip = await c.exec(['curl', '-sS', '--max-time', '10', 'http://10.77.0.2:8080/ip']);
    expect(ip.stdout.trim()).toBe('10.77.0.1');
    const n = 100 * MB;
    const t0 = performance.now();
    const r = await c.sh(`curl -sS --max-time 120 http://10.77.0.2:8080/bytes/${n} | sha256sum`, { timeoutMs: 150_000 });
    const secs = (performance.now() - t0) / 1000;
    expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(n));
    numbers.curl100MB = `${(n / MB / secs).toFixed(1)} MiB/s (${secs.toFixed(1)} s)`;
  }, 180_000);

  it('carries iperf3 both ways', async () => {
    await waitForPort(w, '10.77.0.2', 5201);
    for (const [name, extra] of [['iperf3 c→w', []], ['iperf3 w→c', ['-R']]] as const) {
      const r = await c.exec(['iperf3', '-c', '10.77.0.2', '-p', '5201', '-t', '5', '-J', ...extra], { timeoutMs: 60_000 });
      const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
      expect(j.end.sum_received.bytes).toBeGreaterThan(MB);
      numbers[name] = mbps(j.end.sum_received.bits_per_second);
    }
  }, 120_000);

  it('exchanges UDP datagrams with a server behind it', async () => {
    const r = await c.exec(['node', join(lab.tmpDir, 'udp-client.cjs'), '10.77.0.2', '7000', '500', '1200'], { timeoutMs: 30_000 });
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { sent: number; received: number; bad: number };
    // What the server saw, to tell its own drops from the lab's (a starved receiver) if this fails.
    const st = JSON.parse(await status()) as { server: { udp: unknown; drops: unknown } };
    numbers.udpServer = JSON.stringify({ udp: st.server.udp, drops: st.server.drops });
    expect(res.bad).toBe(0);
    // UDP may lose a few under load; the path must carry nearly all of them.
    expect(res.received).toBeGreaterThanOrEqual(490);
    numbers.udpEcho = `${res.received}/${res.sent} echoed`;
  }, 60_000);

  it('gives a client with a key it does not know nothing, and keeps serving', async () => {
    const r = await x.exec(['ping', '-c', '3', '-i', '0.3', '-W', '1', '10.8.0.1'], { allowFail: true, timeoutMs: 20_000 });
    expect(r.stdout).toMatch(/3 packets transmitted, 0 received/);
    const st = JSON.parse(await status()) as { server: { drops: Record<string, number> } };
    expect(st.server.drops.unknown_peer).toBeGreaterThanOrEqual(1);
    expect(server.exited).toBe(false);
    const ok = await c.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.8.0.1'], { timeoutMs: 20_000 });
    expect(ok.stdout).toMatch(/2 received/);
  });

  it('shows its peers in `tunroute status --control PATH`', async () => {
    const text = await status(false);
    expect(text).toMatch(/server {4}listen 0\.0\.0\.0:51820/);
    expect(text).toMatch(/peer {6}laptop {2}10\.8\.0\.2\/32 {2}10\.200\.0\.1:\d+ {2}handshake/);
    expect(text).toContain('device    wg  10.8.0.1/16  mtu 1420');
  });

  it("refuses the server host's own address and the rest of its LAN (RST), allows w", async () => {
    // From s itself the service answers; through the tunnel, the peer gets RST (curl exit 7).
    const local = await s.exec(['curl', '-sS', '--max-time', '5', 'http://10.77.0.1:8081/ip']);
    expect(local.stdout.trim()).toBe('10.77.0.1');
    for (const url of ['http://10.77.0.1:8081/ip', 'http://10.77.0.3:8080/ip']) {
      const r = await c.exec(['curl', '-sS', '--max-time', '5', url], { allowFail: true, timeoutMs: 15_000 });
      expect(r.code, url).toBe(7); // "Couldn't connect": refused at once, not a timeout (28)
    }
    const st = JSON.parse(await status()) as { tcp: { upstreamErrors: Record<string, number> } };
    expect(st.tcp.upstreamErrors.not_allowed).toBe(2);
    const w = await c.exec(['curl', '-sS', '--max-time', '10', 'http://10.77.0.2:8080/ip']);
    expect(w.stdout.trim()).toBe('10.77.0.1');
  });

  it('stops on SIGTERM and prints its counters', async () => {
    const st = await server.stop('SIGTERM', 5000);
    expect(st.code).toBe(0);
    const last = logLines(server).find((l) => l.msg === 'tunroute server stopped; counters');
    expect(last).toBeDefined();
    expect(existsSync(control)).toBe(false);
  });
});
