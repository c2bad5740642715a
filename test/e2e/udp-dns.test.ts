/**
 * DNS through tunroute and dante, end to end in the lab (see udp-lab.ts):
 * - `--dns off`: `dig @10.66.1.53` is an ordinary UDP flow, carried by a SOCKS5 UDP ASSOCIATE;
 *   a query to 8.8.8.8 reaches the decoy there (so the decoy tells an unhijacked query apart);
 * - `--dns hijack`: a query to any address routed into tun0 (8.8.8.8, an address where nothing
 *   listens, the upstream itself) is answered by `dns.upstream` through the proxy, and no DNS
 *   leaves any other way: captures on both sides of the veth and on the server's lo show only
 *   SOCKS traffic from c and only dante talking to 10.66.1.53:53; the decoy never sees a query.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { e2eAvailable } from '../helpers/e2e.js';
import {
  CLIENT,
  DANTE,
  DECOY_ADDR,
  DECOY_DNS,
  DIRECT,
  DNS_IP,
  DNS_UPSTREAM,
  NOBODY,
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
  type UdpLab,
} from './udp-lab.js';

const run = e2eAvailable('DNS through SOCKS5 UDP ASSOCIATE (dante): off and hijack');

describe.skipIf(!run)('DNS through tunroute and dante (lab)', () => {
  let t: UdpLab;
  let config: string;

  beforeAll(async () => {
    t = await createUdpLab({ dante: true, dns: true });
    // The upstream comes from the file; the mode from the file or the flag.
    config = writeConfig(t.lab, 'udp-dns', { dns: { mode: 'off', upstream: DNS_UPSTREAM } });
  });
  afterAll(async () => {
    await t?.lab.destroy();
  });

  it('--dns off: dig @10.66.1.53 is answered through a UDP ASSOCIATE; @8.8.8.8 reaches whoever is there', async () => {
    const { proc: up } = await startTunroute(t.c, upArgs(config, DANTE, ['--dns', 'off']));
    const real = await dig(t.c, DNS_IP, WEB_NAME);
    const decoy = await dig(t.c, DECOY_DNS, WEB_NAME);
    process.stdout.write(`[udp-dns] --dns off: dig @${DNS_IP} ${real.status} ${real.answers.join(',')} in ${real.ms} ms; @${DECOY_DNS} ${decoy.answers.join(',')}\n`);
    expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    const ctx = `${real.raw}\n${decoy.raw}\n${up.outputTail(3000)}`;
    expect(real.status, ctx).toBe('NOERROR');
    expect(real.answers, ctx).toEqual([WEB_ADDR]);
    expect(decoy.answers, ctx).toEqual([DECOY_ADDR]);

    const c = finalUdpCounters(up);
    // Ordinary UDP flows through the proxy, nothing hijacked.
    expect(c.udp.relay.dnsQueries, ctx).toBe(0);
    expect(c.udp.relay.flowsTotal, ctx).toBeGreaterThanOrEqual(2);
    expect(c.udp.relay.datagramsUp, ctx).toBeGreaterThanOrEqual(2);
    expect(c.udp.relay.datagramsDown, ctx).toBeGreaterThanOrEqual(2);
    expect(c.udp.relay.flowsOpen).toBe(0);
    // The dnsmasqs saw dante (10.99.0.2), never the app or tunroute's own address.
    expect(t.dnsmasq?.output().stderr).toMatch(new RegExp(`query\\[A\\] ${WEB_NAME} from ${DIRECT.replace(/\./g, '\\.')}`));
    expect(t.decoy?.output().stderr).toMatch(new RegExp(`query\\[A\\] ${WEB_NAME} from ${DIRECT.replace(/\./g, '\\.')}`));
  });

  it('--dns hijack: queries to any address are answered by the upstream through the proxy, and nothing leaks', async () => {
    const decoyQueriesBefore = (t.decoy?.output().stderr.match(/query\[/g) ?? []).length;
    const { proc: up } = await startTunroute(t.c, upArgs(config, DANTE, ['--dns', 'hijack']));
    // c's end of the veth: what leaves the client at all; s's end and s's lo: what dante sends.
    const capC = await capture(t.c, t.veth.a.ifname);
    const capS = await capture(t.s, t.veth.b.ifname);
    const capLo = await capture(t.s, 'lo', ['port', '53']);

    const results = [];
    for (const server of [DECOY_DNS, NOBODY, DNS_IP]) results.push({ asked: server, ...(await dig(t.c, server, WEB_NAME)) });
    const onC = await capC.stop();
    const onS = await capS.stop();
    const onLo = await capLo.stop();
    expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });

    for (const r of results) process.stdout.write(`[udp-dns] --dns hijack: dig @${r.asked} → ${r.status} ${r.answers.join(',')} in ${r.ms} ms\n`);
    process.stdout.write(`[udp-dns] captured: ${onC.length} packets on c's veth, ${onS.length} on s's veth, ${onLo.length} DNS packets on s's lo\n`);
    const ctx = `${results.map((r) => r.raw).join('\n')}\n--- c veth:\n${onC.slice(0, 40).join('\n')}\n--- s lo:\n${onLo.join('\n')}\n${up.outputTail(3000)}`;
    for (const r of results) {
      expect(r.status, `${r.asked}: ${ctx}`).toBe('NOERROR');
      // The configured upstream's answer, not the decoy's, whichever server the app asked.
      expect(r.answers, `${r.asked}: ${ctx}`).toEqual([WEB_ADDR]);
      // dig sees the reply come from the address it asked.
      expect(r.server, ctx).toContain(`${r.asked}#53`);
    }

    // Nothing but SOCKS between c and s: every packet is 10.99.0.1 <-> 10.99.0.2 and none of
    // them carries port 53 (no query goes around the proxy).
    for (const [side, lines] of [
      ['c', onC],
      ['s', onS],
    ] as const) {
      const ip = lines.filter((l) => / IP /.test(l));
      expect(ip.length, `${side}: ${ctx}`).toBeGreaterThan(0);
      for (const l of ip) {
        const e = endpoints(l);
        expect(e, `${side}: ${l}`).toBeDefined();
        if (!e) continue;
        expect([e.src, e.dst].sort(), `${side}: ${l}`).toEqual([CLIENT, DIRECT].sort());
        expect(e.sport === 53 || e.dport === 53, `${side}: ${l}`).toBe(false);
        expect(e.src === DIRECT ? e.sport : e.dport, `${side}: ${l}`).not.toBe(53);
      }
    }
    // In s, the only DNS is dante (its external address) asking 10.66.1.53:53, and the answers.
    expect(onLo.length, ctx).toBeGreaterThanOrEqual(6);
    for (const l of onLo) {
      const e = endpoints(l);
      expect(e, l).toBeDefined();
      if (!e) continue;
      const pair = e.dport === 53 ? [e.src, e.dst] : [e.dst, e.src];
      expect(pair, l).toEqual([DIRECT, DNS_IP]);
    }
    // The decoy on 8.8.8.8 was never asked.
    expect((t.decoy?.output().stderr.match(/query\[/g) ?? []).length).toBe(decoyQueriesBefore);

    const c = finalUdpCounters(up);
    expect(c.udp.relay.dnsQueries, ctx).toBeGreaterThanOrEqual(3);
    expect(c.udp.relay.dnsAnswered, ctx).toBeGreaterThanOrEqual(3);
    expect(c.udp.relay.dnsFailed, ctx).toBe(0);
    // Through dante: UDP ASSOCIATE.
    expect(c.udp.dns?.udpAnswers ?? 0, ctx).toBeGreaterThanOrEqual(1);
  });
});
