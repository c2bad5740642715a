/**
 * Names that go through a WireGuard outbound are resolved through its tunnel (wg-quick's
 * `DNS =`), never through the local network (dns/tunnel-dns.ts), against a real peer (Debian's
 * wireguard-go), in a lab this file creates and removes:
 *
 *   ns c: tunroute up, dns.mode fakeip                 ns s: wireguard-go 10.8.0.1/16, UDP :51820
 *         full tunnel through dante (10.99.0.2:1080)         dnsmasq on 10.8.0.1 only (inside the
 *         outbound 'office': wireguard, AllowedIPs               tunnel): web.wg.test → 10.8.0.1
 *         10.8.0.0/16, dns [10.8.0.1]                        HTTP :8080
 *         rule: domains [wg.test] → office
 *         resolv.conf: nameserver 10.66.1.53 (into tun0)
 *   10.99.0.1 ──────────────────── veth ─────────────────── 10.99.0.2
 *
 * `curl http://web.wg.test:8080/` from c works: the A query is caught, asked of 10.8.0.1 through
 * the tunnel (dnsmasq logs it from c's tunnel address), the app gets the real 10.8.0.1 (not a
 * fake address, which would enter the tunnel as it is), and the flow goes through the tunnel.
 * tcpdump on c's veth sees no UDP/53 (or TCP/53): only the tunnel's UDP and dante. Then, with
 * the tunnel's DNS removed from the config, the same name gets SERVFAIL and one log line names
 * the missing setting.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, startDante, startDnsmasq, startHttpServer, startWireguardGo, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { e2eAvailable, logLines, startTunrouteIn } from '../helpers/e2e.js';
import { capture, endpoints } from './udp-lab.js';

const haveWg = existsSync('/usr/bin/wireguard-go') && existsSync('/usr/bin/wg');
if (!haveWg) console.log('[e2e/wg-dns] SKIPPED: apt-get install wireguard-go wireguard-tools');
const run = e2eAvailable('names resolved through a WireGuard tunnel (DNS =)') && haveWg;

const S_VETH = '10.99.0.2';
const C_VETH = '10.99.0.1';
const S_TUN = '10.8.0.1';
const C_TUN = '10.8.0.2';
const APP_RESOLVER = '10.66.1.53';
const NAME = 'web.wg.test';

describe.skipIf(!run)('WireGuard outbound: names through the tunnel (lab)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let veth = '';
  let dnsmasq: LabProcess;
  const sKey = generatePrivateKey();
  const cKey = generatePrivateKey();

  function config(name: string, dns: string[] | undefined, full = false): string {
    const file = join(lab.tmpDir, `${name}.json`);
    const office = {
      name: 'office',
      type: 'wireguard',
      privateKey: formatKey(cKey),
      address: `${C_TUN}/16`,
      ...(dns === undefined ? {} : { dns }),
      peers: [{ publicKey: formatKey(publicKeyOf(sKey)), endpoint: `${S_VETH}:51820`, allowedIPs: [full ? '0.0.0.0/0' : '10.8.0.0/16'], persistentKeepalive: 25 }],
    };
    // Full: a wg-quick full tunnel (AllowedIPs 0.0.0.0/0, no proxy), every name through it.
    const cfg = full
      ? { outbounds: [office], dns: { mode: 'hijack' } }
      : { proxy: `socks5://${S_VETH}:1080`, outbounds: [office], rules: [{ domains: ['wg.test'], outbound: 'office' }], dns: { mode: 'fakeip' } };
    writeFileSync(file, JSON.stringify(cfg), { mode: 0o600 });
    return file;
  }

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    veth = (await lab.link(c, s, { cidrA: `${C_VETH}/24`, cidrB: `${S_VETH}/24` })).a.ifname;
    const sIf = `trd${lab.id.slice(-4)}`;
    await startWireguardGo(s, sIf, { privateKey: sKey, listenPort: 51820, address: `${S_TUN}/16`, peers: [{ publicKey: publicKeyOf(cKey), allowedIPs: `${C_TUN}/32` }] });
    await startHttpServer(s, { port: 8080 });
    dnsmasq = await startDnsmasq(s, { listen: S_TUN, records: { [NAME]: S_TUN }, extraArgs: ['--log-queries'] });
    await startDante(s, { listen: S_VETH, port: 1080 });
    const etc = lab.etcOverlayDir(c); // removed by lab.destroy()
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'resolv.conf'), `nameserver ${APP_RESOLVER}\noptions timeout:3 attempts:2\n`);
  }, 60_000);

  afterAll(async () => {
    if (c !== undefined) await c.exec(['rm', '-rf', `/run/tunroute/netns/${c.name}`], { allowFail: true });
    await lab?.destroy();
  });

  it.each([
    ['a domain rule sends the name to the tunnel (fakeip, the rest through dante)', false],
    ['a full tunnel over WireGuard (hijack, AllowedIPs 0.0.0.0/0, no proxy)', true],
  ])('curl by name works when %s: the query went through the tunnel to its DNS, the answer is real, no DNS left c', async (_what, full) => {
    const before = [...dnsmasq.output().stderr.matchAll(/query\[A\] web\.wg\.test from/g)].length;
    const up = await startTunrouteIn(c, ['-c', config(full ? 'wg-dns-full' : 'wg-dns', [S_TUN, 'wg.test'], full)]);
    const cap = await capture(c, veth);
    let ctx = '';
    try {
      const dig = await c.exec(['dig', '+time=3', '+tries=2', NAME, 'A'], { allowFail: true, timeoutMs: 20_000 });
      const curl = await c.exec(['curl', '-sS', '--max-time', '10', '-w', '\n%{remote_ip}', `http://${NAME}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      ctx = `${dig.stdout}\n${curl.stdout}${curl.stderr}\n${up.outputTail(4000)}`;
      process.stdout.write(`[wg-dns] dig ${NAME}: ${/^web\S+\s+\d+\s+IN\s+A\s+\S+$/m.exec(dig.stdout)?.[0] ?? 'no answer'}; curl: exit ${curl.code} ${JSON.stringify(curl.stdout)}\n`);
      expect(dig.stdout, ctx).toMatch(/status: NOERROR/);
      expect(dig.stdout, ctx).toMatch(new RegExp(`^web\\.wg\\.test\\.\\s+\\d+\\s+IN\\s+A\\s+${S_TUN.replace(/\./g, '\\.')}$`, 'm'));
      // Over TCP too (caught by tunroute, asked through the tunnel all the same).
      const tcp = await c.exec(['dig', '+tcp', '+time=3', '+tries=1', NAME, 'A'], { allowFail: true, timeoutMs: 20_000 });
      expect(tcp.stdout, `${tcp.stdout}\n${ctx}`).toMatch(new RegExp(`^web\\.wg\\.test\\.\\s+\\d+\\s+IN\\s+A\\s+${S_TUN.replace(/\./g, '\\.')}$`, 'm'));
      expect(curl.code, ctx).toBe(0);
      expect(curl.stdout, ctx).toBe(`ok\n\n${S_TUN}`);
    } finally {
      const lines = await cap.stop();
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
      for (const l of lines.filter((x) => / IP /.test(x))) {
        const e = endpoints(l);
        if (e === undefined) continue;
        expect(e.sport === 53 || e.dport === 53, l).toBe(false);
      }
      expect(lines.some((l) => /\.51820[ :]/.test(l)), `${lines.join('\n')}\n${ctx}`).toBe(true);
    }
    // dnsmasq (reachable only inside the tunnel) was asked by c's tunnel address.
    const asked = [...dnsmasq.output().stderr.matchAll(/query\[A\] web\.wg\.test from (\S+)/g)].map((m) => m[1]);
    expect(asked.length, dnsmasq.output().stderr).toBeGreaterThan(before);
    for (const who of asked) expect(who).toBe(C_TUN);
  }, 90_000);

  it('a tunnel without DNS: its names get SERVFAIL and one line names the missing setting', async () => {
    const up = await startTunrouteIn(c, ['-c', config('wg-nodns', undefined)]);
    try {
      const dig = await c.exec(['dig', '+time=3', '+tries=1', NAME, 'A'], { allowFail: true, timeoutMs: 20_000 });
      const again = await c.exec(['dig', '+time=3', '+tries=1', `x.${NAME}`, 'A'], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${dig.stdout}\n${up.outputTail(3000)}`;
      expect(dig.stdout, ctx).toMatch(/status: SERVFAIL/);
      expect(again.stdout, ctx).toMatch(/status: SERVFAIL/);
      const lines = logLines(up).filter((l) => typeof l.msg === 'string' && l.msg.includes("tunnel 'office' has no IPv4 DNS server"));
      expect(lines.length, ctx).toBe(1);
      expect(lines[0].msg, ctx).toMatch(/set DNS = in its wg-quick file, or dns: \[ADDRESS\] on outbound 'office'/);
    } finally {
      expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
  }, 90_000);
});
