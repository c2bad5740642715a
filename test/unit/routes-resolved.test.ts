/**
 * systemd-resolved (routes/resolved.ts): the stub in resolv.conf, resolved's upstream file read
 * only when no ordinary user could have written it, the device's DNS address, the plan (its
 * upstreams routed, per-link DNS with `~.`, one warning without resolvectl), the journal entry,
 * and its undo by `down` against a fake resolvectl on PATH that records its arguments.
 */
import { accessSync, chmodSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { loadConfig, type FlagValues } from '../../src/config/load.js';
import type { HostProbe, RouteEnv } from '../../src/routes/host.js';
import { RouteManager } from '../../src/routes/manager.js';
import { describePlan, planRoutes, toIpCommand, type RoutePlan } from '../../src/routes/plan.js';
import {
  linkDnsAddress,
  parseResolvectlLinkLine,
  pointResolvedAtLink,
  readResolvedUpstreams,
  readSystemFile,
  resolvectlOnPath,
  resolvedStubOf,
  revertResolvedLink,
} from '../../src/routes/resolved.js';
import { parseResolvConf } from '../../src/routes/resolv-conf.js';
import { createJournal, journalPath, readJournal } from '../../src/routes/journal.js';
import { cleanupJournals } from '../../src/routes/teardown.js';
import type { IpRunner } from '../../src/routes/apply.js';
import { explainName } from '../../src/routes/why-name.js';
import { useFakeTools } from '../helpers/fake-tools.js';
import { upSummary } from '../../src/up-summary.js';
import { parseCidr, u32ToIp } from '../../src/net/ipv4.js';

function memLog(): { log: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { log, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('systemd-resolved: detection and parsing', () => {
  it('the stub is 127.0.0.53 or 127.0.0.54 in /etc/resolv.conf; another loopback address is not resolved', () => {
    expect(resolvedStubOf(parseResolvConf('# managed by resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n'))).toBe('127.0.0.53');
    expect(resolvedStubOf(parseResolvConf('nameserver 127.0.0.54\n'))).toBe('127.0.0.54');
    expect(resolvedStubOf(parseResolvConf('nameserver 127.0.1.1\nnameserver 10.0.0.1\n'))).toBeUndefined();
    expect(resolvedStubOf(parseResolvConf('; nameserver 127.0.0.53\n'))).toBeUndefined();
    expect(resolvedStubOf(undefined)).toBeUndefined();
  });

  it('the DNS address on the device: the first host address of its subnet that is not its own', () => {
    const at = (c: string): string | undefined => {
      const a = linkDnsAddress(parseCidr(c)!);
      return a === undefined ? undefined : u32ToIp(a);
    };
    expect(at('198.18.0.1/15')).toBe('198.18.0.2');
    expect(at('10.8.0.5/24')).toBe('10.8.0.1');
    expect(at('10.8.0.1/30')).toBe('10.8.0.2');
    expect(at('10.8.0.1/31')).toBeUndefined();
    expect(at('10.8.0.1/32')).toBeUndefined();
  });

  it('`resolvectl dns DEV` / `domain DEV` lines', () => {
    expect(parseResolvectlLinkLine('Link 5 (tun0): 198.18.0.2\n')).toEqual(['198.18.0.2']);
    expect(parseResolvectlLinkLine('Link 5 (tun0): ~. corp.example\n')).toEqual(['~.', 'corp.example']);
    expect(parseResolvectlLinkLine('Link 5 (tun0):\n')).toEqual([]);
    expect(parseResolvectlLinkLine('Global: 1.1.1.1\n')).toEqual([]);
  });

  it('resolvectl on PATH, or not', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunroute-rc-'));
    try {
      expect(resolvectlOnPath({ path: dir })).toBe(false);
      writeFileSync(join(dir, 'resolvectl'), '#!/bin/sh\n');
      expect(resolvectlOnPath({ path: dir })).toBe(false); // not executable
      chmodSync(join(dir, 'resolvectl'), 0o755);
      expect(resolvectlOnPath({ path: `/nonexistent:${dir}` })).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A dir whose every parent is root's and not writable by others (/run), when this process may make one there. */
function systemDir(): string | undefined {
  try {
    accessSync('/run', constants.W_OK);
    return mkdtempSync('/run/tunroute-test-resolved-');
  } catch {
    return undefined;
  }
}

describe('systemd-resolved: its upstream file is read only when no ordinary user could write it', () => {
  const sys = systemDir();
  afterEach(() => {
    if (sys !== undefined) for (const f of ['resolv.conf', 'link', 'sub']) rmSync(join(sys, f), { recursive: true, force: true });
  });
  afterAll(() => {
    if (sys !== undefined) rmSync(sys, { recursive: true, force: true });
  });
  if (sys === undefined) process.stdout.write('\n[skipped] the trusted-file cases need a dir of root\'s under /run (run as root)\n');

  it.skipIf(sys === undefined)('a root-owned 0644 file under root-owned dirs: its nameservers, never a loopback one', () => {
    const f = join(sys!, 'resolv.conf');
    writeFileSync(f, '# This is /run/systemd/resolve/resolv.conf\nnameserver 10.99.0.3\nnameserver 127.0.0.1\nnameserver fe80::1%eth0\nsearch lan\n', { mode: 0o644 });
    chmodSync(f, 0o644);
    expect(readResolvedUpstreams(f)).toEqual({ upstreams: { ipv4: ['10.99.0.3'], ipv6: ['fe80::1%eth0'] } });
  });

  it.skipIf(sys === undefined)('refused: group- or world-writable, a symbolic link, missing, not a regular file, too large', () => {
    const f = join(sys!, 'resolv.conf');
    writeFileSync(f, 'nameserver 10.99.0.3\n');
    chmodSync(f, 0o666);
    expect(readResolvedUpstreams(f)).toMatchObject({ upstreams: { ipv4: [] }, why: expect.stringMatching(/writable by group or others \(mode 0666\)/) as unknown });
    chmodSync(f, 0o644);
    symlinkSync(f, join(sys!, 'link'));
    expect(readResolvedUpstreams(join(sys!, 'link')).why).toMatch(/is a symbolic link/);
    expect(readResolvedUpstreams(join(sys!, 'none')).why).toMatch(/does not exist \(is systemd-resolved running\?\)/);
    mkdirSync(join(sys!, 'sub'));
    expect(readSystemFile(join(sys!, 'sub'), 100)).toEqual({ why: `${join(sys!, 'sub')} is not a regular file` });
    expect(readSystemFile(f, 4)).toEqual({ why: `${f} is larger than 4 bytes` });
  });

  it('refused: a file in a dir others may write (/tmp)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunroute-rs-'));
    try {
      writeFileSync(join(dir, 'resolv.conf'), 'nameserver 10.99.0.3\n');
      const r = readResolvedUpstreams(join(dir, 'resolv.conf'));
      expect(r.upstreams.ipv4).toEqual([]);
      expect(r.why).toMatch(/writable by group or others/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const PROXY = 'socks5://203.0.113.5:1080';
const STUB = { ipv4: ['127.0.0.53'], ipv6: [] };
const env = (over: Partial<RouteEnv> = {}): RouteEnv => ({
  network: { defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false },
  upstreams: [{ name: 'proxy', kind: 'socks5', host: '203.0.113.5', port: 1080, addrs: ['203.0.113.5'] }],
  files: new Map(),
  ...over,
});
const plan = (flags: FlagValues, e: Partial<RouteEnv> = {}): RoutePlan => planRoutes(loadConfig({ flags: { proxy: PROXY, ...flags } }), env(e));

describe('systemd-resolved in the plan', () => {
  const resolved = { upstreams: { ipv4: ['192.168.1.1', '10.0.0.53'], ipv6: [] }, resolvectl: true };

  it('a split tunnel with hijack: resolved\'s upstreams routed (/32, even in the LAN), per-link DNS on the device with ~.', () => {
    const p = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved });
    expect(p.changes.map((c) => toIpCommand(c, 'apply'))).toEqual([
      'ip route add 10.0.0.53/32 dev tun0 proto 211',
      'ip route add 10.1.0.0/16 dev tun0 proto 211',
      'ip route add 192.168.1.1/32 dev tun0 proto 211',
    ]);
    expect(p.dns.resolvers.map((r) => [r.ip, r.routed])).toEqual([
      ['127.0.0.53', false],
      ['192.168.1.1', true],
      ['10.0.0.53', true],
    ]);
    expect(p.dns.resolvers[0].why).toMatch(/systemd-resolved's stub/);
    expect(p.dns.resolvers[1].why).toMatch(/an upstream of systemd-resolved, \/run\/systemd\/resolve\/resolv\.conf/);
    expect(p.dns.resolved).toEqual({ stub: '127.0.0.53', link: { dev: 'tun0', dns: '198.18.0.2' }, warnings: [] });
    const text = describePlan(p);
    expect(text).toContain('systemd-resolved (127.0.0.53): every query goes into tun0, per-link DNS 198.18.0.2 with routing domain ~.');
    expect(text).toContain("    resolvectl dns tun0 198.18.0.2\n    resolvectl domain tun0 '~.'\n    resolvectl default-route tun0 yes");
    expect(text).toContain('+ resolver 10.0.0.53: routed into tun0');
  });

  it('the start summary says it in one line', () => {
    const c = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'] } });
    expect(upSummary(c, planRoutes(c, env({ resolvers: STUB, resolved }))).lines).toContain('systemd-resolved (127.0.0.53): every query goes into tun0 (per-link DNS 198.18.0.2, routing domain ~.)');
    expect(upSummary(c, planRoutes(c, env({ resolvers: STUB, resolved: { ...resolved, resolvectl: false } }))).lines).toContain(
      'systemd-resolved (127.0.0.53): no per-link DNS on tun0 (resolvectl is not on PATH); only its upstream servers are routed into it',
    );
  });

  it('why NAME says how the system\'s queries reach tunroute', () => {
    const p = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved });
    const a = explainName('tun0', p.dns, { name: 'www.example.com', proto: 'tcp', port: 443 });
    expect(a.text).toContain('systemd-resolved: the system asks 127.0.0.53, which sends every query into tun0 (per-link DNS 198.18.0.2, routing domain ~.)');
  });

  it('the device\'s own DNS address, which resolved lists while tunroute runs (a reload), is no upstream', () => {
    const p = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved: { ...resolved, upstreams: { ipv4: ['10.0.0.53', '198.18.0.2'], ipv6: [] } } });
    expect(p.dns.resolvers.map((r) => r.ip)).toEqual(['127.0.0.53', '10.0.0.53']);
  });

  it('a resolver in both lists is routed once; another tun address gives another DNS address', () => {
    const p = plan({ dns: 'fakeip', route: ['10.1.0.0/16'], address: '10.8.0.1/24' }, { resolvers: { ipv4: ['127.0.0.53', '10.0.0.53'], ipv6: [] }, resolved });
    expect(p.dns.resolvers.map((r) => r.ip)).toEqual(['127.0.0.53', '10.0.0.53', '192.168.1.1']);
    expect(p.dns.resolved?.link).toEqual({ dev: 'tun0', dns: '10.8.0.2' });
  });

  it('no resolvectl: one warning sentence naming the fix, the upstreams still routed, no per-link DNS', () => {
    const p = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved: { ...resolved, resolvectl: false } });
    expect(p.dns.resolved?.link).toBeUndefined();
    expect(p.dns.resolved?.warnings).toHaveLength(1);
    expect(p.dns.resolved?.warnings[0]).toMatch(/^\/etc\/resolv\.conf names systemd-resolved's stub 127\.0\.0\.53, but resolvectl is not on PATH, .*: install resolvectl \(Debian: apt-get install systemd-resolved\), or point \/etc\/resolv\.conf at a real resolver\.$/);
    expect(p.notes).toContain(p.dns.resolved?.warnings[0]);
    expect(p.dns.resolvers.filter((r) => r.routed).map((r) => r.ip)).toEqual(['192.168.1.1', '10.0.0.53']);
    expect(describePlan(p)).toContain('systemd-resolved (127.0.0.53): no per-link DNS on tun0 — resolvectl is not on PATH');
  });

  it('resolved\'s file unreadable: said in a note; the device still gets per-link DNS', () => {
    const p = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved: { upstreams: { ipv4: [], ipv6: [] }, why: '/run/systemd/resolve/resolv.conf does not exist', resolvectl: true } });
    expect(p.dns.resolved?.link).toEqual({ dev: 'tun0', dns: '198.18.0.2' });
    expect(p.notes.join('\n')).toMatch(/its upstream servers are unknown \(\/run\/systemd\/resolve\/resolv\.conf does not exist\)/);
  });

  it('a device address with no room for a DNS address (the schema refuses one; planned defensively): said, nothing planned', () => {
    const c = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'] } });
    const p = planRoutes({ ...c, tun: { ...c.tun, address: parseCidr('10.8.0.1/32')! } }, env({ resolvers: STUB, resolved }));
    expect(p.dns.resolved?.link).toBeUndefined();
    expect(p.dns.resolved?.linkOff).toMatch(/no room/);
    expect(p.notes.join('\n')).toMatch(/give tun\.address a \/30 or shorter prefix/);
  });

  it('nothing about resolved with dns off, routeSystemResolvers false, or a resolv.conf without the stub', () => {
    expect(plan({ route: ['10.1.0.0/16'] }, { resolvers: STUB, resolved }).dns.resolved).toBeUndefined();
    const c = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'] } });
    const off = planRoutes({ ...c, dns: { ...c.dns, routeSystemResolvers: false } }, env({ resolvers: STUB, resolved }));
    expect(off.dns.resolved).toBeUndefined();
    expect(off.dns.resolvers.every((r) => !r.routed)).toBe(true);
    const plain = plan({ dns: 'hijack', route: ['10.1.0.0/16'] }, { resolvers: { ipv4: ['10.0.0.53'], ipv6: [] }, resolved });
    expect(plain.dns.resolved).toBeUndefined();
    expect(plain.dns.resolvers.map((r) => r.ip)).toEqual(['10.0.0.53']);
  });
});

describe('systemd-resolved: resolvectl, the journal and down (fake resolvectl)', () => {
  const tools = useFakeTools('tunroute-resolved-');
  const fakeResolvectl = (fail: boolean): void => tools.install('resolvectl', [fail ? 'echo "Failed to set DNS configuration: Access denied" >&2; exit 1' : 'exit 0']);

  it('points resolved at the device: dns, ~., default-route, in that order', async () => {
    fakeResolvectl(false);
    const { log, lines } = memLog();
    expect(await pointResolvedAtLink('tun0', '198.18.0.2', log, { path: tools.path })).toBe(true);
    expect(tools.called()).toEqual(['dns tun0 198.18.0.2', 'domain tun0 ~.', 'default-route tun0 yes']);
    expect(lines().some((l) => l.level === 30 && String(l.msg).includes('every query goes into tun0'))).toBe(true);
  });

  it('a refusal (or no resolvectl) is one warning, not a crash', async () => {
    fakeResolvectl(true);
    const { log, lines } = memLog();
    expect(await pointResolvedAtLink('tun0', '198.18.0.2', log, { path: tools.path })).toBe(false);
    expect(tools.called()).toEqual(['dns tun0 198.18.0.2']);
    const warns = lines().filter((l) => l.level === 40);
    expect(warns).toHaveLength(1);
    expect(warns[0].msg).toMatch(/^systemd-resolved did not take per-link DNS on tun0 \(Failed to set DNS configuration: Access denied\), .*: check that systemd-resolved runs, then restart tunroute$/);
    const none = memLog();
    expect(await pointResolvedAtLink('tun0', '198.18.0.2', none.log, { path: `${tools.dir}/empty` })).toBe(false);
    expect(String(none.lines().find((l) => l.level === 40)?.msg)).toContain('(resolvectl is not installed)');
  });

  it('revert only while the link exists (a device that is gone took its settings with it)', async () => {
    fakeResolvectl(false);
    const { log } = memLog();
    expect(await revertResolvedLink('tun0', log, { path: tools.path, exists: () => Promise.resolve(false) })).toBe('gone');
    expect(tools.called()).toEqual([]);
    expect(await revertResolvedLink('tun0', log, { path: tools.path, exists: () => Promise.resolve(true) })).toBe('reverted');
    expect(tools.called()).toEqual(['revert tun0']);
    fakeResolvectl(true);
    expect(await revertResolvedLink('tun0', log, { path: tools.path, exists: () => Promise.resolve(true) })).toBe('failed');
  });

  it('the journal keeps the entry (checked: an interface name and an IPv4 address); down reverts a link that exists', async () => {
    fakeResolvectl(false);
    const stateDir = join(tools.dir, 'state');
    const file = journalPath(stateDir, 'tun0');
    const base = { version: 1 as const, tool: 'tunroute' as const, dev: 'tun0', pid: 999_999_999 % 4_000_000, pidStart: '1', startedAt: 'x', killSwitch: false, changes: [] };
    createJournal(file, { ...base, resolved: { dev: 'tun0', dns: '198.18.0.2' } });
    expect(readJournal(file)?.resolved).toEqual({ dev: 'tun0', dns: '198.18.0.2' });
    const runner: IpRunner = { batch: () => Promise.resolve({ ok: true, stderr: '' }) };
    const { log } = memLog();
    const out = await cleanupJournals({ stateDir, runner, log, live: 'stop', ownerAlive: () => false, resolvectl: { path: tools.path, exists: () => Promise.resolve(true) } });
    expect(out.map((e) => e.outcome)).toEqual(['removed']);
    expect(tools.called()).toEqual(['revert tun0']);
    expect(existsSync(file)).toBe(false);

    mkdirSync(join(stateDir, 'dev-tun0'), { recursive: true, mode: 0o755 });
    for (const bad of [{ dev: 'tun0; rm', dns: '198.18.0.2' }, { dev: 'tun0', dns: '198.18.0.2 -x' }, { dev: 'tun0', dns: '::1' }]) {
      writeFileSync(file, JSON.stringify({ ...base, resolved: bad }));
      expect(() => readJournal(file)).toThrow(/damaged/);
    }
  });

  it('after kill -9 the device is gone: down reverts nothing, and says nothing of it', async () => {
    fakeResolvectl(false);
    const stateDir = join(tools.dir, 'state');
    const file = journalPath(stateDir, 'tun0');
    createJournal(file, { version: 1, tool: 'tunroute', dev: 'tun0', pid: 999_999_999 % 4_000_000, pidStart: '1', startedAt: 'x', killSwitch: false, changes: [], resolved: { dev: 'tun0', dns: '198.18.0.2' } });
    const runner: IpRunner = { batch: () => Promise.resolve({ ok: true, stderr: '' }) };
    const { log } = memLog();
    await cleanupJournals({ stateDir, runner, log, live: 'stop', ownerAlive: () => false, resolvectl: { path: tools.path, exists: () => Promise.resolve(false) } });
    expect(tools.called()).toEqual([]);
  });
});

describe('systemd-resolved: RouteManager (fake host, runner and resolvectl)', () => {
  const tools = useFakeTools('tunroute-resolved-m-');

  /** A resolvectl that records its arguments, and whether the journal named the link when it ran. */
  function fakeResolvectl(journal: string): void {
    tools.installScript('resolvectl', [`if grep -q '"resolved":{"dev":"tun0","dns":"198.18.0.2"}' "${journal}" 2>/dev/null; then j=journaled; else j=unjournaled; fi`, `echo "$* ($j)" >> "${tools.calls}"`, 'exit 0']);
  }
  const host = (resolvectl: boolean): HostProbe => ({
    network: () => Promise.resolve({ defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false }),
    resolve: () => Promise.resolve(['203.0.113.5']),
    readFile: () => Promise.reject(new Error('no files here')),
    systemResolvers: () => Promise.resolve(STUB),
    resolved: () => Promise.resolve({ upstreams: { ipv4: ['10.0.0.53'], ipv6: [] }, resolvectl }),
    tableInUse: () => Promise.resolve(undefined),
    routeGet: (a) => Promise.resolve(`${a} via 192.168.1.1 dev eth0`),
  });
  const runner: IpRunner = { batch: () => Promise.resolve({ ok: true, failures: 0, stderr: '' }) };

  it('journals the link first, then points resolved at it; stop reverts it while it exists', async () => {
    const file = journalPath(join(tools.dir, 'state'), 'tun0');
    fakeResolvectl(file);
    const config = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'], stateDir: join(tools.dir, 'state'), watchdog: false } });
    const { log, lines } = memLog();
    const m = await RouteManager.prepare({ config, log, runner, host: host(true), watchRoutes: false, networkManager: false, resolvectl: { path: tools.path, exists: () => Promise.resolve(true) } });
    expect(m.plan.changes.map((c) => toIpCommand(c, 'apply'))).toContain('ip route add 10.0.0.53/32 dev tun0 proto 211');
    await m.apply();
    expect(tools.called()).toEqual(['dns tun0 198.18.0.2 (journaled)', 'domain tun0 ~. (journaled)', 'default-route tun0 yes (journaled)']);
    expect(readJournal(file)?.resolved).toEqual({ dev: 'tun0', dns: '198.18.0.2' });
    // A reload cannot change resolved's settings (root is gone by then): it says so, and keeps them journaled.
    await m.reconfigure(loadConfig({ flags: { proxy: PROXY, route: ['10.1.0.0/16'], stateDir: join(tools.dir, 'state'), watchdog: false } }));
    expect(lines().filter((l) => l.level === 40).map((l) => String(l.msg))).toEqual(["the new config changes systemd-resolved's per-link DNS on tun0, which only a restart applies: restart tunroute"]);
    expect(readJournal(file)?.resolved).toEqual({ dev: 'tun0', dns: '198.18.0.2' });
    await m.stop();
    expect(tools.called().slice(3)).toEqual(['revert tun0 (journaled)']);
    expect(existsSync(file)).toBe(false);
  });

  it('no resolvectl: the warning is logged once at apply, nothing journaled for resolved', async () => {
    const config = loadConfig({ flags: { proxy: PROXY, dns: 'hijack', route: ['10.1.0.0/16'], stateDir: join(tools.dir, 'state'), watchdog: false } });
    const { log, lines } = memLog();
    const m = await RouteManager.prepare({ config, log, runner, host: host(false), watchRoutes: false, networkManager: false, resolvectl: { path: join(tools.dir, 'empty') } });
    await m.apply();
    const warns = lines().filter((l) => l.level === 40).map((l) => String(l.msg));
    expect(warns).toHaveLength(1);
    expect(warns[0]).toContain('resolvectl is not on PATH');
    expect(readJournal(journalPath(join(tools.dir, 'state'), 'tun0'))?.resolved).toBeUndefined();
    await m.stop();
  });
});
