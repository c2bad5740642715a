/**
 * Logs for people and for programs (issue 15, item 5): one readable line per event on a
 * terminal, JSON lines everywhere else or when asked; nothing from the log reaches the terminal
 * raw. The CLI cases run the built tunroute under `script` for a real pseudo-terminal.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { prettyFactory } from 'pino-pretty';
import { prettyMessage, prettyOptions, resolveLogFormat } from '../../src/logger.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';

describe('log format', () => {
  it('auto is pretty on a terminal and JSON otherwise; json and pretty are what they say', () => {
    expect(resolveLogFormat('auto', { isTTY: true })).toBe('pretty');
    expect(resolveLogFormat('auto', { isTTY: false })).toBe('json');
    expect(resolveLogFormat('auto', {})).toBe('json');
    expect(resolveLogFormat('json', { isTTY: true })).toBe('json');
    expect(resolveLogFormat('pretty', { isTTY: false })).toBe('pretty');
  });
});

describe('pretty line', () => {
  const line = (o: Record<string, unknown>): string => prettyFactory(prettyOptions(false))(JSON.stringify({ level: 30, time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), pid: 7, hostname: 'h', app: 'tunroute', ...o }));

  it('is time, level, message and the scalar fields, on one line', () => {
    const l = line({ msg: 'tunroute is up', dev: 'tun0', mtu: 1500, offload: true, routes: ['10.0.0.0/8', '192.0.2.0/24'] });
    expect(l).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: tunroute is up {2}dev=tun0 mtu=1500 offload=true routes=10\.0\.0\.0\/8,192\.0\.2\.0\/24\n$/);
    expect(l).not.toContain('pid');
    expect(l).not.toContain('hostname');
  });

  it('leaves nested objects to the JSON format and shows an error by its message', () => {
    const l = line({ level: 50, msg: 'teardown failed', err: { type: 'Error', message: 'ip exited 2', stack: 'Error: ip exited 2\n    at x' }, tcp: { flowsOpen: 3 } });
    expect(l).toMatch(/ERROR: teardown failed {2}err="ip exited 2"\n$/);
    expect(l.split('\n')).toHaveLength(2);
  });

  it('quotes values with spaces and escapes control characters, so one event stays one line', () => {
    const msg = prettyMessage({ msg: 'name\x1b]0;pwned\x07 seen', name: 'evil\nname', path: 'a b' });
    expect(msg).toBe('name\\x1b]0;pwned\\x07 seen  name="evil\\nname" path="a b"');
    expect([...msg].some((c) => c.charCodeAt(0) < 0x20)).toBe(false);
  });

  it('dims the fields when colour is on', () => {
    expect(prettyMessage({ msg: 'm', a: 1 }, { dim: (s) => `<${s}>` })).toBe('m  <a=1>');
  });
});

describe('the command line', () => {
  const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
  const hasScript = spawnSync('script', ['--version']).status === 0;
  const dir = mkdtempSync(join(tmpdir(), 'tunroute-logs-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A config whose loading logs one warning (a private key others may read): a real log line without root. */
  function sharedKeyConfig(): string {
    const key = generatePrivateKey();
    const p = join(dir, 'shared.yaml');
    writeFileSync(p, `outbounds:\n  - name: wg\n    type: wireguard\n    privateKey: ${formatKey(key)}\n    peers:\n      - publicKey: ${formatKey(publicKeyOf(key))}\n        allowedIPs: [10.9.0.0/16]\n`);
    chmodSync(p, 0o644);
    return p;
  }

  // CI=true (as CI runs us) makes Node report a 2-colour terminal, so it is cleared along with the colour switches.
  const env = { ...process.env, TERM: 'xterm-256color', NO_COLOR: undefined, FORCE_COLOR: undefined, NODE_DISABLE_COLORS: undefined, CI: undefined };
  /** stderr of `up --dry-run` under a pseudo-terminal (script(1) merges it into its output). */
  function onTerminal(args: string): string {
    const r = spawnSync('script', ['-qec', `${process.execPath} ${CLI} up --dry-run ${args} >/dev/null`, '/dev/null'], { encoding: 'utf8', env });
    expect(r.status).toBe(0);
    return r.stdout.replace(/\r\n/g, '\n');
  }
  function onPipe(args: string[]): string {
    const r = spawnSync(process.execPath, [CLI, 'up', '--dry-run', ...args], { encoding: 'utf8', env });
    expect(r.status).toBe(0);
    return r.stderr;
  }

  it.skipIf(!existsSync(CLI) || !hasScript)('writes readable, coloured lines to a terminal and JSON lines to a pipe', () => {
    const conf = sharedKeyConfig();
    const tty = onTerminal(`-c ${conf}`);
    const ESC = '\x1b';
    expect(tty.startsWith('[')).toBe(true);
    expect(tty).toContain(`] ${ESC}[33mWARN${ESC}[39m: `);
    expect(tty).toMatch(/world accessible and holds a private key: chmod 600 it {2}.*file=.*shared\.yaml mode=0644.*\n$/);
    expect(tty.split('\n')).toHaveLength(2);

    const piped = onPipe(['-c', conf]);
    const json = JSON.parse(piped) as { level: number; msg: string; mode: string };
    expect(json).toMatchObject({ level: 40, mode: '0644' });
    expect(json.msg).toContain('world accessible');
  });

  it.skipIf(!existsSync(CLI) || !hasScript)('--log-format json keeps a terminal machine-clean, --log-format pretty forces lines (no colour on a pipe)', () => {
    const conf = sharedKeyConfig();
    const tty = onTerminal(`-c ${conf} --log-format json`);
    expect(JSON.parse(tty)).toMatchObject({ level: 40, app: 'tunroute' });

    const piped = onPipe(['-c', conf, '--log-format', 'pretty']);
    expect(piped).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: .*world accessible.* {2}file=.* mode=0644\n$/);
  });

  it.skipIf(!existsSync(CLI))('loads pino-pretty only for a pretty logger: JSON costs nothing more than before', () => {
    const logger = fileURLToPath(new URL('../../dist/logger.js', import.meta.url));
    const probe = `import(${JSON.stringify(logger)}).then((m) => {
      const loaded = () => Object.keys(require.cache).some((k) => k.includes('pino-pretty'));
      m.createLogger('info', 'json'); const json = loaded();
      m.createLogger('info', 'pretty'); process.stdout.write(JSON.stringify([json, loaded()]));
    })`;
    const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
    expect(JSON.parse(r.stdout)).toEqual([false, true]);
  });

  it.skipIf(!existsSync(CLI))('refuses an unknown format in one sentence', () => {
    const r = spawnSync(process.execPath, [CLI, 'up', '--dry-run', '--route', '10.9.0.0/16', '--log-format', 'xml'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^tunroute: The flag --log-format "xml" .*"auto"\|"json"\|"pretty".*\n$/);
  });
});
