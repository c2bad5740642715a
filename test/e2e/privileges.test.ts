/**
 * Least privilege (issue 13, item 3): once `up` has opened the device and applied its routes,
 * the process that parses every packet runs as the `tunroute` user with CAP_NET_ADMIN alone (the
 * other threads with nothing), the watchdog and the route monitor never run as root at all, and
 * the watchdog still gives the network back after `kill -9`. Read from /proc, not from our logs.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer } from '../../tools/lab/index.js';
import { KEPT_CAPS_MASK, privilegesOf, type ProcessPrivileges } from '../../src/privileges.js';
import { e2eAvailable, routingSnapshot } from '../helpers/e2e.js';
import { DEST, PROXY, ROUTE, createTcpLab, startTunroute, waitFor, type TcpLab } from './tcp-lab.js';

const run = e2eAvailable('least privilege');
const userId = spawnSync('id', ['-u', 'tunroute'], { encoding: 'utf8' });
const uid = userId.status === 0 ? Number(userId.stdout.trim()) : undefined;
if (run && uid === undefined) {
  process.stdout.write('\n[skipped] least privilege: there is no user "tunroute" (scripts/install.sh creates it)\n');
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function privileges(path: string): ProcessPrivileges {
  return privilegesOf(readFileSync(path, 'utf8'));
}

describe.skipIf(!run || uid === undefined)('least privilege (lab)', () => {
  let l: TcpLab;

  beforeAll(async () => {
    l = await createTcpLab();
    await startHttpServer(l.s, { listen: DEST, port: 8080, size: 1 << 20 });
  });
  afterAll(async () => {
    await l?.lab.destroy();
  });

  it('carries traffic as tunroute with CAP_NET_ADMIN only, the watchdog too, and kill -9 still restores the network', async () => {
    const before = await routingSnapshot(l.c);
    const { proc } = await startTunroute(l.c, ['--route', ROUTE, '--proxy', PROXY]);
    await proc.waitForLine(/gave up root: carrying packets as tunroute with CAP_NET_ADMIN only/, 5000);

    // Traffic through tun0 and the proxy, after the drop.
    const curl = await l.c.exec(['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${DEST}:8080/`]);
    expect(curl.stdout).toBe(`200 ${1 << 20}`);

    // The processes of the client namespace, as the host sees them.
    const pids = (await l.c.exec(['ip', 'netns', 'pids', l.c.name])).stdout.split(/\s+/).filter(Boolean).map(Number);
    const find = (what: string, match: (argv: string[]) => boolean): number => {
      const pid = pids.find((p) => match(cmdline(p)));
      if (pid === undefined) throw new Error(`no ${what} among ${pids.join(' ')}`);
      return pid;
    };
    const daemon = find('tunroute up', (a) => a[0]?.endsWith('node') === true && a.includes('up') && a.some((x) => x.endsWith('dist/cli/main.js')));
    const watchdog = find('watchdog', (a) => a[0]?.endsWith('tunroute_watchdog') === true);
    const monitor = find('route monitor', (a) => a[0] === 'ip' && a.includes('monitor'));

    // The packet process: every id is tunroute's; CAP_NET_ADMIN alone, even in the bounding set.
    const main = privileges(`/proc/${daemon}/status`);
    expect(main.uids).toEqual([uid, uid, uid, uid]);
    expect(main.capEff).toBe(KEPT_CAPS_MASK);
    expect(main.capPrm).toBe(KEPT_CAPS_MASK);
    expect(main.capBnd).toBe(KEPT_CAPS_MASK);
    // Its other threads (libuv's pool, V8's workers) hold no capability at all.
    const threads = readdirSync(`/proc/${daemon}/task`).map(Number).filter((t) => t !== daemon);
    expect(threads.length).toBeGreaterThan(0);
    for (const t of threads) {
      const p = privileges(`/proc/${daemon}/task/${t}/status`);
      expect(p.uids).toEqual([uid, uid, uid, uid]);
      expect(p.capEff).toBe(0n);
    }
    // The watchdog waits as tunroute with what the undoing needs; the monitor only listens.
    const wd = privileges(`/proc/${watchdog}/status`);
    expect(wd.uids).toEqual([uid, uid, uid, uid]);
    expect(wd.capEff).toBe(KEPT_CAPS_MASK);
    const mon = privileges(`/proc/${monitor}/status`);
    expect(mon.uids).toEqual([uid, uid, uid, uid]);
    expect(mon.capEff).toBe(0n);
    // Its files are in a dir of its own, which the root-owned state dir holds.
    const dir = `/run/tunroute/netns/${l.c.name}`;
    expect(statSync(dir).uid).toBe(0);
    expect(statSync(`${dir}/dev-tun0`).uid).toBe(uid);
    expect(statSync(`${dir}/dev-tun0/routes-tun0.json`).uid).toBe(uid);

    // kill -9: the watchdog, as tunroute, removes every route and rule.
    process.kill(daemon, 'SIGKILL');
    await waitFor('the watchdog to restore the routing table', async () => ((await routingSnapshot(l.c)) === before ? true : undefined), 10_000, 100);
    await proc.waitForExit();
  });
});
