/**
 * `tunroute genkey` and `tunroute pubkey`: the same text as `wg genkey` / `wg pubkey` (wg(8)),
 * so keys move freely between tunroute, wg-quick files and other WireGuard peers.
 *
 *   tunroute genkey > client.key                 a new private key: 32 random bytes, clamped
 *                                                (RFC 7748 §5), base64 with padding, newline
 *   tunroute pubkey < client.key > client.pub    the matching public key, same format
 */
import { fstatSync } from 'node:fs';
import { TunrouteError } from '../errors.js';
import { formatKey, generatePrivateKey, KeyFormatError, parseKey, publicKeyOf, wipe, type RandomSource } from '../wireguard/keys.js';

/** A new private key, as one line. */
export function genkeyText(random?: RandomSource): string {
  const k = generatePrivateKey(random);
  const text = `${formatKey(k)}\n`;
  wipe(k);
  return text;
}

/** The public key of the private key in `input` (surrounding whitespace ignored), as one line. */
export function pubkeyText(input: string): string {
  let k: Uint8Array;
  try {
    k = parseKey(input, 'private key on stdin');
  } catch (e) {
    if (e instanceof KeyFormatError) throw new TunrouteError('TR_BAD_KEY', `${e.message}.`, e);
    throw e;
  }
  const text = `${formatKey(publicKeyOf(k))}\n`;
  wipe(k);
  return text;
}

/** As `wg genkey`: warn when the key goes into a file others can read. */
export function worldReadableWarning(fd = 1): string | undefined {
  try {
    const st = fstatSync(fd);
    if (st.isFile() && (st.mode & 0o077) !== 0) {
      return 'tunroute: warning: writing a private key to a file that others can read; run `umask 077` first or chmod 600 the file.\n';
    }
  } catch {
    // not a file we can stat: nothing to say
  }
  return undefined;
}

/** All of stdin as text (pubkey's input). */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}
