/**
 * `tunroute genkey` / `tunroute pubkey` print what `wg genkey` / `wg pubkey` print: checked
 * against the real `wg` (wireguard-tools) when it is installed, and through the built CLI.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { genkeyText, pubkeyText } from '../../src/cli/keys.js';
import { parseKey } from '../../src/wireguard/keys.js';
import { seededRandom } from './wg-harness.js';

const WG = '/usr/bin/wg';
const haveWg = existsSync(WG);
const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const haveCli = existsSync(CLI);
if (!haveWg) console.log('[wg-tunnel-keys] `wg` is not installed: comparisons with wg pubkey skipped (apt-get install wireguard-tools)');

function wg(args: string[], input: string): { out: string; code: number | null } {
  const r = spawnSync(WG, args, { input, encoding: 'utf8' });
  return { out: r.stdout, code: r.status };
}

describe('genkey and pubkey', () => {
  it('genkey prints one clamped key in wg’s base64 and a newline; two keys differ', () => {
    const a = genkeyText();
    expect(a).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    const k = parseKey(a);
    expect(k[0] & 7).toBe(0);
    expect(k[31] & 0xc0).toBe(0x40);
    expect(genkeyText()).not.toBe(a);
  });

  it.skipIf(!haveWg)('pubkey agrees with `wg pubkey` on 50 keys, ours and wg’s', () => {
    const rand = seededRandom('pubkey-vs-wg');
    for (let i = 0; i < 25; i++) {
      const priv = genkeyText(rand);
      expect(pubkeyText(priv)).toBe(wg(['pubkey'], priv).out);
      const theirs = wg(['genkey'], '').out;
      expect(pubkeyText(theirs)).toBe(wg(['pubkey'], theirs).out);
    }
  });

  it('pubkey ignores surrounding whitespace (as wg does) and refuses a bad key with TR_BAD_KEY', () => {
    const priv = genkeyText(seededRandom('ws'));
    expect(pubkeyText(`  ${priv.trim()}\r\n\n`)).toBe(pubkeyText(priv));
    expect(() => pubkeyText('not a key')).toThrow(expect.objectContaining({ code: 'TR_BAD_KEY' }));
  });

  it.skipIf(!haveCli)('the CLI: genkey | pubkey, and a bad key is exit 1 with one sentence (wg exits 1 too)', () => {
    const g = spawnSync('node', [CLI, 'genkey'], { encoding: 'utf8' });
    expect(g.status).toBe(0);
    const p = spawnSync('node', [CLI, 'pubkey'], { input: g.stdout, encoding: 'utf8' });
    expect([p.status, p.stdout]).toEqual([0, pubkeyText(g.stdout)]);
    if (haveWg) expect(p.stdout).toBe(wg(['pubkey'], g.stdout).out);
    const bad = spawnSync('node', [CLI, 'pubkey'], { input: 'AAAA\n', encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe('tunroute: the private key on stdin has 4 characters, not 44: paste the whole base64 key as printed by `wg genkey`/`wg pubkey`.\n');
    if (haveWg) expect(wg(['pubkey'], 'AAAA\n').code).toBe(1);
  });
});
