/**
 * DNS hijack through a proxy without UDP (microsocks refuses UDP ASSOCIATE), end to end in the
 * lab (see udp-lab.ts): every query is answered over DNS-over-TCP through a CONNECT to the
 * upstream. `dig` works, and so does an ordinary app resolving a name through the system
 * resolver: c's /etc/resolv.conf (an `ip netns exec` overlay) names 8.8.8.8, which is routed
 * into tun0, so `curl http://web.lab:8080/` resolves web.lab through tunroute and fetches from
 * 10.66.1.7 through microsocks. Nothing but TCP to microsocks leaves c.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type LabProcess } from '../../tools/lab/index.js';
import { e2eAvailable } from '../helpers/e2e.js';
import {
  CLIENT,
  DECOY_DNS,
  DIRECT,
  DNS_IP,
  DNS_UPSTREAM,
  MICROSOCKS,
  WEB_ADDR,
  WEB_NAME,
  capture,
  createUdpLab,
  dig,
  endpoints,
  finalUdpCounters,
  startTunroute,
  upArgs,
  writeConfig,
  type Capture,
  type UdpLab,
} from './udp-lab.js';

const run = e2eAvailable('DNS hijack over TCP through a proxy without UDP (microsocks)');

const HTTP_PORT = 8080;
const MICROSOCKS_PORT = 1081;

describe.skipIf(!run)('DNS hijack through microsocks: DNS over TCP (lab)', () => {
  let t: UdpLab;
  let up: LabProcess;
  let capC: Capture;

  beforeAll(async () => {
    t = await createUdpLab({ dante: false, microsocks: true, dns: true });
    await startHttpServer(t.s, { port: HTTP_PORT });
    // The app's resolver: 8.8.8.8 (routed into tun0; the decoy there would answer 10.66.1.99).
    t.lab.setResolvConf(t.c, [DECOY_DNS], 'timeout:3 attempts:2');
    const config = writeConfig(t.lab, 'udp-dns-tcp', { dns: { mode: 'hijack', upstream: DNS_UPSTREAM } });
    ({ proc: up } = await startTunroute(t.c, upArgs(config, MICROSOCKS)));
    capC = await capture(t.c, t.veth.a.ifname);
  });
  afterAll(async () => {
    await t?.lab.destroy();
  });

  it('dig @10.66.1.53 and @8.8.8.8 are answered by the upstream over TCP', async () => {
    for (const server of [DNS_IP, DECOY_DNS]) {
      const r = await dig(t.c, server, WEB_NAME);
      process.stdout.write(`[udp-dns-tcp] dig @${server} → ${r.status} ${r.answers.join(',')} in ${r.ms} ms\n`);
      const ctx = `${r.raw}\n${up.outputTail(3000)}`;
      expect(r.status, ctx).toBe('NOERROR');
      expect(r.answers, ctx).toEqual([WEB_ADDR]);
    }
  });

  it('curl http://web.lab:8080/ resolves through the hijack and fetches through microsocks', async () => {
    const started = Date.now();
    const r = await t.c.exec(
      ['curl', '-sS', '--fail', '--max-time', '20', '-w', '\n%{remote_ip} %{time_namelookup}', `http://${WEB_NAME}:${HTTP_PORT}/health`],
      { allowFail: true, timeoutMs: 30_000 },
    );
    process.stdout.write(`[udp-dns-tcp] curl http://${WEB_NAME}:${HTTP_PORT}/health: exit ${r.code} in ${Date.now() - started} ms: ${JSON.stringify(r.stdout)}\n`);
    const ctx = `exit ${r.code}\n${r.stdout}\n${r.stderr}\n${up.outputTail(3000)}`;
    expect(r.code, ctx).toBe(0);
    const out = r.stdout.split('\n');
    const meta = out.pop() ?? '';
    expect(out.join('\n').trim(), ctx).toBe('ok');
    expect(meta.split(' ')[0], ctx).toBe(WEB_ADDR);
  });

  it('only TCP to microsocks left c; the answers came over TCP; stops cleanly', async () => {
    const lines = await capC.stop();
    expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    const ip = lines.filter((l) => / IP /.test(l));
    process.stdout.write(`[udp-dns-tcp] captured ${ip.length} IPv4 packets on c's veth\n`);
    expect(ip.length).toBeGreaterThan(0);
    for (const l of ip) {
      const e = endpoints(l);
      expect(e, l).toBeDefined();
      if (!e) continue;
      // TCP between the app's side and microsocks only: no UDP, no port 53.
      expect(l, l).toMatch(/: (Flags|tcp)/);
      const [mine, theirs] = e.src === CLIENT ? [e, { ip: e.dst, port: e.dport }] : [e, { ip: e.src, port: e.sport }];
      expect(theirs, `${l} (${mine.src})`).toEqual({ ip: DIRECT, port: MICROSOCKS_PORT });
    }
    const c = finalUdpCounters(up);
    const ctx = JSON.stringify(c.udp);
    // 2 digs + curl's A (and AAAA) lookups, all hijacked, all answered over TCP.
    expect(c.udp.relay.dnsQueries, ctx).toBeGreaterThanOrEqual(3);
    expect(c.udp.relay.dnsFailed, ctx).toBe(0);
    expect(c.udp.dns?.tcpAnswers ?? 0, ctx).toBeGreaterThanOrEqual(3);
    expect(c.udp.dns?.udpAnswers ?? 0, ctx).toBe(0);
    // The decoy was never asked; the upstream was, by microsocks from inside s (it connects
    // from whatever source the kernel picks, 10.66.1.53 itself for an address on lo), never
    // by the app or tunroute from c.
    expect(t.decoy?.output().stderr ?? '').not.toMatch(/query\[/);
    const asked = [...(t.dnsmasq?.output().stderr ?? '').matchAll(/query\[\w+\] \S+ from (\S+)/g)].map((m) => m[1]);
    expect(asked.length).toBeGreaterThanOrEqual(3);
    for (const from of asked) expect([DIRECT, DNS_IP]).toContain(from);
  });
});
