/**
 * DNS over TCP is caught as well as over UDP (relay/tcp-dns.ts), end to end in the lab (see
 * udp-lab.ts): `dig +tcp` from c to the resolver 10.66.1.53 (routed into tun0) is answered by
 * tunroute itself — fake addresses with `dns.mode fakeip`, the upstream's real answer (asked
 * through dante) with `hijack` — and `dig +tcp +keepopen` sends two queries on one connection.
 * tcpdump on c's veth shows no packet to or from port 53 leaving c: the only traffic is to dante.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabProcess } from '../../tools/lab/index.js';
import { e2eAvailable, finalCounters } from '../helpers/e2e.js';
import { CLIENT, DANTE, DIRECT, DNS_IP, DNS_UPSTREAM, WEB_ADDR, WEB_NAME, capture, createUdpLab, dig, endpoints, startTunroute, upArgs, writeConfig, type UdpLab } from './udp-lab.js';

const run = e2eAvailable('DNS over TCP caught by tunroute (dig +tcp, fakeip and hijack)');

describe.skipIf(!run)('DNS over TCP while hijacking (lab)', () => {
  let t: UdpLab;

  beforeAll(async () => {
    t = await createUdpLab({ dante: true, dns: true });
  }, 60_000);
  afterAll(async () => {
    if (t !== undefined) await t.c.exec(['rm', '-rf', `/run/tunroute/netns/${t.c.name}`], { allowFail: true });
    await t?.lab.destroy();
  });

  async function withTunroute(mode: 'fakeip' | 'hijack', body: (up: LabProcess) => Promise<void>): Promise<{ lines: string[]; stats: Record<string, unknown> }> {
    const config = writeConfig(t.lab, `dns-tcp-${mode}`, { dns: { mode, upstream: DNS_UPSTREAM } });
    const { proc: up } = await startTunroute(t.c, upArgs(config, DANTE));
    const cap = await capture(t.c, t.veth.a.ifname);
    let lines: string[];
    try {
      await body(up);
    } finally {
      lines = await cap.stop();
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
    return { lines, stats: finalCounters(up) ?? {} };
  }

  /** Nothing to or from port 53 on c's veth; whatever left went to dante (fakeip: nothing at all). */
  function expectNoDnsLeft(lines: readonly string[], ctx: string): void {
    const ip = lines.filter((l) => / IP /.test(l));
    for (const l of ip) {
      const e = endpoints(l);
      if (e === undefined) continue;
      expect(e.sport === 53 || e.dport === 53, `${l}\n${ctx}`).toBe(false);
      // Everything that left c went to dante (its TCP control port, or its UDP relay).
      const other = e.src === CLIENT ? e.dst : e.src;
      expect(other, l).toBe(DIRECT);
    }
  }

  it('fakeip: dig +tcp gets fake addresses, two queries on one connection too; no TCP/53 leaves c', async () => {
    let ctx = '';
    const { lines, stats } = await withTunroute('fakeip', async (up) => {
      const one = await dig(t.c, DNS_IP, WEB_NAME, ['+tcp']);
      const two = await t.c.exec(['dig', '+time=3', '+tries=1', '+tcp', '+keepopen', `@${DNS_IP}`, 'a.test', 'A', 'b.test', 'A'], { allowFail: true, timeoutMs: 20_000 });
      ctx = `${one.raw}\n${two.stdout}${two.stderr}\n${up.outputTail(3000)}`;
      process.stdout.write(`[dns-tcp] fakeip: dig +tcp ${WEB_NAME} → ${one.status} ${one.answers.join(',')} (${one.server}) in ${one.ms} ms\n`);
      expect(one.status, ctx).toBe('NOERROR');
      expect(one.server, ctx).toMatch(/\(TCP\)/);
      expect(one.answers.length, ctx).toBe(1);
      expect(one.answers[0], ctx).toMatch(/^198\.1[89]\./);
      const fakes = [...two.stdout.matchAll(/^([ab])\.test\.\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((m) => [m[1], m[2]]);
      expect(fakes.map((f) => f[0]), ctx).toEqual(['a', 'b']);
      for (const f of fakes) expect(f[1], ctx).toMatch(/^198\.1[89]\./);
      expect(fakes[0][1], ctx).not.toBe(fakes[1][1]);
    });
    expectNoDnsLeft(lines, ctx);
    const d = stats.dnsTcp as { connectionsTotal: number; queries: number; answered: number } | undefined;
    process.stdout.write(`[dns-tcp] fakeip counters: ${JSON.stringify(d)}\n`);
    expect(d?.queries, ctx).toBe(3);
    expect(d?.answered, ctx).toBe(3);
    // dig +keepopen asked both names on one connection: two connections in all.
    expect(d?.connectionsTotal, ctx).toBe(2);
  }, 90_000);

  it('hijack: dig +tcp gets the real answer through the proxy; no TCP/53 leaves c', async () => {
    let ctx = '';
    const before = (t.dnsmasq?.output().stderr.match(/query\[A\] web\.lab from/g) ?? []).length;
    const { lines, stats } = await withTunroute('hijack', async (up) => {
      const one = await dig(t.c, DNS_IP, WEB_NAME, ['+tcp']);
      const two = await t.c.exec(['dig', '+time=3', '+tries=1', '+tcp', '+keepopen', `@${DNS_IP}`, WEB_NAME, 'A', WEB_NAME, 'MX'], { allowFail: true, timeoutMs: 20_000 });
      ctx = `${one.raw}\n${two.stdout}${two.stderr}\n${up.outputTail(3000)}`;
      process.stdout.write(`[dns-tcp] hijack: dig +tcp ${WEB_NAME} → ${one.status} ${one.answers.join(',')} (${one.server}) in ${one.ms} ms\n`);
      expect(one.status, ctx).toBe('NOERROR');
      expect(one.server, ctx).toMatch(/\(TCP\)/);
      expect(one.answers, ctx).toEqual([WEB_ADDR]);
      // Both answered on one connection (dnsmasq refuses MX: it knows only its own records).
      expect([...two.stdout.matchAll(/^;; Got answer:/gm)].length, ctx).toBe(2);
      expect(two.stdout, ctx).toMatch(/status: REFUSED/);
      expect(two.stdout, ctx).toMatch(new RegExp(`^web\\.lab\\.\\s+\\d+\\s+IN\\s+A\\s+${WEB_ADDR.replace(/\./g, '\\.')}$`, 'm'));
    });
    expectNoDnsLeft(lines, ctx);
    expect(lines.filter((l) => / IP /.test(l)).length, ctx).toBeGreaterThan(0);
    // The upstream was asked (through dante, from s), not by c.
    const asked = [...(t.dnsmasq?.output().stderr ?? '').matchAll(/query\[A\] web\.lab from (\S+)/g)].map((m) => m[1]);
    expect(asked.length, ctx).toBeGreaterThan(before);
    for (const from of asked) expect([DIRECT, DNS_IP], ctx).toContain(from);
    const d = stats.dnsTcp as { queries: number; answered: number; failed: number } | undefined;
    process.stdout.write(`[dns-tcp] hijack counters: ${JSON.stringify(d)}\n`);
    expect(d?.queries, ctx).toBe(3);
    expect(d?.answered, ctx).toBe(3);
    expect(d?.failed, ctx).toBe(0);
  }, 90_000);
});
