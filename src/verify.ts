/**
 * `tunroute verify`: does traffic from this host take the path the running instance's plan says?
 * Not read off the route table, but tried: marked probes are sent the way any app sends, and the
 * instance says which of them reached it (control command `probe`, relay/probes.ts):
 *
 *   - TCP to an address the plan tunnels: must reach tunroute (it answers RST, nothing leaves);
 *   - TCP to addresses the plan keeps direct (an upstream, the default gateway): must not;
 *   - a DNS query for a unique name to each resolver of /etc/resolv.conf (and, when that names
 *     systemd-resolved's stub, to each upstream of resolved the plan routes): must reach
 *     tunroute (answered NXDOMAIN there), or the names the system looks up leave outside the
 *     tunnel; with the stub, resolved must also hold the device's per-link DNS the plan set
 *     (`resolvectl dns/domain DEV`, routes/resolved.ts);
 *   - IPv6 to the discard-only prefix 100::/64 (RFC 6666): in a full tunnel the guard must refuse
 *     it at once; elsewhere the plan leaves IPv6 alone, and verify says so.
 *
 * One line per check; a leak names its cause (the kernel's own route for the probe).
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { queryControl } from './control/client.js';
import { DNS_TYPE_A, DnsMessage, buildDnsQuery } from './dns/message.js';
import { TunrouteError } from './errors.js';
import { cidrContains, ipToU32, parseCidr, u32ToIp } from './net/ipv4.js';
import { hostProbe, type HostProbe } from './routes/host.js';
import { listStateFiles, readJournal, type StoredJournal } from './routes/journal.js';
import { parseResolvectlLinkLine, resolvectl, ROUTE_ALL_DOMAIN, type ResolvectlOptions } from './routes/resolved.js';

export interface VerifyOptions {
  control: string;
  stateDir: string;
  /** How long one probe may take (default 1500 ms). */
  timeoutMs?: number;
  host?: HostProbe;
  /** How resolvectl is found (tests). */
  resolvectl?: ResolvectlOptions;
}

export interface VerifyCheck {
  ok: boolean;
  /** What was probed: "tcp 198.51.100.1:9 (tunneled)". */
  what: string;
  /** What happened, and for a leak, why. */
  detail: string;
}

/** Addresses that are never anyone's (RFC 5737): a tunneled probe goes to one of these when the plan routes it. */
const DOC_ADDRESSES = ['198.51.100.1', '203.0.113.1', '192.0.2.1'];
const PROBE_PORT = 9; // discard
const V6_DISCARD = '100::1'; // RFC 6666 discard-only prefix

/** The routes the journal says enter the device, and what it keeps direct (with why). */
function planOf(j: StoredJournal): { routes: Array<{ addr: number; prefix: number }>; direct: Array<[string, string]>; ipv6: string } {
  const routes: Array<{ addr: number; prefix: number }> = [];
  for (const c of j.changes) {
    if (c.op !== 'route' || c.family !== 4 || c.type !== 'unicast' || c.dev !== j.dev) continue;
    const p = parseCidr(c.cidr);
    if (p !== undefined) routes.push(p);
  }
  return { routes, direct: j.explain?.exclude ?? [], ipv6: j.explain?.ipv6 ?? 'untouched' };
}

function tunneledTarget(routes: ReadonlyArray<{ addr: number; prefix: number }>): string | undefined {
  const inside = (a: string): boolean => routes.some((r) => cidrContains(r, ipToU32(a)!));
  const doc = DOC_ADDRESSES.find(inside);
  if (doc !== undefined) return doc;
  const r = routes[0];
  return r === undefined ? undefined : u32ToIp((r.addr + (r.prefix < 32 ? 1 : 0)) >>> 0);
}

/** Connect from a port of our own; resolves with how it ended (never rejects). */
function tcpProbe(host: string, port: number, localPort: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port, localPort, family: host.includes(':') ? 6 : 4 });
    const done = (how: string): void => {
      clearTimeout(t);
      s.destroy();
      resolve(how);
    };
    const t = setTimeout(() => done('timeout'), timeoutMs);
    s.once('connect', () => done('connected'));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
  });
}

function dnsProbe(server: string, name: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    const done = (how: string): void => {
      clearTimeout(t);
      sock.close();
      resolve(how);
    };
    const t = setTimeout(() => done('no answer'), timeoutMs);
    sock.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    sock.on('message', (m) => {
      const r = DnsMessage.parse(new Uint8Array(m));
      done(r === undefined ? 'a malformed answer' : `rcode ${r.rcode}`);
    });
    sock.send(buildDnsQuery(name, DNS_TYPE_A, randomBytes(2).readUInt16BE(0)), 53, server);
  });
}

/** A free local port for a probe: the kernel picks one; we release it and bind it at connect. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(0, () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

export async function verifyRunning(opts: VerifyOptions): Promise<VerifyCheck[]> {
  const timeoutMs = opts.timeoutMs ?? 1500;
  const host = opts.host ?? hostProbe();
  const status = await queryControl(opts.control, 'status');
  const dev = status.device.name;
  const files = listStateFiles(opts.stateDir, dev);
  const journal = files.journals[0] === undefined ? undefined : readJournal(files.journals[0].path);
  if (journal === undefined) {
    throw new TunrouteError('TR_CONTROL', `No route journal for ${dev} in ${opts.stateDir}, so verify cannot tell what the plan is: pass the --state-dir the running tunroute uses.`);
  }
  const plan = planOf(journal);
  const out: VerifyCheck[] = [];
  const route = async (addr: string): Promise<string> => (await host.routeGet(addr)).replace(/\s+/g, ' ').trim();

  // TCP: one tunneled destination, and what the plan keeps direct (upstreams, the gateway).
  const tunneled = tunneledTarget(plan.routes);
  // An upstream's own address, and the LAN (its first address, the usual gateway).
  const upstream = plan.direct.find(([c, why]) => c.endsWith('/32') && why.startsWith('upstream '));
  const lan = plan.direct.find(([, why]) => why.startsWith('LAN on ') || why.startsWith('gateway of the default route'));
  const direct = [upstream, lan]
    .filter((e): e is [string, string] => e !== undefined)
    .map(([c, why]) => {
      const p = parseCidr(c)!;
      return { addr: u32ToIp((p.addr + (p.prefix < 31 ? 1 : 0)) >>> 0), why };
    });
  const probes = [...(tunneled === undefined ? [] : [{ addr: tunneled, want: true, why: 'routed into the device' }]), ...direct.map((d) => ({ addr: d.addr, want: false, why: d.why }))];
  const ports = await Promise.all(probes.map(() => freePort()));
  await queryControl(opts.control, 'probe', { arm: { tcpSrcPorts: ports, ttlMs: 10_000 } });
  const results = await Promise.all(probes.map((p, i) => tcpProbe(p.addr, PROBE_PORT, ports[i], timeoutMs)));
  const seen = new Set((await queryControl(opts.control, 'probe')).tcp);
  for (let i = 0; i < probes.length; i++) {
    const p = probes[i];
    const arrived = seen.has(ports[i]);
    const what = `tcp ${p.addr}:${PROBE_PORT} (${p.want ? 'tunneled' : 'direct'})`;
    if (arrived === p.want) out.push({ ok: true, what, detail: p.want ? `reached tunroute on ${dev}` : `went direct, as the plan keeps it (${p.why})` });
    else if (p.want) out.push({ ok: false, what, detail: `LEAK: never reached tunroute (${results[i]}); the kernel routes it: ${await route(p.addr)}` });
    else out.push({ ok: false, what, detail: `entered ${dev} although the plan keeps it direct (${p.why}): another route or rule sends it there` });
  }
  if (tunneled === undefined) out.push({ ok: true, what: 'tcp (tunneled)', detail: 'the plan routes nothing into the device' });

  // DNS: every resolver the system uses (the first three, as the libc resolver does), and the
  // upstreams of systemd-resolved that the plan routes (the first three).
  const resolvedUpstreams = (journal.explain?.dns?.resolvers ?? []).filter((r) => r.routed && r.why.includes('systemd-resolved')).map((r) => r.ip);
  const servers = [...((await host.systemResolvers?.())?.ipv4 ?? []).slice(0, 3), ...resolvedUpstreams.slice(0, 3)].filter((a, i, all) => all.indexOf(a) === i);
  if (servers.length === 0) out.push({ ok: true, what: 'dns', detail: 'no IPv4 nameserver in /etc/resolv.conf' });
  for (const server of servers) {
    const name = `tr-verify-${randomBytes(6).toString('hex')}.tunroute.example`;
    await queryControl(opts.control, 'probe', { arm: { tcpSrcPorts: [], dnsName: name, ttlMs: 10_000 } });
    const how = await dnsProbe(server, name, timeoutMs);
    const arrived = (await queryControl(opts.control, 'probe')).dns > 0;
    const what = `dns ${server}:53`;
    if (arrived) out.push({ ok: true, what, detail: `the query reached tunroute on ${dev}` });
    else {
      out.push({
        ok: false,
        what,
        detail: `LEAK: the query never reached tunroute (${how}), so names this host looks up leave outside the tunnel; the kernel routes it: ${await route(server)}`,
      });
    }
  }

  // systemd-resolved: the device's per-link DNS, as the plan set it.
  const link = journal.explain?.dns?.resolved?.link;
  if (link !== undefined) out.push(await resolvedCheck(link, opts.resolvectl));

  // IPv6: refused at once by the guard in a full tunnel.
  const v6 = await tcpProbe(V6_DISCARD, PROBE_PORT, 0, timeoutMs);
  const refused = ['ENETUNREACH', 'EHOSTUNREACH', 'EACCES', 'EPERM', 'EADDRNOTAVAIL', 'EAFNOSUPPORT'].includes(v6);
  if (plan.ipv6 === 'guarded') {
    out.push(refused ? { ok: true, what: 'ipv6', detail: `refused at once (${v6}): the IPv6 guard holds` } : { ok: false, what: 'ipv6', detail: `LEAK: IPv6 leaves directly (${v6}) although the plan guards it: is another rule ahead of tunroute's? (ip -6 rule)` });
  } else {
    // A split tunnel (or --no-ipv6-guard) leaves IPv6 alone on purpose: the path the plan says.
    out.push({ ok: true, what: 'ipv6', detail: `not carried by tunroute, as this plan leaves IPv6 ${plan.ipv6} (only a full tunnel guards it); the probe ended with ${v6}` });
  }
  return out;
}

/** Whether resolved still holds the per-link DNS the plan gave the device. */
async function resolvedCheck(link: { dev: string; dns: string }, opts: ResolvectlOptions | undefined): Promise<VerifyCheck> {
  const what = `systemd-resolved ${link.dev}`;
  const dns = await resolvectl(['dns', link.dev], opts);
  const domain = await resolvectl(['domain', link.dev], opts);
  if (dns.code !== 0 || domain.code !== 0) {
    return { ok: false, what, detail: `LEAK: cannot read ${link.dev}'s per-link DNS (${(dns.code !== 0 ? dns : domain).stderr.split('\n')[0] || 'resolvectl failed'}), so resolved may send names over other links` };
  }
  const servers = parseResolvectlLinkLine(dns.stdout);
  const domains = parseResolvectlLinkLine(domain.stdout);
  if (servers.includes(link.dns) && domains.includes(ROUTE_ALL_DOMAIN)) return { ok: true, what, detail: `per-link DNS ${link.dns} with routing domain ~.: resolved sends every query into ${link.dev}` };
  return {
    ok: false,
    what,
    detail: `LEAK: ${link.dev} has DNS ${servers.join(' ') || 'none'} and domains ${domains.join(' ') || 'none'} in resolved, not ${link.dns} with ~. as the plan set: another program changed them; restart tunroute`,
  };
}

/** The report as lines: one per check, "ok" or "LEAK". */
export function describeVerify(checks: readonly VerifyCheck[]): string {
  const w = checks.reduce((m, c) => Math.max(m, c.what.length), 0);
  return checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.what.padEnd(w)}  ${c.detail}`).join('\n');
}
