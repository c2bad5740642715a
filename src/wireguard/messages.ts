/**
 * The four message types — WireGuard whitepaper §5.4.2-§5.4.7 and the protocol page
 * (wireguard.com/protocol). All integers are little-endian; every message starts with one
 * type byte and three reserved zero bytes (read together as one little-endian u32 = type).
 *
 * Handshake initiation (type 1), 148 bytes:
 *
 *     0       1       2       3       4               8
 *    +-------+-------+-------+-------+---------------+
 *    | type=1|    reserved (zero)    | sender index  |
 *    +-------+-------+-------+-------+---------------+
 *    |           unencrypted_ephemeral (32)          |  8..40
 *    |           encrypted_static (32 + 16)          | 40..88
 *    |           encrypted_timestamp (12 + 16)       | 88..116
 *    |           mac1 (16)                           | 116..132
 *    |           mac2 (16)                           | 132..148
 *
 * Handshake response (type 2), 92 bytes:
 *
 *    | type=2 | reserved | sender (4) | receiver (4) |   0..12
 *    | unencrypted_ephemeral (32)                    |  12..44
 *    | encrypted_nothing (0 + 16)                    |  44..60
 *    | mac1 (16)                                     |  60..76
 *    | mac2 (16)                                     |  76..92
 *
 * Cookie reply (type 3), 64 bytes:
 *
 *    | type=3 | reserved | receiver (4) |  0..8
 *    | nonce (24)                       |  8..32
 *    | encrypted_cookie (16 + 16)       | 32..64
 *
 * Transport data (type 4), 16 + n + 16 bytes (n = padded packet length, a multiple of 16;
 * a keepalive has n = 0):
 *
 *    | type=4 | reserved | receiver (4) | counter (8, LE) | encrypted_encapsulated_packet |
 *
 * `parse` validates the length and the reserved bytes and returns subarrays (no copy) or
 * `undefined`; `emit` writes every byte of its message. Nothing here throws on input.
 */

export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;

export const INITIATION_LEN = 148;
export const RESPONSE_LEN = 92;
export const COOKIE_REPLY_LEN = 64;
export const TRANSPORT_HEADER_LEN = 16;
/** A transport message with an empty payload (keepalive): header + tag. */
export const TRANSPORT_MIN_LEN = TRANSPORT_HEADER_LEN + 16;

// Initiation
const I_SENDER = 4;
const I_EPHEMERAL = 8;
const I_STATIC = 40;
const I_TIMESTAMP = 88;
export const INITIATION_MAC1_OFFSET = 116;
export const INITIATION_MAC2_OFFSET = 132;
// Response
const R_SENDER = 4;
const R_RECEIVER = 8;
const R_EPHEMERAL = 12;
const R_EMPTY = 44;
export const RESPONSE_MAC1_OFFSET = 60;
export const RESPONSE_MAC2_OFFSET = 76;
// Cookie reply
const C_RECEIVER = 4;
const C_NONCE = 8;
const C_COOKIE = 32;
// Transport
const T_RECEIVER = 4;
const T_COUNTER = 8;

export const ENCRYPTED_STATIC_LEN = 48;
export const ENCRYPTED_TIMESTAMP_LEN = 28;
export const ENCRYPTED_NOTHING_LEN = 16;
export const ENCRYPTED_COOKIE_LEN = 32;

export function readU32(b: Uint8Array, i: number): number {
  return (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
}

export function writeU32(b: Uint8Array, i: number, v: number): void {
  b[i] = v & 0xff;
  b[i + 1] = (v >>> 8) & 0xff;
  b[i + 2] = (v >>> 16) & 0xff;
  b[i + 3] = (v >>> 24) & 0xff;
}

const TWO_32 = 0x1_0000_0000;
const SAFE_HI = 0x20_0000; // hi words below this keep hi·2^32 + lo under 2^53: exact as a Number
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export function readU64(b: Uint8Array, i: number): bigint {
  const lo = readU32(b, i);
  const hi = readU32(b, i + 4);
  // One BigInt conversion on the common path (counters far below 2^53).
  if (hi < SAFE_HI) return BigInt(hi * TWO_32 + lo);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

export function writeU64(b: Uint8Array, i: number, v: bigint): void {
  if (v <= MAX_SAFE) {
    const n = Number(v);
    writeU32(b, i, n >>> 0);
    writeU32(b, i + 4, Math.floor(n / TWO_32));
    return;
  }
  writeU32(b, i, Number(v & 0xffffffffn));
  writeU32(b, i + 4, Number((v >> 32n) & 0xffffffffn));
}

/** Why a datagram is not a well-formed message. */
export type MessageError = 'truncated' | 'bad_length' | 'unknown_type';

/**
 * The type of a datagram when its length fits that type exactly (handshake messages) or at
 * least (transport: header + tag), else why not. The first 4 bytes are read as one u32, so
 * non-zero reserved bytes make an unknown type, as in wireguard-go.
 */
export function messageType(buf: Uint8Array): number | MessageError {
  if (buf.length < 4) return 'truncated';
  const t = readU32(buf, 0);
  switch (t) {
    case MESSAGE_INITIATION:
      return buf.length === INITIATION_LEN ? t : buf.length < INITIATION_LEN ? 'truncated' : 'bad_length';
    case MESSAGE_RESPONSE:
      return buf.length === RESPONSE_LEN ? t : buf.length < RESPONSE_LEN ? 'truncated' : 'bad_length';
    case MESSAGE_COOKIE_REPLY:
      return buf.length === COOKIE_REPLY_LEN ? t : buf.length < COOKIE_REPLY_LEN ? 'truncated' : 'bad_length';
    case MESSAGE_TRANSPORT:
      return buf.length >= TRANSPORT_MIN_LEN ? t : 'truncated';
    default:
      return 'unknown_type';
  }
}

function header(buf: Uint8Array, off: number, type: number): void {
  writeU32(buf, off, type);
}

function copyField(dst: Uint8Array, at: number, src: Uint8Array, len: number, name: string): void {
  if (src.length !== len) throw new RangeError(`${name} must be ${len} bytes, got ${src.length}`);
  dst.set(src, at);
}

export interface InitiationRepr {
  sender: number;
  ephemeral: Uint8Array;
  encryptedStatic: Uint8Array;
  encryptedTimestamp: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export const InitiationMessage = {
  parse(buf: Uint8Array): InitiationRepr | undefined {
    if (messageType(buf) !== MESSAGE_INITIATION) return undefined;
    return {
      sender: readU32(buf, I_SENDER),
      ephemeral: buf.subarray(I_EPHEMERAL, I_STATIC),
      encryptedStatic: buf.subarray(I_STATIC, I_TIMESTAMP),
      encryptedTimestamp: buf.subarray(I_TIMESTAMP, INITIATION_MAC1_OFFSET),
      mac1: buf.subarray(INITIATION_MAC1_OFFSET, INITIATION_MAC2_OFFSET),
      mac2: buf.subarray(INITIATION_MAC2_OFFSET, INITIATION_LEN),
    };
  },
  bufferLen(_r: InitiationRepr): number {
    return INITIATION_LEN;
  },
  /** Write all 148 bytes at `buf[off]`; returns 148. Throws (a programming error) on wrong field sizes. */
  emit(r: InitiationRepr, buf: Uint8Array, off = 0): number {
    header(buf, off, MESSAGE_INITIATION);
    writeU32(buf, off + I_SENDER, r.sender);
    copyField(buf, off + I_EPHEMERAL, r.ephemeral, 32, 'ephemeral');
    copyField(buf, off + I_STATIC, r.encryptedStatic, ENCRYPTED_STATIC_LEN, 'encryptedStatic');
    copyField(buf, off + I_TIMESTAMP, r.encryptedTimestamp, ENCRYPTED_TIMESTAMP_LEN, 'encryptedTimestamp');
    copyField(buf, off + INITIATION_MAC1_OFFSET, r.mac1, 16, 'mac1');
    copyField(buf, off + INITIATION_MAC2_OFFSET, r.mac2, 16, 'mac2');
    return INITIATION_LEN;
  },
};

export interface ResponseRepr {
  sender: number;
  receiver: number;
  ephemeral: Uint8Array;
  encryptedNothing: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export const ResponseMessage = {
  parse(buf: Uint8Array): ResponseRepr | undefined {
    if (messageType(buf) !== MESSAGE_RESPONSE) return undefined;
    return {
      sender: readU32(buf, R_SENDER),
      receiver: readU32(buf, R_RECEIVER),
      ephemeral: buf.subarray(R_EPHEMERAL, R_EMPTY),
      encryptedNothing: buf.subarray(R_EMPTY, RESPONSE_MAC1_OFFSET),
      mac1: buf.subarray(RESPONSE_MAC1_OFFSET, RESPONSE_MAC2_OFFSET),
      mac2: buf.subarray(RESPONSE_MAC2_OFFSET, RESPONSE_LEN),
    };
  },
  bufferLen(_r: ResponseRepr): number {
    return RESPONSE_LEN;
  },
  emit(r: ResponseRepr, buf: Uint8Array, off = 0): number {
    header(buf, off, MESSAGE_RESPONSE);
    writeU32(buf, off + R_SENDER, r.sender);
    writeU32(buf, off + R_RECEIVER, r.receiver);
    copyField(buf, off + R_EPHEMERAL, r.ephemeral, 32, 'ephemeral');
    copyField(buf, off + R_EMPTY, r.encryptedNothing, ENCRYPTED_NOTHING_LEN, 'encryptedNothing');
    copyField(buf, off + RESPONSE_MAC1_OFFSET, r.mac1, 16, 'mac1');
    copyField(buf, off + RESPONSE_MAC2_OFFSET, r.mac2, 16, 'mac2');
    return RESPONSE_LEN;
  },
};

export interface CookieReplyRepr {
  receiver: number;
  nonce: Uint8Array;
  encryptedCookie: Uint8Array;
}

export const CookieReplyMessage = {
  parse(buf: Uint8Array): CookieReplyRepr | undefined {
    if (messageType(buf) !== MESSAGE_COOKIE_REPLY) return undefined;
    return {
      receiver: readU32(buf, C_RECEIVER),
      nonce: buf.subarray(C_NONCE, C_COOKIE),
      encryptedCookie: buf.subarray(C_COOKIE, COOKIE_REPLY_LEN),
    };
  },
  bufferLen(_r: CookieReplyRepr): number {
    return COOKIE_REPLY_LEN;
  },
  emit(r: CookieReplyRepr, buf: Uint8Array, off = 0): number {
    header(buf, off, MESSAGE_COOKIE_REPLY);
    writeU32(buf, off + C_RECEIVER, r.receiver);
    copyField(buf, off + C_NONCE, r.nonce, 24, 'nonce');
    copyField(buf, off + C_COOKIE, r.encryptedCookie, ENCRYPTED_COOKIE_LEN, 'encryptedCookie');
    return COOKIE_REPLY_LEN;
  },
};

export interface TransportHeaderRepr {
  receiver: number;
  counter: bigint;
}

export const TransportHeader = {
  /** The header of a transport message (at least header + tag long); the payload is `buf.subarray(16)`. */
  parse(buf: Uint8Array): TransportHeaderRepr | undefined {
    if (messageType(buf) !== MESSAGE_TRANSPORT) return undefined;
    return { receiver: readU32(buf, T_RECEIVER), counter: readU64(buf, T_COUNTER) };
  },
  bufferLen(_r: TransportHeaderRepr): number {
    return TRANSPORT_HEADER_LEN;
  },
  /** Write the 16-byte header; the caller writes the encrypted packet after it. */
  emit(r: TransportHeaderRepr, buf: Uint8Array, off = 0): number {
    header(buf, off, MESSAGE_TRANSPORT);
    writeU32(buf, off + T_RECEIVER, r.receiver);
    writeU64(buf, off + T_COUNTER, r.counter);
    return TRANSPORT_HEADER_LEN;
  },
};

/** The receiver index of a transport message (no validation beyond what messageType did). */
export function transportReceiver(buf: Uint8Array): number {
  return readU32(buf, T_RECEIVER);
}

/** The counter of a transport message. */
export function transportCounter(buf: Uint8Array): bigint {
  return readU64(buf, T_COUNTER);
}
