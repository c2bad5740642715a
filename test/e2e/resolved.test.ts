/**
 * systemd-resolved end to end, with the real resolved (tools/lab/resolved.ts: an unpacked copy
 * in a private mount namespace of the client's, with a D-Bus of the lab's; nothing of the
 * host's is touched):
 *
 *   c (client: resolved, tunroute) ── 10.99.0.0/24 ── s: dante 10.99.0.2:1080,
 *     /etc/resolv.conf: 127.0.0.53                      dnsmasq 10.77.0.53 (on s's lo)
 *     resolved's upstream: 10.77.0.53 (per-link, on c's veth)
 *
 * A split tunnel (`--route 10.66.1.0/24`) with `--dns hijack` and dns.upstream 10.77.0.53:
 * tun0 gets per-link DNS 198.18.0.2 with `~.` (resolvectl status shows it), resolved's upstream
 * is routed into tun0, and a name asked of the stub reaches dnsmasq from dante (10.99.0.2:
 * through tunroute and the proxy), where before `up` it came from the client (10.99.0.1).
 * Then kill -9 and `down`: routes, rules, /etc/resolv.conf, resolved's files and its per-link
 * settings are byte for byte what they were before `up`, and names go the direct way again.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labResolvedMissing, startDante, startDnsmasq, startLabResolved, type LabProcess, type LabResolved, type Namespace } from '../../tools/lab/index.js';
import { CLI, controlPathFor, e2eAvailable, logLines } from '../helpers/e2e.js';
import { outputMatches } from './routes-lab.js';

const missing = labResolvedMissing();
if (missing !== undefined) process.stdout.write(`\n[skipped] systemd-resolved (lab): ${missing}\n`);
const run = e2eAvailable('systemd-resolved: per-link DNS on tun0, restored after kill -9 (lab)') && missing === undefined;

const CLIENT = '10.99.0.1';
const PROXY = '10.99.0.2';
const DNS = '10.77.0.53';

describe.skipIf(!run)('systemd-resolved (lab)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let resolved: LabResolved;
  let dnsmasq: LabProcess;
  let veth: string;
  let stateDir: string;
  let configFile: string;

  beforeAll(async () => {
    lab = await Lab.create({ prefix: 'tr-resolved-' });
    const sysctls = { 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0, 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 };
    c = await lab.addNamespace('c', { sysctls });
    s = await lab.addNamespace('s', { sysctls });
    const cs = await lab.link(c, s, { cidrA: `${CLIENT}/24`, cidrB: `${PROXY}/24` });
    veth = cs.a.ifname;
    await s.exec(['ip', 'addr', 'add', `${DNS}/32`, 'dev', 'lo']);
    await c.exec(['ip', 'route', 'add', 'default', 'via', PROXY, 'dev', veth]);
    // What resolved writes into stub-resolv.conf: the system asks the stub.
    const etc = lab.etcOverlayDir(c); // removed by lab.destroy()
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'resolv.conf'), 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n');
    dnsmasq = await startDnsmasq(s, { listen: DNS, records: { 'site.test': '10.66.1.7' }, extraArgs: ['--log-queries'] });
    await startDante(s, { listen: PROXY, port: 1080 });
    resolved = await startLabResolved(c);
    // resolved's upstream, per link, as DHCP would give it.
    await resolved.exec(['resolvectl', 'dns', veth, DNS]);
    stateDir = join(lab.tmpDir, 'state');
    configFile = join(lab.tmpDir, 'tunroute.yaml');
    writeFileSync(configFile, `dns:\n  mode: hijack\n  upstream: ${DNS}:53\n`);
  }, 90_000);

  afterAll(async () => {
    await lab?.destroy();
  });

  let seq = 0;
  /** A fresh name (resolved caches answers) asked of the stub; the answer and who asked dnsmasq. */
  const ask = async (): Promise<{ answer: string; askers: string[] }> => {
    const name = `q${++seq}-${Date.now().toString(36)}.site.test`;
    const r = await c.exec(['dig', '+time=3', '+tries=2', '+short', '@127.0.0.53', name, 'A'], { allowFail: true, timeoutMs: 20_000 });
    const askers = [...dnsmasq.output().stderr.matchAll(new RegExp(`query\\[A\\] ${name.replace(/\./g, '\\.')} from (\\S+)`, 'g'))].map((m) => m[1]);
    return { answer: r.stdout.trim(), askers };
  };
  const routesAndRules = async (): Promise<string> =>
    (await c.sh('ip route show table all; echo ---; ip -6 route show table all; echo ---; ip rule; echo ---; ip -6 rule; echo ---; ip -o link show | cut -d: -f2')).stdout;
  const resolverState = async (): Promise<string> =>
    (
      await resolved.sh(
        'cat /etc/resolv.conf; echo ---; cat /run/systemd/resolve/resolv.conf; echo ---; cat /run/systemd/resolve/stub-resolv.conf; echo ---; resolvectl dns; echo ---; resolvectl domain; echo ---; resolvectl default-route',
      )
    ).stdout;

  /**
   * Routes, rules and the resolver's state are `before` again, byte for byte: resolved forgets a
   * vanished link at once but rewrites its files a moment later, so it is polled (5 s at most).
   */
  const expectRestored = async (before: { routes: string; resolver: string }): Promise<void> => {
    let after = { routes: '', resolver: '' };
    for (let i = 0; i < 50; i++) {
      after = { routes: await routesAndRules(), resolver: await resolverState() };
      if (after.resolver === before.resolver && after.routes === before.routes) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after.routes).toBe(before.routes);
    expect(after.resolver).toBe(before.resolver);
  };

  it('up: per-link DNS with ~. on tun0, names asked of the stub answered through tunroute; kill -9 + down: all byte for byte as before', async () => {
    const before = { routes: await routesAndRules(), resolver: await resolverState() };
    expect(before.resolver).toContain(`nameserver ${DNS}`); // resolved's upstream file lists it
    const direct = await ask();
    expect(direct.answer).toBe('10.66.1.7');
    expect(direct.askers).toEqual([CLIENT]);

    // --dry-run shows what it will do about resolved.
    const dry = await resolved.exec(['node', CLI, 'up', '--dry-run', '-c', configFile, '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir]);
    expect(dry.stdout).toContain(`+ resolver ${DNS}: routed into tun0 — system resolver (an upstream of systemd-resolved, /run/systemd/resolve/resolv.conf)`);
    expect(dry.stdout).toContain("resolvectl domain tun0 '~.'");

    const control = controlPathFor(c);
    const up = resolved.spawn(['node', CLI, 'up', '-c', configFile, '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir, '--control', control, '--no-watchdog'], { name: 'tunroute' });
    await up.waitForLine(/"msg":"tunroute is up"/, 20_000);
    expect(logLines(up).some((l) => typeof l.msg === 'string' && l.msg.startsWith('systemd-resolved: every query goes into tun0'))).toBe(true);
    const status = (await resolved.exec(['resolvectl', 'status', 'tun0'])).stdout;
    expect(status).toMatch(/DNS Servers: 198\.18\.0\.2/);
    expect(status).toMatch(/DNS Domain: ~\./);
    expect(status).toContain('+DefaultRoute');
    expect((await c.exec(['ip', 'route', 'get', DNS])).stdout).toContain('dev tun0');

    const tunneled = await ask();
    expect(tunneled.answer).toBe('10.66.1.7');
    expect(tunneled.askers.length).toBeGreaterThan(0);
    expect(tunneled.askers.every((a) => a === PROXY)).toBe(true); // through tunroute and dante, never the client itself

    // verify: the stub's query and the upstream's reach tunroute, and resolved holds tun0's DNS.
    const v = await resolved.exec(['node', CLI, 'verify', '--control', control, '--state-dir', stateDir], { allowFail: true });
    process.stdout.write(`\n[verify] split tunnel, systemd-resolved:\n${v.stdout}`);
    expect(v.stdout).toMatch(/^ok\s+dns 127\.0\.0\.53:53\s+the query reached tunroute on tun0$/m);
    expect(v.stdout).toMatch(new RegExp(`^ok\\s+dns ${DNS.replace(/\./g, '\\.')}:53\\s+the query reached tunroute on tun0$`, 'm'));
    expect(v.stdout).toMatch(/^ok\s+systemd-resolved tun0\s+per-link DNS 198\.18\.0\.2 with routing domain ~\.: resolved sends every query into tun0$/m);

    expect(await up.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    const down = await resolved.exec(['node', CLI, 'down', '--state-dir', stateDir]);
    expect(down.stdout).toMatch(/^tun0: removed the \d+ route\/rule changes/);
    // resolved forgets a vanished link at once, but rewrites its files a moment later.
    await expectRestored(before);
    const again = await ask();
    expect(again.answer).toBe('10.66.1.7');
    expect(again.askers).toEqual([CLIENT]);
  }, 120_000);

  it('kill -9 with the watchdog: it restores routes, rules and the resolver settings byte for byte', async () => {
    const before = { routes: await routesAndRules(), resolver: await resolverState() };
    const up = resolved.spawn(['node', CLI, 'up', '-c', configFile, '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir, '--control', controlPathFor(c)], { name: 'tunroute-watchdog' });
    await up.waitForLine(/"msg":"tunroute is up"/, 20_000);
    expect((await resolved.exec(['resolvectl', 'domain', 'tun0'])).stdout).toContain('~.');
    await up.stop('SIGKILL');
    await outputMatches(up, /the watchdog restored the network/, 15_000); // the watchdog writes on tunroute's stderr
    await expectRestored(before);
    expect((await ask()).askers).toEqual([CLIENT]);
  }, 120_000);

  it('--dns fakeip: a name asked of the stub gets a fake address from tunroute, no query reaches dnsmasq; kill -9 + down restores all', async () => {
    const before = { routes: await routesAndRules(), resolver: await resolverState() };
    const up = resolved.spawn(['node', CLI, 'up', '-c', configFile, '--dns', 'fakeip', '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir, '--control', controlPathFor(c), '--no-watchdog'], { name: 'tunroute-fakeip' });
    await up.waitForLine(/"msg":"tunroute is up"/, 20_000);
    const fake = await ask();
    expect(fake.answer).toMatch(/^198\.(18|19)\.\d+\.\d+$/);
    expect(fake.answer).not.toBe('198.18.0.2'); // the DNS address on tun0 is never handed out
    expect(fake.askers).toEqual([]);
    await up.stop('SIGKILL');
    expect((await resolved.exec(['node', CLI, 'down', '--state-dir', stateDir])).code).toBe(0);
    await expectRestored(before);
  }, 120_000);

  it('SIGTERM after the privilege drop: resolved refuses the unprivileged revert, the settings go with the device, all byte for byte', async () => {
    const before = { routes: await routesAndRules(), resolver: await resolverState() };
    const up = resolved.spawn(['node', CLI, 'up', '-c', configFile, '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir, '--control', controlPathFor(c), '--no-watchdog', '--log-level', 'debug'], { name: 'tunroute-term' });
    await up.waitForLine(/"msg":"tunroute is up"/, 20_000);
    expect(logLines(up).some((l) => l.msg === 'gave up root: carrying packets as tunroute with CAP_NET_ADMIN only')).toBe(true);
    expect((await resolved.exec(['resolvectl', 'dns', 'tun0'])).stdout).toContain('198.18.0.2');
    expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    expect(logLines(up).some((l) => typeof l.msg === 'string' && /^systemd-resolved did not revert tun0; its per-link DNS goes with the device$/.test(l.msg))).toBe(true);
    await expectRestored(before);
  }, 120_000);

  it('without resolvectl on PATH: one warning naming the fix, resolved\'s upstream still routed, and SIGTERM gives it all back', async () => {
    const before = { routes: await routesAndRules(), resolver: await resolverState() };
    const noResolvectl = '/usr/sbin:/usr/bin:/sbin:/bin';
    const up = c.spawn(
      ['nsenter', '-t', String(resolved.proc.pid), '-m', '--', 'env', `PATH=${noResolvectl}`, 'node', CLI, 'up', '-c', configFile, '--proxy', `socks5://${PROXY}:1080`, '--route', '10.66.1.0/24', '--state-dir', stateDir, '--control', controlPathFor(c), '--no-watchdog'],
      { name: 'tunroute-no-resolvectl' },
    );
    await up.waitForLine(/"msg":"tunroute is up"/, 20_000);
    const warns = logLines(up).filter((l) => typeof l.msg === 'string' && l.msg.includes('resolvectl is not on PATH'));
    expect(warns).toHaveLength(1);
    expect(warns[0].msg).toContain('install resolvectl (Debian: apt-get install systemd-resolved)');
    expect((await c.exec(['ip', 'route', 'get', DNS])).stdout).toContain('dev tun0');
    expect((await resolved.exec(['resolvectl', 'dns', 'tun0'], { allowFail: true })).stdout).not.toContain('198.18.0.2');
    expect(await up.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    await expectRestored(before);
  }, 120_000);
});
