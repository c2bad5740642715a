/**
 * Large UDP datagrams through tunroute and dante, end to end in the lab (see udp-lab.ts): the
 * app's kernel fragments a 20 KB datagram at tun0's MTU (1500), tunroute reassembles it and
 * sends it whole through the UDP ASSOCIATE; the echo server sends the same 20 KB back, and
 * tunroute fragments the reply to fit tun0. Both ways intact, byte for byte. A capture on tun0
 * shows the fragments in both directions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabProcess } from '../../tools/lab/index.js';
import { e2eAvailable } from '../helpers/e2e.js';
import {
  DANTE,
  DEST,
  ECHO_PORT,
  capture,
  createUdpLab,
  finalUdpCounters,
  fixture,
  jsonLine,
  startTunroute,
  upArgs,
  writeConfig,
  type UdpLab,
} from './udp-lab.js';

const run = e2eAvailable('UDP fragments through SOCKS5 (dante): 20 KB datagrams both ways');

interface BigSummary {
  results: { size: number; ok: boolean; tries: number; ms: number; got: number[]; from: string[] }[];
  elapsedMs: number;
}

/** One byte under and over the MTU's payload (1500 - 20 - 8), then the acceptance's 20 KB. */
const SIZES = [1472, 1473, 20_000, 20_000, 20_000];
/** The largest a SOCKS5 UDP frame can carry in one datagram (65507 minus the 10-byte header). */
const SOCKS_MAX = 65_497;

describe.skipIf(!run)('UDP fragments through tunroute and dante (lab)', () => {
  let t: UdpLab;
  let up: LabProcess;

  beforeAll(async () => {
    t = await createUdpLab({ dante: true, echo: true });
    const config = writeConfig(t.lab, 'udp-fragments', {});
    ({ proc: up } = await startTunroute(t.c, upArgs(config, DANTE)));
  });
  afterAll(async () => {
    await t?.lab.destroy();
  });

  it('20 KB datagrams go both ways intact (the app fragments, tunroute reassembles and fragments the reply)', async () => {
    const mtu = Number((await t.c.exec(['cat', '/sys/class/net/tun0/mtu'])).stdout.trim());
    expect(mtu).toBe(1500);
    // Fragments on tun0 (MF set or a non-zero offset), each way.
    const cap = await capture(t.c, 'tun0', ['ip[6:2] & 0x3fff != 0']);
    const r = await t.c.exec(['node', fixture('udp-big.mjs'), DEST, String(ECHO_PORT), SIZES.join(','), '3', '3000'], { timeoutMs: 60_000 });
    const lines = await cap.stop();
    const s = jsonLine<BigSummary>(r.stdout, 'udp-big');
    for (const x of s.results) process.stdout.write(`[udp-fragments] ${x.size} B: ${x.ok ? 'intact' : 'FAILED'} after ${x.tries} send(s), ${x.ms} ms; got back ${JSON.stringify(x.got)} from ${x.from.join(',')}\n`);
    if (process.env.UDP_DEBUG) process.stdout.write(`${lines.join('\n')}\n`);
    const up_ = lines.filter((l) => l.includes(` > ${DEST}`)).length;
    const down = lines.filter((l) => l.includes(`IP ${DEST}`)).length;
    process.stdout.write(`[udp-fragments] tun0 fragments: ${up_} from the app, ${down} from tunroute\n`);
    const ctx = `${JSON.stringify(s)}\n${r.stderr}\n${up.outputTail(3000)}`;
    for (const x of s.results) {
      expect(x.ok, `${x.size}: ${ctx}`).toBe(true);
      // Lost the first time is tolerable for UDP; lost twice in a quiet lab is not.
      expect(x.tries, `${x.size}: ${ctx}`).toBeLessThanOrEqual(2);
    }
    // 1473 → 2 fragments, 20,000 → 14 each way; at least one full set both ways per datagram.
    expect(up_, ctx).toBeGreaterThanOrEqual(2 + 3 * 14);
    expect(down, ctx).toBeGreaterThanOrEqual(2 + 3 * 14);
  });

  it(`the largest a SOCKS5 UDP frame can carry (${SOCKS_MAX} B) goes both ways intact`, async () => {
    const r = await t.c.exec(['node', fixture('udp-big.mjs'), DEST, String(ECHO_PORT), String(SOCKS_MAX), '3', '3000'], { timeoutMs: 30_000 });
    const s = jsonLine<BigSummary>(r.stdout, 'udp-big');
    const x = s.results[0];
    process.stdout.write(`[udp-fragments] ${SOCKS_MAX} B: ${x?.ok ? 'intact' : 'FAILED'} after ${x?.tries} send(s); got back ${JSON.stringify(x?.got)}\n`);
    expect(x?.ok, `${JSON.stringify(s)}\n${r.stderr}\n${up.outputTail(3000)}`).toBe(true);
  });

  it('counts what it reassembled and fragmented, and stops cleanly', async () => {
    expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    const c = finalUdpCounters(up);
    const ctx = JSON.stringify(c.udp);
    process.stdout.write(`[udp-fragments] counters: ${JSON.stringify({ fragments: c.udp.fragments, fragmentedOut: c.udp.stack.fragmentedOut, replyDropped: c.udp.stack.replyDropped })}\n`);
    expect(c.udp.fragments.reassembled, ctx).toBeGreaterThanOrEqual(5);
    expect(c.udp.stack.fragmentedOut, ctx).toBeGreaterThanOrEqual(5);
    expect(c.udp.fragments.timedOut + c.udp.fragments.evicted, ctx).toBe(0);
    for (const [reason, n] of Object.entries(c.udp.fragments.drops)) expect(n, `${reason}: ${ctx}`).toBe(0);
    expect(c.udp.stack.replyDropped, ctx).toBe(0);
  });
});
