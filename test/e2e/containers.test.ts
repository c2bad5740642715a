/**
 * Containers behind the client (issue 14, items 2 and 3): a bridge in the client namespace with
 * a "container" namespace behind it, NATed and with a published port as Docker sets them up.
 *
 *   ns k (container)                 ns c (tunroute, Docker-like host)          ns g (gateway, internet)
 *   eth0 172.30.0.2/24 ── veth ── trbr0 bridge 172.30.0.1/24                    (see routes-lab.ts)
 *   default via 172.30.0.1           masquerade 172.30.0.0/24 out of c0
 *   HTTP :8080 (GET /ip)             c0 :8081 → 172.30.0.2:8080 (published port)
 *
 * With defaults, the full tunnel leaves the container alone both ways: its traffic goes out
 * directly (masqueraded), its published port answers, and this host reaches it. With
 * --from-interface trbr0 (gateway mode), what the container sends goes through tunroute and
 * the SOCKS server (the HTTP server's /ip says which way a request came).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type Namespace } from '../../tools/lab/index.js';
import { e2eAvailable } from '../helpers/e2e.js';
import { CLIENT, GW, PROXY, REMOTES, SOCKS, cli, createRoutesLab, fullSnapshot, seenAs, up, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('containers and gateway mode');

const BRIDGE = 'trbr0';
const CONTAINER = '172.30.0.2';

describe.skipIf(!run)('containers behind the client (lab)', () => {
  let l: RoutesLab;
  let k: Namespace;

  beforeAll(async () => {
    l = await createRoutesLab();
    k = await l.lab.addNamespace('k');
    await l.c.sh(
      [
        'sysctl -qw net.ipv4.ip_forward=1',
        `ip link add ${BRIDGE} type bridge`,
        `ip addr add 172.30.0.1/24 dev ${BRIDGE}`,
        `ip link set ${BRIDGE} up`,
        `ip link add trk0 type veth peer name eth0 netns ${k.name}`,
        `ip link set trk0 master ${BRIDGE} up`,
        // What Docker does for a bridge network and `-p 8081:8080`.
        'nft add table ip trnat',
        "nft add chain ip trnat post '{ type nat hook postrouting priority 100; }'",
        "nft add chain ip trnat pre '{ type nat hook prerouting priority -100; }'",
        `nft add rule ip trnat post ip saddr 172.30.0.0/24 oifname != ${BRIDGE} masquerade`,
        `nft add rule ip trnat pre iifname ${l.c0} tcp dport 8081 dnat to ${CONTAINER}:8080`,
      ].join(' && '),
    );
    await k.sh([`ip addr add ${CONTAINER}/24 dev eth0`, 'ip link set eth0 up', 'ip route add default via 172.30.0.1'].join(' && '));
    await startHttpServer(k, { port: 8080 });
  });
  afterAll(async () => {
    await l?.lab.destroy();
  });

  /** Who the HTTP server at REMOTES[0] saw, asked from the container. */
  const containerSeenAs = async (): Promise<string> => {
    const r = await k.exec(['curl', '-sS', '--max-time', '5', `http://${REMOTES[0]}:8080/ip`], { allowFail: true, timeoutMs: 10_000 });
    return r.code === 0 ? r.stdout.trim() : `curl failed (${r.code}): ${r.stderr.trim()}`;
  };

  it('with defaults, a full tunnel leaves the bridge out both ways: the container goes direct, its published port answers', async () => {
    const before = await fullSnapshot(l.c);
    const dry = await cli(l, ['up', '--proxy', PROXY, '--dry-run', '--state-dir', l.stateDir]);
    expect(dry.stdout).toContain(`interfaces kept out both ways (ip rule priority 7300 iif → main table): ${BRIDGE} (a bridge (routes.containers: auto))`);
    expect(dry.stdout).toMatch(new RegExp(`- 172\\.30\\.0\\.0/24 +interface ${BRIDGE}, a bridge`));

    const proc = await up(l, ['--proxy', PROXY]);
    try {
      // This host's own traffic is tunneled…
      expect(await seenAs(l, REMOTES[0])).toBe(SOCKS);
      // …the container's is not: it leaves masqueraded as the client, directly.
      expect(await containerSeenAs()).toBe(CLIENT);
      // The published port answers a machine on the LAN, and one out on the internet: its
      // replies keep the main table (into the device, they would never reach it).
      const pub = await l.g.exec(['curl', '-sS', '--max-time', '5', `http://${CLIENT}:8081/ip`], { allowFail: true, timeoutMs: 10_000 });
      expect(pub.stdout.trim()).toBe(GW);
      const far = await l.g.exec(['curl', '-sS', '--max-time', '5', '--interface', REMOTES[1], `http://${CLIENT}:8081/ip`], { allowFail: true, timeoutMs: 10_000 });
      expect(far.stdout.trim()).toBe(REMOTES[1]);
      // And this host reaches the container directly.
      const direct = await l.c.exec(['curl', '-sS', '--max-time', '5', `http://${CONTAINER}:8080/ip`], { allowFail: true, timeoutMs: 10_000 });
      expect(direct.stdout.trim()).toBe('172.30.0.1');
      expect((await l.c.exec(['ip', 'rule'])).stdout).toContain(`from all iif ${BRIDGE} lookup main proto 211`);
    } finally {
      expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    expect(await fullSnapshot(l.c)).toBe(before);
  });

  it('in gateway mode (--from-interface), what the container sends goes through tunroute and the proxy', async () => {
    const before = await fullSnapshot(l.c);
    const proc = await up(l, ['--proxy', PROXY, '--from-interface', BRIDGE], 'gateway');
    try {
      expect(await containerSeenAs()).toBe(SOCKS);
      // The host still reaches the container, and the container's other traffic comes back to it.
      const direct = await l.c.exec(['curl', '-sS', '--max-time', '5', `http://${CONTAINER}:8080/ip`], { allowFail: true, timeoutMs: 10_000 });
      expect(direct.stdout.trim()).toBe('172.30.0.1');
    } finally {
      expect(await proc.stop('SIGTERM', 10_000)).toEqual({ code: 0, signal: null });
    }
    expect(await fullSnapshot(l.c)).toBe(before);
  });
});
