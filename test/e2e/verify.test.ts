/**
 * `tunroute verify` against a running instance (issue 12, item 7), in the routes lab: marked
 * probes from the client namespace, counted by tunroute itself.
 *   - a full tunnel with DNS hijack and a resolver that the tunnel carries: every probe takes
 *     its planned path, exit 0;
 *   - a split tunnel whose resolver is on the LAN (direct) with DNS off: the DNS line is a leak
 *     with its cause, exit 1; the other probes are fine.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { e2eAvailable } from '../helpers/e2e.js';
import { GW, PROXY, SOCKS, cli, createRoutesLab, up, type RoutesLab } from './routes-lab.js';

const run = e2eAvailable('tunroute verify');

describe.skipIf(!run)('tunroute verify (lab)', () => {
  let l: RoutesLab;
  let resolvConf: string;

  beforeAll(async () => {
    l = await createRoutesLab();
    const etc = l.lab.etcOverlayDir(l.c); // removed by lab.destroy()
    mkdirSync(etc, { recursive: true });
    resolvConf = join(etc, 'resolv.conf');
  });
  afterAll(async () => {
    await l?.lab.destroy();
  });

  const verify = (control: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    cli(l, ['verify', '--control', control, '--state-dir', l.stateDir]);

  it('a full tunnel with DNS hijack: every probe takes its planned path', async () => {
    writeFileSync(resolvConf, 'nameserver 192.0.2.53\n'); // tunneled: only tunroute answers
    const proc = await up(l, ['--proxy', PROXY, '--dns', 'hijack']);
    try {
      const control = /"control":"([^"]+)"/.exec(`${proc.output().stdout}${proc.output().stderr}`)?.[1] ?? '';
      const r = await verify(control);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(5);
      expect(lines[0]).toMatch(/^ok {4}tcp 198\.51\.100\.1:9 \(tunneled\) +reached tunroute on tun0$/);
      expect(r.stdout).toMatch(new RegExp(`ok {4}tcp ${SOCKS.replace(/\./g, '\\.')}:9 \\(direct\\) +went direct, as the plan keeps it \\(upstream 'proxy'`));
      expect(r.stdout).toMatch(new RegExp(`ok {4}tcp ${GW.replace(/\./g, '\\.')}:9 \\(direct\\) +went direct, as the plan keeps it \\(LAN on`));
      expect(r.stdout).toMatch(/ok {4}dns 192\.0\.2\.53:53 +the query reached tunroute on tun0/);
      expect(r.stdout).toMatch(/ok {4}ipv6 +refused at once \(E\w+\): the IPv6 guard holds/);
    } finally {
      await proc.stop('SIGTERM', 10_000);
    }
  });

  it('a split tunnel whose resolver is on the LAN: the DNS leak is one line with its cause, exit 1', async () => {
    writeFileSync(resolvConf, `nameserver ${GW}\n`);
    const proc = await up(l, ['--proxy', PROXY, '--route', '198.51.100.0/24'], 'split');
    try {
      const control = /"control":"([^"]+)"/.exec(`${proc.output().stdout}${proc.output().stderr}`)?.[1] ?? '';
      const r = await verify(control);
      process.stdout.write(`\n[verify] split tunnel, resolver on the LAN:\n${r.stdout}`);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/ok {4}tcp 198\.51\.100\.1:9 \(tunneled\) +reached tunroute on tun0/);
      expect(r.stdout).toMatch(
        new RegExp(`FAIL {2}dns ${GW.replace(/\./g, '\\.')}:53 +LEAK: the query never reached tunroute \\(.*\\), so names this host looks up leave outside the tunnel; the kernel routes it: ${GW.replace(/\./g, '\\.')} dev \\S+ src`),
      );
      expect(r.stderr).toBe('tunroute: 1 of 5 probes did not take the planned path (lines marked FAIL): fix what each names, then run verify again.\n');
    } finally {
      await proc.stop('SIGTERM', 10_000);
    }
  });
});
