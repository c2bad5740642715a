/**
 * `tunroute up` end to end, in a namespace of its own: ping through tun0 answered by our stack,
 * malformed bursts counted and survived, the host given back exactly as it was, and the
 * one-sentence errors for the usual mistakes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, type Namespace } from '../../tools/lab/index.js';
import { CLI, ROOT, e2eAvailable, finalCounters, routingSnapshot, startTunrouteIn } from '../helpers/e2e.js';

const run = e2eAvailable('tunroute up');

interface BurstSummary {
  total_sent: number;
  expected_drops: Record<string, number>;
  unpredictable: number;
}

interface Counters {
  rxPackets: number;
  dropped: number;
  icmpEchoReplied: number;
  /** Fragments taken in by the reassembler (held until they expire, or dropped as frag_*). */
  fragments: number;
  drops: Record<string, number>;
}

describe.skipIf(!run)('tunroute up (lab)', () => {
  let lab: Lab;
  let ns: Namespace;

  beforeAll(async () => {
    lab = await Lab.create();
    ns = await lab.addNamespace('up');
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it('answers ping through tun0, survives malformed bursts, and leaves the routing table as it was', async () => {
    const before = await routingSnapshot(ns);
    const up = await startTunrouteIn(ns, ['--route', '10.66.1.0/24']);

    const routes = (await ns.exec(['ip', 'route'])).stdout;
    expect(routes).toContain('10.66.1.0/24 dev tun0');

    const ping = await ns.exec(['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.66.1.7']);
    expect(ping.stdout).toContain('5 packets transmitted, 5 received');
    // 4,000 bytes: the request arrives in fragments, is reassembled and answered whole.
    const big = await ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '-s', '4000', '10.66.1.7']);
    expect(big.stdout).toContain('2 packets transmitted, 2 received');

    // The same garbage twice: once through the kernel's raw IP path (it repairs some headers)
    // and once byte-exact through a packet socket on tun0.
    const viaIp = JSON.parse(
      (await ns.exec(['python3', `${ROOT}scripts/malformed-burst.py`, '--dst', '10.66.1.7', '--count', '2000', '--seed', '1'])).stdout,
    ) as BurstSummary;
    const viaDev = JSON.parse(
      (
        await ns.exec([
          'python3', `${ROOT}scripts/malformed-burst.py`, '--dst', '10.66.1.7', '--count', '2000', '--seed', '2',
          '--mode', 'packet', '--dev', 'tun0',
        ])
      ).stdout,
    ) as BurstSummary;
    expect(viaIp.total_sent).toBeGreaterThan(1000);
    expect(viaDev.total_sent).toBe(2000);

    // Still alive and answering after the bursts.
    const ping2 = await ns.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.66.1.7']);
    expect(ping2.stdout).toContain('2 packets transmitted, 2 received');

    const exit = await up.stop('SIGTERM', 5000);
    expect(exit).toEqual({ code: 0, signal: null });

    const c = finalCounters(up) as unknown as Counters;
    expect(c).toBeDefined();
    expect(c.icmpEchoReplied).toBeGreaterThanOrEqual(9);
    // Every reason the bursts were built to produce was counted at least as often as sent
    // (the kernel adds its own IPv6 chatter, and random bytes land anywhere).
    for (const burst of [viaIp, viaDev]) {
      for (const [reason, n] of Object.entries(burst.expected_drops)) {
        // Lone fragments are not malformed: the reassembler holds them until they expire.
        if (reason === 'fragment') continue;
        expect(c.drops[reason], reason).toBeGreaterThanOrEqual(n);
      }
    }
    const sum = (pick: (b: BurstSummary) => number): number => pick(viaIp) + pick(viaDev);
    const fragmentsSent = sum((b) => b.expected_drops.fragment ?? 0);
    const fragDrops = Object.entries(c.drops)
      .filter(([r]) => r.startsWith('frag'))
      .reduce((a, [, n]) => a + n, 0);
    expect(c.fragments + fragDrops).toBeGreaterThanOrEqual(fragmentsSent);
    const expectedTotal = sum((b) => Object.values(b.expected_drops).reduce((x, y) => x + y, 0)) - fragmentsSent;
    expect(c.dropped).toBeGreaterThanOrEqual(expectedTotal);

    expect(await routingSnapshot(ns)).toBe(before);
  });

  it('says in one sentence that the device name is taken', async () => {
    const first = await startTunrouteIn(ns, ['--tun', 'trbusy0', '--route', '10.66.9.0/24'], 'first');
    try {
      const second = await ns.exec(['node', CLI, 'up', '--tun', 'trbusy0', '--route', '10.66.9.0/24'], { allowFail: true });
      expect(second.code).toBe(1);
      expect(second.stderr).toContain('trbusy0 is already in use');
    } finally {
      await first.stop();
    }
  });

  it('says that root is needed', async () => {
    const r = await ns.exec(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'node', CLI, 'up', '--route', '10.66.9.0/24'], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tunroute: .*needs root.*sudo\.\n$/);
  });

  it('says that /dev/net/tun is missing', async () => {
    // A private mount namespace hides the device node from this one command only.
    const r = await ns.exec(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs none /dev/net && exec node ${CLI} up --route 10.66.9.0/24`], {
      allowFail: true,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('/dev/net/tun does not exist');
  });

  it('refuses to start with nothing to route, naming the flags that would give it work (exit 2)', async () => {
    const before = await routingSnapshot(ns);
    const r = await ns.exec(['node', CLI, 'up', '--tun', 'trnone0'], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^tunroute: Nothing to route: .*--proxy .*--tunnel .*--route .*\.\n$/);
    expect(await routingSnapshot(ns)).toBe(before);
  });

  it('rejects a bad CIDR before touching anything', async () => {
    const before = await routingSnapshot(ns);
    const r = await ns.exec(['node', CLI, 'up', '--route', '10.66.1.0/33'], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('tunroute: The flag --route "10.66.1.0/33" is not an IPv4 CIDR like 10.0.0.0/8: give a valid value.\n');
    expect(await routingSnapshot(ns)).toBe(before);
  });

  it('rolls back when a route cannot be added, and says which', async () => {
    const before = await routingSnapshot(ns);
    // A route the namespace already has makes `ip route add` fail half-way through the plan.
    await ns.exec(['ip', 'route', 'add', 'blackhole', '10.77.2.0/24']);
    const mid = await routingSnapshot(ns);
    const r = await ns.exec(['node', CLI, 'up', '--route', '10.77.1.0/24', '--route', '10.77.2.0/24', '--route', '10.77.4.0/24'], {
      allowFail: true,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('route add 10.77.2.0/24 dev tun0');
    expect(await routingSnapshot(ns)).toBe(mid);
    await ns.exec(['ip', 'route', 'del', 'blackhole', '10.77.2.0/24']);
    expect(await routingSnapshot(ns)).toBe(before);
  });
});
