/**
 * The HTTP CONNECT outbound end to end in the lab, through Debian's tinyproxy (Basic auth on):
 *   - curl by address and by name (`--dns fakeip`: the client resolves nothing; tinyproxy gets
 *     `CONNECT web.lab:8080` and resolves the name with s's dnsmasq);
 *   - 50 MB intact (sha256 against the server's deterministic bytes);
 *   - DNS that the fake-IP resolver forwards (an MX query) goes over TCP through a CONNECT to
 *     the resolver; UDP to a destination is refused with ICMP (the app's socket errors out);
 *   - wrong credentials: the app's connection is reset, and the log says why in one sentence
 *     without the password.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labBytesSha256, startDnsmasq, startHttpServer, startTinyproxy, type Namespace } from '../../tools/lab/index.js';
import { e2eAvailable, logLines, startTunrouteIn } from '../helpers/e2e.js';
import { fixture } from './tcp-lab.js';

const run = e2eAvailable('HTTP CONNECT outbound through tinyproxy');

const CLIENT = '10.99.0.1';
const DIRECT = '10.99.0.2';
const WEB = '10.66.1.7';
const DNS_IP = '10.66.1.53';
const NAME = 'web.lab';
const USER = 'lab';
const PASS = 'Lab-pass-42';
const SIZE = 50 * 1024 * 1024;

describe.skipIf(!run)('HTTP CONNECT outbound (lab, tinyproxy)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let tinyLog: string;
  let config: string;

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    await lab.link(c, s, { cidrA: `${CLIENT}/24`, cidrB: `${DIRECT}/24` });
    for (const ip of [WEB, DNS_IP]) await s.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    for (const ns of [c, s]) lab.setResolvConf(ns, [DNS_IP]);
    await startDnsmasq(s, { listen: DNS_IP, records: { [NAME]: WEB }, extraArgs: ['--log-queries'] });
    await startTinyproxy(s, { listen: DIRECT, port: 8888, auth: { user: USER, pass: PASS } });
    tinyLog = join(lab.tmpDir, 'tinyproxy-s-8888.log');
    await startHttpServer(s, { port: 8080 });
    const echo = s.spawn(['node', fixture('udp-echo-server.mjs'), WEB, '7001'], { name: 'udp-echo' });
    await echo.waitForLine(/^listening/, 10_000);
    config = join(lab.tmpDir, 'fakeip.json');
    writeFileSync(config, JSON.stringify({ dns: { mode: 'fakeip', upstream: `${DNS_IP}:53` } }));
  }, 60_000);

  afterAll(async () => {
    // The fake-IP table outlives `up` on purpose (state dir of c's namespace): not the lab's, though.
    if (c !== undefined) rmSync(`/run/tunroute/netns/${c.name}`, { recursive: true, force: true });
    await lab?.destroy();
  });

  it('curl by address and by name, 50 MB intact; DNS over TCP through CONNECT; UDP refused', async () => {
    const up = await startTunrouteIn(c, ['-c', config, '--route', '10.66.1.0/24', '--proxy', `http://${USER}:${PASS}@${DIRECT}:8888`]);
    try {
      const byAddr = await c.exec(['curl', '-sS', '--max-time', '10', `http://${WEB}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      const byName = await c.exec(['curl', '-sS', '--max-time', '10', `http://${NAME}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      const big = await c.sh(`curl -sS --max-time 120 http://${NAME}:8080/bytes/${SIZE} | sha256sum`, { allowFail: true, timeoutMs: 150_000 });
      const mx = await c.exec(['dig', '+time=5', '+tries=1', NAME, 'MX'], { allowFail: true, timeoutMs: 20_000 });
      // A connected UDP socket: the ICMP error tunroute sends back surfaces as a socket error.
      const udp = await c.exec(
        ['node', '-e', `const s=require('dgram').createSocket('udp4');s.on('error',e=>{console.log(e.code);process.exit(0)});s.on('message',()=>{console.log('echoed');process.exit(0)});s.connect(7001,'${WEB}',()=>{s.send('x');setInterval(()=>s.send('x'),300)});setTimeout(()=>{console.log('silent');process.exit(0)},4000)`],
        { allowFail: true, timeoutMs: 20_000 },
      );
      const log = readFileSync(tinyLog, 'utf8');
      const ctx = `${byAddr.stdout}${byAddr.stderr}\n${byName.stdout}${byName.stderr}\n${big.stdout}${big.stderr}\n${mx.stdout}\n${udp.stdout}${udp.stderr}\n${log.slice(-3000)}\n${up.outputTail(3000)}`;
      expect(byAddr.stdout, ctx).toBe('ok\n');
      expect(byName.stdout, ctx).toBe('ok\n');
      expect(big.stdout.split(' ')[0], ctx).toBe(labBytesSha256(SIZE));
      expect(mx.stdout, ctx).toMatch(/status: (NOERROR|NXDOMAIN|REFUSED)/);
      expect(udp.stdout.trim(), ctx).toMatch(/^(EHOSTUNREACH|ECONNREFUSED)$/);
      // tinyproxy saw the address, the name (never a fake address) and the resolver over TCP.
      expect(log, ctx).toMatch(new RegExp(`CONNECT ${WEB.replace(/\./g, '\\.')}:8080`));
      expect(log, ctx).toMatch(/CONNECT web\.lab:8080/);
      expect(log, ctx).toMatch(new RegExp(`CONNECT ${DNS_IP.replace(/\./g, '\\.')}:53`));
      expect(log, ctx).not.toMatch(/CONNECT 198\.1[89]\./);
      expect(up.output().stderr, ctx).not.toContain(PASS);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 240_000);

  it('wrong credentials: the connection is reset and the log says why, without the password', async () => {
    const wrong = 'Not-the-pass-7';
    const up = await startTunrouteIn(c, ['--route', '10.66.1.0/24', '--proxy', `http://${USER}:${wrong}@${DIRECT}:8888`, '--log-level', 'debug']);
    try {
      const curl = await c.exec(['curl', '-sS', '--max-time', '10', `http://${WEB}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${curl.code} ${curl.stdout}${curl.stderr}\n${up.outputTail(3000)}`;
      expect(curl.code, ctx).not.toBe(0);
      expect(curl.stdout, ctx).toBe('');
      const lines = logLines(up).map((l) => String(l.msg));
      expect(lines.some((m) => m.includes('refused the user name and password')), ctx).toBe(true);
      expect(up.output().stderr, ctx).not.toContain(wrong);
      expect(up.output().stdout, ctx).not.toContain(wrong);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 90_000);
});
