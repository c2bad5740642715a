/**
 * The watchdog's native helper alone (native/watchdog.c): it waits on its stdin pipe and on the
 * daemon's pid; when either ends it exits quietly if the journal is gone, and otherwise execs the
 * program it was given (in `up`, the Node watchdog with --now; here a shell that leaves a mark).
 * No network, no root: the "daemon" is a `sleep` this test starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkHelper, watchdogHelper } from '../../src/native/watchdog-helper.js';

const helper = watchdogHelper();
if (!('path' in helper)) console.warn(`watchdog-helper: SKIPPED — ${helper.unusable}`);
const HELPER = 'path' in helper ? helper.path : '';

let dir: string;
let daemon: ChildProcess | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tr-watchdog-'));
});
afterEach(() => {
  daemon?.kill('SIGKILL');
  daemon = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** A stand-in for tunroute: a process whose pid the helper watches. */
async function startDaemon(): Promise<number> {
  daemon = spawn('sleep', ['300'], { stdio: 'ignore' });
  await new Promise((res, rej) => daemon!.once('spawn', res).once('error', rej));
  return daemon.pid!;
}

async function stopDaemon(): Promise<void> {
  const d = daemon!;
  const exited = new Promise((res) => d.once('exit', res));
  d.kill('SIGKILL');
  await exited;
}

interface Run {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** The helper with a pipe on stdin; its exec'd program, if any, writes "ran ARGS" to DIR/marker. */
function runHelper(args: readonly string[]): Run {
  const child = spawn(HELPER, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin.on('error', () => undefined);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((res) =>
    child.once('close', (code, signal) => res({ code, signal, stderr })),
  );
  return { child, exit };
}

const marker = (): string => join(dir, 'marker');
const journal = (): string => join(dir, 'routes-tun0.json');
const program = (): string[] => ['/bin/sh', '-c', `echo ran "$@" > '${marker()}'`, 'sh', '--now', 'x'];

/** Signals the process ignores (/proc/PID/status SigIgn), polled until it has set them up. */
async function ignoredSignals(pid: number, want: bigint): Promise<bigint> {
  let mask = 0n;
  for (let i = 0; i < 500 && (mask & want) !== want; i++) {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('SigIgn:'));
    mask = BigInt(`0x${line?.split(/\s+/)[1] ?? '0'}`);
    if ((mask & want) !== want) await new Promise((r) => setTimeout(r, 10));
  }
  return mask;
}

describe.skipIf(!('path' in helper))('native watchdog helper (skipped when it is not built)', () => {
  it('bad arguments: usage on stderr, exit 2', async () => {
    for (const args of [[], ['j', '1'], ['j', 'x', '/bin/true'], ['j', '0', '/bin/true'], ['j', '12abc', '/bin/true'], ['', '1', '/bin/true']]) {
      const r = runHelper(args);
      const { code, stderr } = await r.exit;
      expect(code).toBe(2);
      expect(stderr).toMatch(/^usage: tunroute_watchdog \[-u UID:GID\] JOURNAL_PATH DAEMON_PID PROGRAM/);
    }
  });

  it('pipe closed, no journal (tunroute cleaned up): exits 0 and runs nothing', async () => {
    const pid = await startDaemon();
    const r = runHelper([journal(), String(pid), ...program()]);
    r.child.stdin!.end();
    expect(await r.exit).toEqual({ code: 0, signal: null, stderr: '' });
    expect(existsSync(marker())).toBe(false);
  });

  it('pipe closed and the daemon dies, journal left: execs its program with its arguments', async () => {
    const pid = await startDaemon();
    writeFileSync(journal(), '{}');
    const r = runHelper([journal(), String(pid), ...program()]);
    r.child.stdin!.end();
    // EOF alone is not enough while the daemon still exists (the kernel closes a dying
    // process's pipe before it is gone): the helper waits for the pid, then execs.
    await stopDaemon();
    expect(await r.exit).toEqual({ code: 0, signal: null, stderr: '' });
    expect(readFileSync(marker(), 'utf8')).toBe('ran --now x\n');
  });

  it('the daemon dies while someone else holds the pipe: the pidfd notices, journal left: execs', async () => {
    const pid = await startDaemon();
    writeFileSync(journal(), '{}');
    const r = runHelper([journal(), String(pid), ...program()]);
    await stopDaemon();
    expect(await r.exit).toEqual({ code: 0, signal: null, stderr: '' });
    expect(readFileSync(marker(), 'utf8')).toBe('ran --now x\n');
    r.child.stdin!.end();
  });

  it('the daemon is gone before it starts, journal left: execs at once', async () => {
    await startDaemon();
    const pid = daemon!.pid!;
    await stopDaemon();
    writeFileSync(journal(), '{}');
    const r = runHelper([journal(), String(pid), ...program()]);
    expect((await r.exit).code).toBe(0);
    expect(existsSync(marker())).toBe(true);
    r.child.stdin!.end();
  });

  it('ignores SIGINT and SIGHUP (a Ctrl-C meant for tunroute), holds only stdio and the pidfd', async () => {
    const pid = await startDaemon();
    const r = runHelper([journal(), String(pid), ...program()]);
    const want = (1n << 1n) | (1n << 0n); // bit n-1 for signal n: SIGHUP 1, SIGINT 2
    expect((await ignoredSignals(r.child.pid!, want)) & want).toBe(want);
    r.child.kill('SIGINT');
    r.child.kill('SIGHUP');
    const fds = readdirSync(`/proc/${r.child.pid}/fd`).map(Number).sort((a, b) => a - b);
    expect(fds.slice(0, 3)).toEqual([0, 1, 2]);
    for (const fd of fds.slice(3)) expect(readlinkSync(`/proc/${r.child.pid}/fd/${fd}`)).toBe('anon_inode:[pidfd]');
    r.child.stdin!.end();
    expect(await r.exit).toEqual({ code: 0, signal: null, stderr: '' });
  });

  it('a program that cannot be run: one sentence on stderr that names it and the fix, exit 1', async () => {
    await startDaemon();
    const pid = daemon!.pid!;
    await stopDaemon();
    writeFileSync(journal(), '{}');
    const r = runHelper([journal(), String(pid), join(dir, 'no-such-node')]);
    const { code, stderr } = await r.exit;
    expect(code).toBe(1);
    expect(stderr).toBe(`tunroute watchdog: cannot run ${join(dir, 'no-such-node')} (No such file or directory): run \`tunroute down\` to restore the network\n`);
    r.child.stdin!.end();
  });
});

describe('which helper up may run (it runs as root)', () => {
  it('only an executable file that no one but root, us or the module\'s owner can write', () => {
    const f = join(dir, 'tunroute_watchdog');
    expect(checkHelper(f)).toEqual({ unusable: `${f} is not built (npm run build)` });
    copyFileSync('/bin/true', f);
    chmodSync(f, 0o644);
    expect(checkHelper(f)).toEqual({ unusable: `${f} is not an executable file` });
    chmodSync(f, 0o775);
    expect(checkHelper(f)).toEqual({ unusable: `${f} is owned by uid ${process.getuid!()} or writable by group or others (mode 775)` });
    chmodSync(f, 0o755);
    expect(checkHelper(f)).toEqual({ path: f });
    if (process.getuid!() === 0) {
      chownSync(f, 65534, 65534);
      expect(checkHelper(f)).toEqual({ unusable: `${f} is owned by uid 65534 or writable by group or others (mode 755)` });
    }
  });
});
