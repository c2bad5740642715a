/**
 * NetworkManager handling against a fake nmcli on PATH: a shell script that records its
 * arguments and answers `general` as a running (or stopped) NetworkManager would.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { manageDevice, networkManagerRunning, unmanageDevice } from '../../src/routes/network-manager.js';
import { cleanupJournals } from '../../src/routes/teardown.js';
import { createJournal, journalPath, readJournal } from '../../src/routes/journal.js';
import type { IpRunner } from '../../src/routes/apply.js';
import { useFakeTools } from '../helpers/fake-tools.js';

/** A logger whose lines the test reads. */
function memLog(): { log: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const out: string[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { log, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('NetworkManager (fake nmcli)', () => {
  const tools = useFakeTools('tunroute-nm-');
  function fakeNmcli(state: 'running' | 'asleep' | 'fail-set'): void {
    tools.install('nmcli', [
      'if [ "$1 $2 $3" = "-t -f RUNNING" ]; then',
      state === 'asleep' ? '  echo "Error: NetworkManager is not running." >&2; exit 8' : '  echo running; exit 0',
      'fi',
      state === 'fail-set' ? 'echo "Error: Device \'$3\' not found." >&2; exit 10' : 'exit 0',
    ]);
  }

  it('present and running: tun0 is marked unmanaged, and handed back', async () => {
    fakeNmcli('running');
    const { log, lines } = memLog();
    expect(await networkManagerRunning({ path: tools.path, anyNetns: true })).toEqual({ running: true });
    expect(await unmanageDevice('tun0', log, { path: tools.path, anyNetns: true })).toBe(true);
    await manageDevice('tun0', log, { path: tools.path, anyNetns: true });
    expect(tools.called()).toEqual(['-t -f RUNNING general', 'device set tun0 managed no', 'device set tun0 managed yes']);
    expect(lines().some((l) => l.msg === 'NetworkManager: tun0 is unmanaged while tunroute runs')).toBe(true);
  });

  it('absent (no nmcli) or not running: nothing is done, one debug reason', async () => {
    expect(await networkManagerRunning({ path: `${tools.dir}/empty`, anyNetns: true })).toEqual({ running: false, why: 'nmcli is not installed' });
    fakeNmcli('asleep');
    const r = await networkManagerRunning({ path: tools.path, anyNetns: true });
    expect(r.running).toBe(false);
    expect(tools.called()).toEqual(['-t -f RUNNING general']);
  });

  it('outside the host\'s network namespace it never asks (the name would be another device)', async () => {
    fakeNmcli('running');
    // This test process runs in the host's namespace: the check passes there, and anyNetns is
    // only needed by the lab; here the default must still work on the host.
    const r = await networkManagerRunning({ path: tools.path });
    if (r.running) expect(tools.called()).toEqual(['-t -f RUNNING general']);
    else expect(r.why).toContain("outside the host's network namespace");
  });

  it('a refused `managed no` is a warning that says what to run', async () => {
    fakeNmcli('fail-set');
    const { log, lines } = memLog();
    expect(await unmanageDevice('tun0', log, { path: tools.path, anyNetns: true })).toBe(false);
    expect(lines().find((l) => l.level === 40)?.msg).toContain('run nmcli device set tun0 managed no');
  });

  it('down hands the device back from what the journal lists (also after kill -9)', async () => {
    fakeNmcli('running');
    const stateDir = join(tools.dir, 'state');
    const file = journalPath(stateDir, 'tun0');
    createJournal(file, { version: 1, tool: 'tunroute', dev: 'tun0', pid: 999_999_999 % 4_000_000, pidStart: '1', startedAt: 'x', killSwitch: false, changes: [], nmUnmanaged: 'tun0' });
    expect(readJournal(file)?.nmUnmanaged).toBe('tun0');
    const runner: IpRunner = { batch: () => Promise.resolve({ ok: true, stderr: '' }) };
    const { log } = memLog();
    const out = await cleanupJournals({ stateDir, runner, log, live: 'stop', ownerAlive: () => false, networkManager: { path: tools.path, anyNetns: true } });
    expect(out.map((e) => e.outcome)).toEqual(['removed']);
    expect(tools.called()).toEqual(['device set tun0 managed yes']);
  });
});
