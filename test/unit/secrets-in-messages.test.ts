/**
 * Issue 13, item 2: secrets never reach a message, and nothing a file or flag holds reaches the
 * terminal raw. tunroute runs as root, so a path may name any file: only bounded regular files
 * are read, and a line that does not parse is not echoed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { loadServerConfig } from '../../src/config/server-schema.js';
import { readWgQuickFile } from '../../src/config/wg-quick.js';
import { LIST_FILE_MAX_BYTES } from '../../src/config/input-file.js';
import { escapeInput, isTunrouteError, shown } from '../../src/errors.js';
import { hostProbe, NO_NETWORK, probeRouteEnv, type HostProbe } from '../../src/routes/host.js';
import { planRoutes } from '../../src/routes/plan.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { seededRandom } from './wg-harness.js';

const dir = mkdtempSync(join(tmpdir(), 'tunroute-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string, mode = 0o600): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isTunrouteError(e)) return e.message;
    throw e;
  }
  throw new Error('expected a TunrouteError');
}

async function rejectionOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isTunrouteError(e)) return e.message;
    throw e;
  }
  throw new Error('expected a TunrouteError');
}

/** No 6 characters in a row of `secret` appear in `message`. */
function leaks(message: string, secret: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 6 <= secret.length; i++) if (message.includes(secret.slice(i, i + 6))) out.push(secret.slice(i, i + 6));
  return out;
}

const PRIV = formatKey(generatePrivateKey(seededRandom('secrets/priv')));
const PUB = formatKey(publicKeyOf(generatePrivateKey(seededRandom('secrets/peer'))));
const SHORT = PRIV.slice(0, 43); // one character short

/** Whether a message holds a raw control character (one that would reach the terminal). */
const hasControl = (m: string): boolean => [...m].some((c) => c.charCodeAt(0) < 0x20);

const host = (): HostProbe => ({ ...hostProbe(), network: () => Promise.resolve(NO_NETWORK), resolve: () => Promise.resolve(['203.0.113.5']) });

describe('keys are named, never shown', () => {
  it('a private key one character short, in a config file', () => {
    const f = file('short.yaml', `outbounds:\n  - name: wg\n    type: wireguard\n    privateKey: ${SHORT}\n    peers:\n      - publicKey: ${PUB}\n`);
    const m = messageOf(() => loadConfig({ file: f }));
    expect(m).toContain('outbounds[0].privateKey is not a WireGuard key');
    expect(leaks(m, SHORT)).toEqual([]);
  });

  it('a private key one character short, in a server config and a wg-quick file', () => {
    const s = file('server.yaml', `privateKey: ${SHORT}\nlisten: 0.0.0.0:51820\npeers:\n  - publicKey: ${PUB}\n    allowedIPs: [10.9.0.2/32]\n`);
    const m1 = messageOf(() => loadServerConfig({ file: s }));
    expect(m1).toContain('privateKey');
    expect(leaks(m1, SHORT)).toEqual([]);
    const w = file('short.conf', `[Interface]\nPrivateKey = ${SHORT}\n[Peer]\nPublicKey = ${PUB}\n`);
    const m2 = messageOf(() => readWgQuickFile(w));
    expect(m2).toContain('line 2: PrivateKey: the private key has 43 characters, not 44');
    expect(leaks(m2, SHORT)).toEqual([]);
  });

  it('a wg-quick line "PrivateKey: <key>" (a colon for "=") is named by line and key, not echoed', () => {
    const w = file('colon.conf', `[Interface]\nPrivateKey: ${PRIV}\n[Peer]\nPublicKey = ${PUB}\n`);
    const m = messageOf(() => readWgQuickFile(w));
    expect(m).toBe(`${w} line 2: PrivateKey is not followed by "=" (the line is not shown: it may hold a secret): write it as PrivateKey = <value>.`);
    expect(leaks(m, PRIV)).toEqual([]);
  });

  it('a bare key on a line of its own (it ends in "=") is not taken for a key name and echoed', () => {
    const w = file('bare.conf', `[Interface]\n${PRIV}\n[Peer]\nPublicKey = ${PUB}\n`);
    const m = messageOf(() => readWgQuickFile(w));
    expect(m).toContain('line 2: the line is neither a [Section] nor a Key = Value line (it is not shown: it may hold a secret)');
    expect(leaks(m, PRIV)).toEqual([]);
  });

  it('a proxy password is never shown, from a flag or a file', () => {
    const m = messageOf(() => loadConfig({ flags: { proxy: 'socks5://bob:hunter2secret@host:0' } }));
    expect(m).toContain('bob:***@host:0');
    expect(m).not.toContain('hunter2');
  });
});

describe('files root is asked to read', () => {
  it('a route file whose first line looks like /etc/shadow: the line never appears in the error', async () => {
    const secret = 'root:$y$j9T$FAKEsaltFAKE$FAKEhashFAKEhashFAKEhash:19700:0:99999:7:::';
    const f = file('shadow-like', `${secret}\ndaemon:*:19700:0:99999:7:::\n`);
    const config = loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080', routeFile: [f] } });
    const env = await probeRouteEnv(config, host());
    const m = messageOf(() => planRoutes(config, env));
    expect(m).toBe(`${f} line 1 (listed in routes.includeFiles[0]): the line (not shown: it holds more than digits, "." and "/") is not an IPv4 CIDR like 10.0.0.0/8; fix the line or comment it out with #.`);
    expect(leaks(m, secret)).toEqual([]);
  });

  it('/dev/zero, a FIFO and a directory as route files are refused before a byte is read', async () => {
    const config = (p: string) => loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080', routeFile: [p] } });
    expect(await rejectionOf(probeRouteEnv(config('/dev/zero'), host()))).toBe(
      'The CIDR file /dev/zero (routes.includeFiles[0]) is a character device, not a regular file: give the path of a regular file.',
    );
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(await rejectionOf(probeRouteEnv(config(fifo), host()))).toContain('is a FIFO, not a regular file');
    expect(await rejectionOf(probeRouteEnv(config(dir), host()))).toContain('is a directory, not a regular file');
    expect(messageOf(() => loadConfig({ flags: { tunnel: ['/dev/zero'] } }))).toContain('The tunnel file /dev/zero (--tunnel) is a character device');
    expect(messageOf(() => loadConfig({ file: '/dev/zero' }))).toContain('The config file /dev/zero (-c) is a character device');
  });

  it('a route file above the 64 MiB cap is refused without reading it', async () => {
    const big = join(dir, 'big.txt');
    writeFileSync(big, '');
    truncateSync(big, LIST_FILE_MAX_BYTES + 1); // sparse: nothing is written
    const config = loadConfig({ flags: { proxy: 'socks5://203.0.113.5:1080', routeFile: [big] } });
    expect(await rejectionOf(probeRouteEnv(config, host()))).toBe(`The CIDR file ${big} (routes.includeFiles[0]) is 64 MiB, more than the 64 MiB tunroute reads for it: split it or trim it.`);
  });

  it('warns, as wg-quick does, when a file holding a private key can be read by others', () => {
    const log = { warn: vi.fn() };
    const w = file('open.conf', `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nPublicKey = ${PUB}\n`, 0o644);
    readWgQuickFile(w, log);
    expect(log.warn).toHaveBeenCalledWith({ file: w, mode: '0644' }, `Warning: \`${w}' is world accessible and holds a private key: chmod 600 it`);
    const c = file('group.yaml', `outbounds:\n  - name: wg\n    type: wireguard\n    privateKey: ${PRIV}\n    peers:\n      - publicKey: ${PUB}\n`, 0o640);
    log.warn.mockClear();
    loadConfig({ file: c, log });
    expect(log.warn).toHaveBeenCalledWith({ file: c, mode: '0640' }, `Warning: \`${c}' is accessible to its group and holds a private key: chmod 600 it`);
    // Private files, and files without a key, are not warned about.
    log.warn.mockClear();
    readWgQuickFile(file('closed.conf', `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nPublicKey = ${PUB}\n`), log);
    loadConfig({ file: file('nokey.yaml', 'tun:\n  name: tun7\n', 0o644), log });
    expect(log.warn).not.toHaveBeenCalled();
  });
});

describe('quoted input is escaped and cut', () => {
  it('control characters become \\xNN, bidi controls \\u{…}, and long text is cut at 80 characters', () => {
    expect(shown('a\x1b[2Jb\x07\u202e"\\')).toBe('"a\\x1b[2Jb\\x07\\u{202e}\\"\\\\"');
    expect(escapeInput('x'.repeat(200))).toBe(`${'x'.repeat(80)}…`);
  });

  it('in the errors of flags, config fields and wg-quick values', () => {
    const m1 = messageOf(() => loadConfig({ flags: { tun: '\x1b]0;pwned\x07' } }));
    expect(m1).toContain('The flag --tun "\\x1b]0;pwned\\x07" is not a valid interface name');
    expect(hasControl(m1)).toBe(false);
    const f = file('esc.yaml', `icmp: "${'\\e'.repeat(3)}${'y'.repeat(300)}"\n`);
    const m2 = messageOf(() => loadConfig({ file: f }));
    expect(m2).toContain(`icmp "\\x1b\\x1b\\x1b${'y'.repeat(77)}…"`);
    expect(hasControl(m2)).toBe(false);
    const w = file('esc.conf', `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nPublicKey = ${PUB}\nEndpoint = evil\x1b]0;x\x07:1\n`);
    const m3 = messageOf(() => readWgQuickFile(w));
    expect(m3).toContain('Endpoint "evil\\x1b]0;x\\x07:1" is not HOST:PORT');
    expect(hasControl(m3)).toBe(false);
  });
});

describe('the command line', () => {
  const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
  it.skipIf(!existsSync(CLI))('never writes a control character from a flag to the terminal (our errors and commander\'s)', () => {
    const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    const a = run('up', '--dry-run', '--mtu', '1\x1b[2J');
    expect(a.status).toBe(2);
    expect(a.stderr).toContain('--mtu needs a whole number, got "1\\x1b[2J"');
    const b = run('up', '--dry-run', '--proxy', 'socks5://\x1b]0;x\x07:1080');
    expect(b.status).toBe(1);
    const c = run('up', '--\x1b[31mred');
    expect(c.status).toBe(2);
    for (const r of [a, b, c]) expect([...r.stderr].filter((ch) => ch.charCodeAt(0) < 0x20 && ch !== '\n')).toEqual([]);
  });
});

describe('down --tun', () => {
  const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
  it.skipIf(!existsSync(CLI))('refuses a device name that starts with "-", with one sentence', () => {
    const r = spawnSync(process.execPath, [CLI, 'down', '--tun=-x', '--state-dir', join(dir, 'no-state')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('tunroute: The flag --tun "-x" is not a valid interface name: use 1–15 letters, digits, "_", "-" or ".", not starting with "-" and not "." or "..".\n');
  });
});
