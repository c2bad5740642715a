/**
 * The lab the route end-to-end files share (routes-*.test.ts): a client with a default route
 * and a LAN, behind a gateway that hosts the "internet".
 *
 *   ns c (tunroute, apps)                          ns g (gateway + internet)
 *   c0 192.168.50.2/24 ───────── veth ─────────── 192.168.50.1/24 (gateway), 192.168.50.7 (a LAN host)
 *      2001:db8:50::2/64                          2001:db8:50::1/64
 *   c1 192.168.70.2/24 ───────── veth ─────────── 192.168.70.1/24 (a second uplink, for "new Wi-Fi")
 *   default via 192.168.50.1, default via 2001:db8:50::1
 *                                                 on lo: 100.64.0.1 (dante :1080, external 100.64.0.1)
 *                                                        203.0.113.10, 198.51.100.20, 192.0.2.30 (remotes)
 *                                                        2001:db8:ff::1
 *                                                 HTTP :8080 on all addresses, GET /ip = client address
 *
 * The HTTP server's /ip tells how a request arrived: 100.64.0.1 = through the SOCKS server,
 * 192.168.50.2 (or .70.2) = directly from the client.
 */
import { join } from 'node:path';
import { Lab, startDante, startHttpServer, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { CLI, controlPathFor, logLines } from '../helpers/e2e.js';

export const SOCKS = '100.64.0.1';
export const PROXY = `socks5://${SOCKS}:1080`;
export const REMOTES = ['203.0.113.10', '198.51.100.20', '192.0.2.30'] as const;
export const LAN_HOST = '192.168.50.7';
export const CLIENT = '192.168.50.2';
export const GW = '192.168.50.1';
export const GW2 = '192.168.70.1';
export const V6_REMOTE = '2001:db8:ff::1';

export interface RoutesLab {
  lab: Lab;
  c: Namespace;
  g: Namespace;
  /** c's interface names */
  c0: string;
  c1: string;
  stateDir: string;
}

export async function createRoutesLab(): Promise<RoutesLab> {
  const lab = await Lab.create({ prefix: 'tr-routes-' });
  try {
    const v6 = { 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0, 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 };
    const c = await lab.addNamespace('c', { sysctls: v6 });
    const g = await lab.addNamespace('g', { sysctls: v6 });
    const l0 = await lab.link(c, g, { cidrA: `${CLIENT}/24`, cidrB: `${GW}/24` });
    const l1 = await lab.link(c, g, { cidrA: '192.168.70.2/24', cidrB: `${GW2}/24` });
    await g.sh(
      [
        `ip addr add ${LAN_HOST}/24 dev ${l0.b.ifname}`,
        `ip addr add 2001:db8:50::1/64 dev ${l0.b.ifname} nodad`,
        ...[SOCKS, ...REMOTES].map((a) => `ip addr add ${a}/32 dev lo`),
        `ip addr add ${V6_REMOTE}/128 dev lo`,
      ].join(' && '),
    );
    await c.sh([`ip addr add 2001:db8:50::2/64 dev ${l0.a.ifname} nodad`, `ip route add default via ${GW}`, 'ip -6 route add default via 2001:db8:50::1'].join(' && '));
    await startHttpServer(g, { port: 8080 });
    await startDante(g, { listen: SOCKS, port: 1080, external: SOCKS });
    return { lab, c, g, c0: l0.a.ifname, c1: l1.a.ifname, stateDir: join(lab.tmpDir, 'state') };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/**
 * Everything `up` and `down` must give back byte for byte: every table of both families, the
 * rules of both, the links. (IPv6 DAD is off in the lab, so link-local routes do not appear
 * late on their own.)
 */
export async function fullSnapshot(ns: Namespace): Promise<string> {
  const r = await ns.sh('ip route show table all; echo ---; ip -6 route show table all; echo ---; ip rule; echo ---; ip -6 rule; echo ---; ip -o link show | cut -d: -f2');
  return r.stdout;
}

/** `tunroute up ARGS` in c with the lab's state dir and control socket; waits for "tunroute is up". */
export async function up(l: RoutesLab, args: readonly string[], name = 'tunroute'): Promise<LabProcess> {
  const proc = l.c.spawn(['node', CLI, 'up', '--state-dir', l.stateDir, '--control', controlPathFor(l.c), ...args], { name });
  await proc.waitForLine(/"msg":"tunroute is up"/, 20_000);
  return proc;
}

/** A tunroute CLI command in c (down, why, check) with the lab's state dir where it applies. */
export function cli(l: RoutesLab, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return l.c.exec(['node', CLI, ...args], { allowFail: true, timeoutMs: 30_000 });
}

/** Who the HTTP server saw: GET http://ADDR:8080/ip from c (optionally as another user). */
export async function seenAs(l: RoutesLab, addr: string, opts: { uid?: number } = {}): Promise<string> {
  const as = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups'];
  const r = await l.c.exec([...as, 'curl', '-sS', '--max-time', '5', `http://${addr}:8080/ip`], { allowFail: true, timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim() : `curl failed (${r.code}): ${r.stderr.trim()}`;
}

/** The first log line with this msg (waits for it). */
export async function logged(proc: LabProcess, msg: RegExp, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  await proc.waitForLine(new RegExp(`"msg":"${msg.source}`), timeoutMs);
  const line = logLines(proc).find((l) => l.msg !== undefined && msg.test(l.msg));
  if (!line) throw new Error(`no log line matching ${msg}`);
  return line;
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await check();
    if (last !== undefined) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Poll a process's output (also after it exited: its watchdog writes on the same stderr). */
export function outputMatches(proc: LabProcess, re: RegExp, timeoutMs = 10_000): Promise<string> {
  return waitFor(`${re} in the output of ${proc.name}`, async () => {
    const o = proc.output();
    return `${o.stdout}\n${o.stderr}`.split('\n').find((l) => re.test(l));
  }, timeoutMs);
}
