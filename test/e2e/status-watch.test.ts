/**
 * The terminal face of tunroute (issue 15, items 4–6) under tmux, against a running `up` in the
 * lab (tcp-lab.ts): `up` in a pane (a real terminal) logs readable lines and says what it does;
 * `status --watch` in another pane shows a download's flow with its rate, adapts when the
 * window shrinks, and gives the terminal back on q and on Ctrl-C. tmux runs on its own socket
 * in the lab's temp dir; its server is killed by the test.
 */
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type LabProcess } from '../../tools/lab/index.js';
import { CLI, e2eAvailable } from '../helpers/e2e.js';
import { DEST, PROXY, ROUTE, createTcpLab, startTunroute, waitFor, type TcpLab } from './tcp-lab.js';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;
if (!hasTmux) process.stdout.write('\n[skipped] status --watch under tmux: tmux is not installed (apt-get install tmux)\n');
const run = hasTmux && e2eAvailable('status --watch under tmux');
const execFileP = promisify(execFile);

const HTTP_PORT = 8080;

describe.skipIf(!run)('status --watch and the terminal logs, under tmux (lab)', () => {
  let t: TcpLab;
  let sock: string;
  const tmux = async (...args: string[]): Promise<string> => (await execFileP('tmux', ['-S', sock, ...args], { encoding: 'utf8' })).stdout;
  const capture = (target: string): Promise<string> => tmux('capture-pane', '-p', '-t', target);
  /** Poll a pane until `pred` holds for its screen; a timeout shows the last screen (what went wrong is on it). */
  const screenWhere = async (target: string, what: string, pred: (screen: string) => boolean, timeoutMs = 15_000): Promise<string> => {
    let last = '';
    try {
      return await waitFor(what, async () => {
        last = await capture(target);
        return pred(last) ? last : undefined;
      }, timeoutMs, 100);
    } catch (e) {
      throw new Error(`${(e as Error).message}; the pane showed:\n${last}`, { cause: e });
    }
  };
  const altScreen = async (target: string): Promise<string> => (await tmux('display-message', '-p', '-t', target, '#{alternate_on}')).trim();
  /** A pane of a fixed size running `cmd`, kept open after it exits so its last screen can be read. */
  const pane = async (name: string, cmd: string, cols = 100, rows = 30): Promise<void> => {
    await tmux('new-session', '-d', '-s', name, '-x', String(cols), '-y', String(rows), `${cmd}; echo EXIT=$?; sleep 120`);
  };

  beforeAll(async () => {
    t = await createTcpLab();
    sock = join(t.lab.tmpDir, 'tmux.sock');
    await startHttpServer(t.s, { port: HTTP_PORT });
  });
  afterAll(async () => {
    if (sock !== undefined) await execFileP('tmux', ['-S', sock, 'kill-server']).catch(() => undefined);
    await t?.lab.destroy();
  });

  it('up on a terminal: readable log lines and a summary of what it routes where; Ctrl-C stops it cleanly', async () => {
    const control = join(t.lab.tmpDir, 'pretty.sock');
    await pane('up', `ip netns exec ${t.c.name} node ${CLI} up --route ${ROUTE} --proxy ${PROXY} --tun trpretty0 --control ${control} --no-watchdog`, 160, 40);
    const screen = await screenWhere('up', 'the summary', (s) => s.includes('watch it:'));
    process.stdout.write(`[status-watch] up on a terminal:\n${screen.trimEnd()}\n`);
    expect(screen).not.toContain('{"level"');
    expect(screen).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: tunroute is up {2}dev=trpretty0 mtu=1500 .*mode=split outbounds=proxy defaultOutbound=proxy/m);
    expect(screen).toMatch(/INFO: {3}split tunnel: 1 prefix enters trpretty0: 10\.66\.1\.0\/24$/m);
    expect(screen).toMatch(/INFO: {3}outbound proxy: SOCKS5 proxy 10\.99\.0\.2:1080 \(the default\)$/m);
    expect(screen).toContain(`watch it: tunroute status --watch --control ${control}`);
    await tmux('send-keys', '-t', 'up', 'C-c');
    const after = await screenWhere('up', 'up to stop', (s) => s.includes('EXIT='));
    expect(after).toContain('EXIT=0');
    expect(after).toMatch(/INFO: stopping {2}signal=SIGINT/);
    expect(after).toMatch(/INFO: tunroute stopped; packet counters {2}rxPackets=\d+/);
  });

  describe('status --watch', () => {
    let up: LabProcess;
    let control: string;
    let curl: LabProcess;

    beforeAll(async () => {
      ({ proc: up, control } = await startTunroute(t.c, ['--route', ROUTE, '--proxy', PROXY]));
      // A steady download through tunroute for the view to show: 12 MB at 200 KB/s (~60 s, more
      // than the tests need), ended by --max-time at the latest.
      curl = t.c.spawn(['curl', '-sS', '-o', '/dev/null', '--limit-rate', '200k', '--max-time', '60', `http://${DEST}:${HTTP_PORT}/bytes/${12 * 1024 * 1024}`], { name: 'curl' });
    });
    afterAll(async () => {
      await curl?.stop();
      await up?.stop();
    });

    it('shows the download with its rate, fits a narrower window, and gives the terminal back on q', async () => {
      await pane('w', `node ${CLI} status --watch --control ${control}`, 100, 30);
      const screen = await screenWhere('w', 'the flow with a rate', (s) => /^tcp .*10\.66\.1\.7:8080 .*proxy .*(KiB|MiB)\/s/m.test(s), 20_000);
      process.stdout.write(`[status-watch] 100x30:\n${screen.trimEnd()}\n`);
      expect(await altScreen('w')).toBe('1');
      const lines = screen.split('\n');
      expect(lines[0]).toMatch(/^tunroute \S+ {2}pid \d+ {2}up .* {2}tun0 198\.18\.0\.1\/15 {2}mtu 1500 {2}routes 1$/);
      expect(lines[1]).toMatch(/^rate {6}up .*\/s .*down \d+(\.\d)? (B|KiB|MiB)\/s/);
      expect(screen).toMatch(/^PROTO +SOURCE +DESTINATION +OUTBOUND +UP\/s +DOWN\/s +TOTAL +AGE$/m);
      expect(screen).toMatch(/^q quit {2}· {2}every 1s {2}· {2}\d+ flows? {2}· {2}\d\d:\d\d:\d\d$/m);

      await tmux('resize-window', '-t', 'w', '-x', '48', '-y', '16');
      const narrow = await screenWhere('w', 'the view redrawn at 48 columns', (s) => /^(PROTO|DESTINATION)\b(?!.*SOURCE)/m.test(s), 10_000);
      process.stdout.write(`[status-watch] 48x16:\n${narrow.trimEnd()}\n`);
      for (const l of narrow.split('\n')) expect([...l].length).toBeLessThanOrEqual(48);
      expect(narrow).toMatch(/10\.66\.1\.7:8080/);

      await tmux('send-keys', '-t', 'w', 'q');
      const after = await screenWhere('w', 'the view to quit', (s) => s.includes('EXIT='), 10_000);
      expect(after).toContain('EXIT=0');
      expect(after).not.toContain('PROTO');
      expect(await altScreen('w')).toBe('0');
    });

    it('quits on Ctrl-C as well, with the terminal restored', async () => {
      await pane('w2', `node ${CLI} status --watch --control ${control}`, 80, 24);
      await screenWhere('w2', 'the view', (s) => s.includes('q quit'));
      expect(await altScreen('w2')).toBe('1');
      await tmux('send-keys', '-t', 'w2', 'C-c');
      const after = await screenWhere('w2', 'the view to quit', (s) => s.includes('EXIT='), 10_000);
      expect(after).toContain('EXIT=0');
      expect(await altScreen('w2')).toBe('0');
    });

    it('refuses without a terminal, in one sentence', async () => {
      const r = await execFileP('node', [CLI, 'status', '--watch', '--control', control], { encoding: 'utf8' }).catch((e: { code: number; stderr: string }) => e);
      expect('code' in r ? r.code : 0).toBe(1);
      expect(r.stderr).toBe('tunroute: The flag --watch needs a terminal on stdin and stdout: run it in one, or use `tunroute status --json` from scripts.\n');
    });
  });
});
