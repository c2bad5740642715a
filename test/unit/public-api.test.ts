/**
 * The package as an embedder sees it: imported by its name ('tunroute', resolved through
 * package.json "exports" to the built dist/), one instance run on an in-memory link with fakes
 * for the host, one packet through it. `npm test` builds dist/ first; without it this fails.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../tools/repo-root.js';
import { IcmpPacket, IcmpRepr, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST } from '../../src/wire/icmp.js';
import { Ipv4Packet, IP_PROTO_ICMP, writeIpv4Header } from '../../src/wire/ipv4.js';
import { ipToU32 } from '../../src/net/ipv4.js';
// Types only: they come from the sources so that type-checking needs no build; the values
// below come from the package.
import type * as Tunroute from '../../src/index.js';

const PACKAGE = 'tunroute';
const BUILT_ENTRY = join(REPO_ROOT, 'dist', 'index.js');

let api: typeof Tunroute;
beforeAll(async () => {
  if (!existsSync(BUILT_ENTRY)) {
    throw new Error(`${BUILT_ENTRY} is missing: this test imports the built package; run \`npm run build\` first (npm test does).`);
  }
  // A variable specifier: the import is resolved when the test runs, by the package's own name.
  api = (await import(PACKAGE)) as typeof Tunroute;
});

/** The `ip` runner of an embedder's test: records the batches, changes nothing. */
class RecordingIpRunner implements Tunroute.IpRunner {
  readonly batches: string[][] = [];
  batch(lines: readonly string[]): Promise<Tunroute.BatchResult> {
    this.batches.push([...lines]);
    return Promise.resolve({ ok: true, failures: 0, stderr: '' });
  }
}

/** A host with one LAN and a default route, and nothing in tunroute's routing table. */
const fakeHost: Tunroute.HostProbe = {
  network: () => Promise.resolve({ defaultRoute: { dev: 'eth0', via: '192.168.1.1' }, lan: ['192.168.1.0/24'], ipv6: false }),
  resolve: () => Promise.resolve([]),
  readFile: (path) => Promise.reject(Object.assign(new Error(`no file ${path} in this test`), { code: 'ENOENT' })),
  tableInUse: () => Promise.resolve(undefined),
  routeGet: (addr) => Promise.resolve(`${addr} dev tun0 src 198.18.0.1`),
};

const APP = '198.18.0.1';
const REMOTE = '10.66.1.7';

/** An ICMP echo request from the app to `REMOTE`, as the kernel would write it into tun0. */
function echoRequest(ident: number, seq: number): Uint8Array {
  const data = new TextEncoder().encode('embedded ping');
  const p = new Uint8Array(20 + 8 + data.length);
  IcmpRepr.emit({ type: ICMP_ECHO_REQUEST, ident, seq, data }, p, 20);
  writeIpv4Header(p, 0, ipToU32(APP)!, ipToU32(REMOTE)!, IP_PROTO_ICMP, 8 + data.length, 64, 0, 0x4242, true);
  return p;
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunroute-api-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("the package 'tunroute'", () => {
  it('resolves by its name to the built dist/index.js', () => {
    expect(createRequire(import.meta.url).resolve(PACKAGE)).toBe(BUILT_ENTRY);
    expect(typeof api.startTunroute).toBe('function');
    expect(typeof api.loadConfig).toBe('function');
    expect(typeof api.startServer).toBe('function');
  });

  it('runs an instance on an in-memory link: an echo to a routed address is answered, counted, and stop() undoes the routes', async () => {
    const file = join(dir, 'tunroute.json');
    writeFileSync(file, JSON.stringify({ routes: { include: ['10.66.1.0/24'] }, stateDir: join(dir, 'state'), log: { level: 'silent' } }));
    const config = api.loadConfig({ file });
    const [device, app] = api.createMemoryLinkPair({ mtu: config.tun.mtu });
    const runner = new RecordingIpRunner();
    const running = await api.startTunroute(config, {
      openLink: () => Promise.resolve(device),
      ipRunner: runner,
      routeHost: fakeHost,
      watchdog: false,
      watchRoutes: false,
      logger: api.silentLogger(),
      clock: new api.ManualClock(1000),
    });
    try {
      expect(running.link).toBe(device);
      expect(runner.batches.flat()).toContain('route add 10.66.1.0/24 dev tun0 proto 211');

      const replies: Uint8Array[] = [];
      const replied = new Promise<void>((resolve) => {
        app.onReceive((batch) => {
          for (let i = 0; i < batch.count; i++) replies.push(batch.buf.slice(batch.offsets[i], batch.offsets[i] + batch.lengths[i]));
          resolve();
        });
      });
      app.send(echoRequest(0x77, 1));
      await replied;

      expect(replies).toHaveLength(1);
      const ip = new Ipv4Packet();
      expect(ip.wrap(replies[0], 0, replies[0].length)).toBeUndefined();
      expect([ip.src, ip.dst]).toEqual([ipToU32(REMOTE), ipToU32(APP)]);
      const icmp = new IcmpPacket();
      expect(icmp.wrap(replies[0], ip.payloadOffset, ip.payloadLen)).toBeUndefined();
      expect([icmp.type, icmp.ident, icmp.seq]).toEqual([ICMP_ECHO_REPLY, 0x77, 1]);

      const stats: Tunroute.TunrouteStats = running.stats();
      expect(stats.packets.icmpEchoReplied).toBe(1);
      expect(stats.tcp.flowsTotal).toBe(0);
      expect(Object.keys(stats.outbounds)).toEqual(['block']);
    } finally {
      await running.stop();
    }
    expect(runner.batches.flat()).toContain('route del 10.66.1.0/24 dev tun0 proto 211');
  });

  it('reports a bad config as a TunrouteError with a stable code', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ tun: { mtu: 100 } }));
    let caught: unknown;
    try {
      api.loadConfig({ file });
    } catch (e) {
      caught = e;
    }
    expect(api.isTunrouteError(caught)).toBe(true);
    expect((caught as Tunroute.TunrouteError).code).toBe('TR_BAD_CONFIG');
    expect(Object.keys(api.ERROR_CODES)).toContain('TR_BAD_CONFIG');
  });
});
