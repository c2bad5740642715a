/**
 * The cipher of transport data messages (whitepaper §5.4.6): seal a packet into a whole
 * message, open a message into its padded plaintext. Two implementations of one contract:
 *
 * - `native`: ChaCha20-Poly1305 from libcrypto through the addon (native/aead.c), one reused
 *   cipher context, ~6× less CPU per 1,420-byte packet than node:crypto, whose per-message
 *   Cipheriv object and Buffers cost more than the cipher itself.
 * - `node`: node:crypto, used when the addon is not built (unit tests, the server on a machine
 *   without a compiler) and as the independent implementation the native one is tested against.
 *
 * Keys are the raw 32 bytes; the caller owns and wipes them.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { tryLoadNativeAead } from '../native/aead.js';
import { MESSAGE_TRANSPORT, TRANSPORT_HEADER_LEN, transportCounter, writeU32, writeU64 } from './messages.js';
import { aeadNonce, AEAD_TAG_LEN } from './noise.js';

export interface TransportAead {
  readonly name: 'native' | 'node';
  /**
   * Write the whole transport message (header, ciphertext of `packet` zero-padded to `padTo`,
   * tag) at out[outOff ..]; returns its length. `out` must have room.
   */
  seal(key: Uint8Array, receiverIndex: number, counter: bigint, packet: Uint8Array, padTo: number, out: Uint8Array, outOff: number): number;
  /**
   * Authenticate and decrypt the whole transport message `msg` (counter read from it) into
   * out[outOff ..]: the plaintext length, or -1 when it does not authenticate (nothing of the
   * plaintext is left in `out` then).
   */
  open(key: Uint8Array, msg: Uint8Array, out: Uint8Array, outOff: number): number;
  /** Forget any copy of a session key held inside the implementation. */
  wipe(): void;
}

export const nodeAead: TransportAead = {
  name: 'node',
  seal(key, receiverIndex, counter, packet, padTo, out, outOff) {
    const n = Math.max(padTo, packet.length);
    writeU32(out, outOff, MESSAGE_TRANSPORT);
    writeU32(out, outOff + 4, receiverIndex);
    writeU64(out, outOff + 8, counter);
    const c = createCipheriv('chacha20-poly1305', key, aeadNonce(counter), { authTagLength: AEAD_TAG_LEN });
    let at = outOff + TRANSPORT_HEADER_LEN;
    if (packet.length > 0) {
      out.set(c.update(packet), at);
      at += packet.length;
    }
    if (n > packet.length) {
      out.set(c.update(new Uint8Array(n - packet.length)), at);
      at += n - packet.length;
    }
    c.final();
    out.set(c.getAuthTag(), at);
    return TRANSPORT_HEADER_LEN + n + AEAD_TAG_LEN;
  },
  open(key, msg, out, outOff) {
    const end = msg.length - AEAD_TAG_LEN;
    const d = createDecipheriv('chacha20-poly1305', key, aeadNonce(transportCounter(msg)), { authTagLength: AEAD_TAG_LEN });
    d.setAuthTag(msg.subarray(end));
    const plain = end > TRANSPORT_HEADER_LEN ? d.update(msg.subarray(TRANSPORT_HEADER_LEN, end)) : new Uint8Array(0);
    try {
      d.final();
    } catch {
      plain.fill(0);
      return -1;
    }
    out.set(plain, outOff);
    plain.fill(0);
    return plain.length;
  },
  wipe() {
    // node:crypto keeps no context between messages
  },
};

function nativeAead(): TransportAead | undefined {
  const fns = tryLoadNativeAead();
  if (fns === undefined) return undefined;
  return {
    name: 'native',
    seal: (key, receiverIndex, counter, packet, padTo, out, outOff) => fns.wgSeal(key, receiverIndex, counter, packet, padTo, out, outOff),
    open: (key, msg, out, outOff) => fns.wgOpen(key, msg, out, outOff),
    wipe: () => fns.wgWipe(),
  };
}

let chosen: TransportAead | undefined;

/** The native cipher when the addon is built, node:crypto otherwise; chosen once. */
export function transportAead(): TransportAead {
  chosen ??= nativeAead() ?? nodeAead;
  return chosen;
}
