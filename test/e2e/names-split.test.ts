/**
 * Names in the lab, beyond the full fake-IP tunnel of fakeip.test.ts:
 *
 *   c (client, tunroute) ── 10.99.0.0/24 ── s: dante 10.99.0.2:1080, dnsmasq 10.99.0.3 (the
 *     │                                      system's resolver), HTTP :8080 on 10.66.1.7 and 10.66.2.8
 *     └──────────────── 10.97.0.0/24 ── o: dante 10.97.0.2:1080 (the "office" outbound),
 *                                           dnsmasq 10.77.0.53 (the office resolver, on o's lo:
 *                                           nothing but o's dante can reach it)
 *
 * 1. A split tunnel by domain (`--dns fakeip --route-domain corp.test`): web.corp.test gets a
 *    fake address and its connection reaches the server from dante (10.99.0.2); other.test is
 *    answered by the system's resolver with its real address and reached from the client's own
 *    address (10.99.0.1). The client's resolver 10.99.0.3 is routed into tun0 by the plan, and
 *    dnsmasq sees other.test asked by tunroute's direct socket (10.99.0.1), web.corp.test only
 *    by dante.
 * 2. Split DNS (`dns.servers`): names under corp.test are answered by the office resolver,
 *    through the office outbound; other names by the system resolver, through the proxy.
 * 3. A full fake-IP tunnel: tcpdump on the client's veth sees no DNS packet leave while names
 *    are looked up and fetched.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, startDante, startDnsmasq, startHttpServer, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { CLI, controlPathFor, e2eAvailable, startTunrouteIn } from '../helpers/e2e.js';

const run = e2eAvailable('names: split tunnel by domain, split DNS, no DNS leak (lab)');

const CLIENT = '10.99.0.1';
const PROXY = '10.99.0.2';
const SYSTEM_DNS = '10.99.0.3';
const CORP_WEB = '10.66.1.7';
const OTHER_WEB = '10.66.2.8';
const OFFICE_CLIENT = '10.97.0.1';
const OFFICE_PROXY = '10.97.0.2';
const OFFICE_DNS = '10.77.0.53';
const OFFICE_HOST = '10.66.3.3';

describe.skipIf(!run)('names (lab)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let o: Namespace;
  let systemDns: LabProcess;
  let officeDns: LabProcess;

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    o = await lab.addNamespace('o');
    const cs = await lab.link(c, s, { cidrA: `${CLIENT}/24`, cidrB: `${PROXY}/24` });
    await lab.link(c, o, { cidrA: `${OFFICE_CLIENT}/24`, cidrB: `${OFFICE_PROXY}/24` });
    for (const ip of [SYSTEM_DNS, CORP_WEB, OTHER_WEB]) await s.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    await o.exec(['ip', 'addr', 'add', `${OFFICE_DNS}/32`, 'dev', 'lo']);
    // The client's default route (the device its direct DNS socket is bound to) goes to s.
    await c.exec(['ip', 'route', 'add', 'default', 'via', PROXY, 'dev', cs.a.ifname]);
    for (const ns of [c, s]) lab.setResolvConf(ns, [SYSTEM_DNS]); // removed by lab.destroy(), also on the exit hooks
    systemDns = await startDnsmasq(s, { listen: SYSTEM_DNS, records: { 'web.corp.test': CORP_WEB, 'other.test': OTHER_WEB, 'www.other.test': OTHER_WEB }, extraArgs: ['--log-queries'] });
    officeDns = await startDnsmasq(o, { listen: OFFICE_DNS, records: { 'host.corp.test': OFFICE_HOST }, extraArgs: ['--log-queries'] });
    await startDante(s, { listen: PROXY, port: 1080 });
    await startDante(o, { listen: OFFICE_PROXY, port: 1080 });
    await startHttpServer(s, { port: 8080 });
  }, 90_000);

  afterAll(async () => {
    // The fake-IP table outlives `up` on purpose (state dir of c's namespace): not the lab's, though.
    if (c !== undefined) rmSync(`/run/tunroute/netns/${c.name}`, { recursive: true, force: true });
    await lab?.destroy();
  });

  const dig = (name: string, type = 'A') => c.exec(['dig', '+time=3', '+tries=2', name, type], { allowFail: true, timeoutMs: 20_000 });
  const answerOf = (out: string, name: string): string | undefined => new RegExp(`^${name.replace(/\./g, '\\.')}\\.\\s+\\d+\\s+IN\\s+A\\s+(\\S+)$`, 'm').exec(out)?.[1];
  const askers = (p: LabProcess, name: string): string[] => [...p.output().stderr.matchAll(new RegExp(`query\\[A\\] ${name.replace(/\./g, '\\.')} from (\\S+)`, 'g'))].map((m) => m[1]);

  it('split tunnel by domain: *.corp.test through the proxy by name, other.test resolved by the system and direct', async () => {
    const control = controlPathFor(c);
    const up = await startTunrouteIn(c, ['--control', control, '--dns', 'fakeip', '--route-domain', 'corp.test', '--proxy', `socks5://${PROXY}:1080`]);
    try {
      const routes = await c.exec(['ip', 'route', 'show', 'proto', '211']);
      const corp = await dig('web.corp.test');
      const other = await dig('other.test');
      const viaProxy = await c.exec(['curl', '-sS', '--max-time', '10', 'http://web.corp.test:8080/ip'], { allowFail: true, timeoutMs: 20_000 });
      const direct = await c.exec(['curl', '-sS', '--max-time', '10', 'http://other.test:8080/ip'], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${routes.stdout}\n${corp.stdout}\n${other.stdout}\n${viaProxy.stdout}${viaProxy.stderr}\n${direct.stdout}${direct.stderr}\n${up.outputTail(4000)}`;
      // The plan routed the system's resolver into tun0: every query of the client reaches tunroute.
      expect(routes.stdout, ctx).toMatch(new RegExp(`^${SYSTEM_DNS.replace(/\./g, '\\.')} dev tun0`, 'm'));
      expect(answerOf(corp.stdout, 'web.corp.test'), ctx).toMatch(/^198\.1[89]\./);
      expect(answerOf(other.stdout, 'other.test'), ctx).toBe(OTHER_WEB);
      // Which address the server saw: dante's for the tunneled name, the client's own for the direct one.
      expect(viaProxy.stdout.trim(), ctx).toBe(PROXY);
      expect(direct.stdout.trim(), ctx).toBe(CLIENT);
      // other.test was asked by tunroute's socket bound to the veth (the client's address);
      // web.corp.test only by dante, never by the client.
      expect(askers(systemDns, 'other.test'), ctx).toContain(CLIENT);
      const corpAskers = askers(systemDns, 'web.corp.test');
      expect(corpAskers.length, ctx).toBeGreaterThan(0);
      expect(corpAskers, ctx).not.toContain(CLIENT);
      // `why` asks the running tunroute: the name's way and its fake address, and the fake address's name.
      const fake = answerOf(corp.stdout, 'web.corp.test')!;
      const whyName = await c.exec(['node', CLI, 'why', 'web.corp.test:8080', '--control', control], { allowFail: true });
      const whyFake = await c.exec(['node', CLI, 'why', `${fake}:8080`, '--control', control], { allowFail: true });
      const whyOther = await c.exec(['node', CLI, 'why', 'other.test', '--control', control], { allowFail: true });
      const whyCtx = `${whyName.stdout}${whyName.stderr}\n${whyFake.stdout}${whyFake.stderr}\n${whyOther.stdout}${whyOther.stderr}`;
      expect(whyName.stdout, whyCtx).toMatch(/enters tun0 by name: corp\.test \(--route-domain\) covers it|enters tun0 by name: corp\.test \(routes\.includeDomains\[0\]\) covers it/);
      expect(whyName.stdout, whyCtx).toContain(`Now it holds ${fake}`);
      expect(whyName.stdout, whyCtx).toMatch(/goes to the default outbound 'proxy'/);
      expect(whyFake.stdout, whyCtx).toContain(`${fake} is the fake address of web.corp.test`);
      expect(whyOther.stdout, whyCtx).toMatch(new RegExp(`does not enter tun0 by name: .*real address by the system's resolver ${SYSTEM_DNS.replace(/\./g, '\\.')}`));
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
    // down by SIGTERM removed the resolver's route again.
    expect((await c.exec(['ip', 'route', 'show', 'proto', '211'])).stdout.trim()).toBe('');
  }, 120_000);

  it('split DNS: corp.test names are answered by the office resolver through the office outbound', async () => {
    const config = join(lab.tmpDir, 'split-dns.json');
    writeFileSync(
      config,
      JSON.stringify({
        proxy: `socks5://${PROXY}:1080`,
        outbounds: [{ name: 'office', type: 'socks5', url: `socks5://${OFFICE_PROXY}:1080` }],
        routes: { include: ['10.66.0.0/16'] },
        dns: { mode: 'hijack', upstream: `${SYSTEM_DNS}:53`, servers: [{ domains: ['corp.test'], server: `${OFFICE_DNS}:53`, outbound: 'office' }] },
      }),
    );
    // Before: the office resolver is out of the client's reach.
    const before = await c.exec(['dig', '+time=1', '+tries=1', `@${OFFICE_DNS}`, 'host.corp.test'], { allowFail: true, timeoutMs: 10_000 });
    expect(before.stdout).not.toMatch(/status: NOERROR/);
    const up = await startTunrouteIn(c, ['-c', config]);
    try {
      const office = await dig('host.corp.test');
      const other = await dig('www.other.test');
      const ctx = `${office.stdout}\n${other.stdout}\n${up.outputTail(4000)}`;
      expect(answerOf(office.stdout, 'host.corp.test'), ctx).toBe(OFFICE_HOST);
      expect(answerOf(other.stdout, 'www.other.test'), ctx).toBe(OTHER_WEB);
      // The office resolver was asked from o (its dante), the system one never about the office's name.
      const officeAskers = askers(officeDns, 'host.corp.test');
      expect(officeAskers.length, ctx).toBeGreaterThan(0);
      for (const who of officeAskers) expect([OFFICE_PROXY, OFFICE_DNS], ctx).toContain(who);
      expect(askers(systemDns, 'host.corp.test'), ctx).toEqual([]);
      expect(askers(systemDns, 'www.other.test'), ctx).toContain(PROXY);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 120_000);

  it('a full fake-IP tunnel: no DNS packet leaves the client while names are resolved and fetched', async () => {
    const up = await startTunrouteIn(c, ['--dns', 'fakeip', '--proxy', `socks5://${PROXY}:1080`]);
    const veth = (await c.exec(['ip', '-o', 'route', 'get', PROXY])).stdout.match(/dev (\S+)/)![1];
    const dump = c.spawn(['tcpdump', '-l', '-n', '-i', veth, 'port 53'], { name: 'tcpdump' });
    try {
      await dump.waitForLine(/listening on/, 10_000);
      const a = await dig('web.corp.test');
      const curl = await c.exec(['curl', '-sS', '--max-time', '10', 'http://other.test:8080/ip'], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${a.stdout}\n${curl.stdout}${curl.stderr}\n${dump.output().stdout}\n${up.outputTail(3000)}`;
      expect(answerOf(a.stdout, 'web.corp.test'), ctx).toMatch(/^198\.1[89]\./);
      expect(curl.stdout.trim(), ctx).toBe(PROXY);
      await dump.stop('SIGINT', 5000);
      // Packets tcpdump saw on port 53: none (its summary line counts them).
      expect(dump.output().stdout.trim(), ctx).toBe('');
      expect(dump.output().stderr, ctx).toMatch(/^0 packets captured/m);
    } finally {
      await dump.stop('SIGKILL', 2000).catch(() => undefined);
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 120_000);
});
