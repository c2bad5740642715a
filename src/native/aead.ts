/**
 * The typed view of the addon's WireGuard transport cipher (native/aead.c, in the same
 * build/Release/tunroute_native.node as the TUN device, loaded by addon.ts): ChaCha20-Poly1305
 * from libcrypto with one reused context per direction. Only the tunnel's transport AEAD
 * (src/wireguard/transport-aead.ts) uses it; it falls back to node:crypto without the addon.
 */
import { TunrouteError } from '../errors.js';
import { addonPath, loadNative } from './addon.js';

export interface NativeAeadAddon {
  /**
   * Writes the whole transport message at out[outOff ..]: type 4, receiverIndex and counter
   * (little-endian), then ChaCha20-Poly1305 of `packet` zero-padded to padTo, then the tag.
   * Returns its length. `packet` may already sit where the ciphertext goes (sealing in place).
   * Throws RangeError when `out` has no room, TypeError for arguments of the wrong type.
   */
  wgSeal(key: Uint8Array, receiverIndex: number, counter: bigint, packet: Uint8Array, padTo: number, out: Uint8Array, outOff: number): number;
  /**
   * Authenticates and decrypts the whole transport message `msg` (counter read from it) into
   * out[outOff ..]: the plaintext length, or -1 when it does not authenticate (the plaintext
   * is zeroed then). The output may be exactly the ciphertext's place (msg at offset 16); any
   * other overlap with `msg` throws RangeError.
   */
  wgOpen(key: Uint8Array, msg: Uint8Array, out: Uint8Array, outOff: number): number;
  /** Re-keys both contexts with zeros: no session key outlives its keypair inside the addon. */
  wgWipe(): void;
}

const FUNCTIONS = ['wgSeal', 'wgOpen', 'wgWipe'] as const;

function hasAead(m: object): m is NativeAeadAddon {
  const rec = m as Record<string, unknown>;
  return FUNCTIONS.every((f) => typeof rec[f] === 'function');
}

/** The addon's cipher functions. Throws TunrouteError TR_NATIVE_MISSING when not built or out of date. */
export function loadNativeAead(): NativeAeadAddon {
  const mod: object = loadNative();
  if (!hasAead(mod)) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      `The native addon at ${addonPath()} has no transport cipher (it is out of date): rebuild it with \`npm run build\` in the tunroute folder.`,
    );
  }
  return mod;
}

/** The addon's cipher functions, or undefined when the addon is not built. */
export function tryLoadNativeAead(): NativeAeadAddon | undefined {
  try {
    return loadNativeAead();
  } catch {
    return undefined;
  }
}
