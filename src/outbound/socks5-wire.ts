/**
 * The SOCKS5 handshake messages (RFC 1928, username/password RFC 1929) as pure functions:
 * `emit*` builds the bytes, `parse*` reads them back. Both directions exist for every message
 * so that the tests can play either side and check that each message round-trips.
 *
 * A parser takes the bytes received so far and returns undefined while the message is still
 * incomplete (TCP may split it anywhere), the parsed message (with its `length`, so that the
 * caller can see what follows it in the same chunk) once it is complete, and throws a
 * Socks5WireError when the bytes cannot be the message (wrong version, unknown address type).
 *
 *   greeting        05 nmethods methods…
 *   method reply    05 method                                  (ff: none acceptable)
 *   auth request    01 ulen user plen pass                     (RFC 1929)
 *   auth reply      01 status                                  (00: success)
 *   request         05 cmd 00 atyp dst.addr dst.port           (cmd 01 CONNECT, 03 UDP ASSOCIATE)
 *   reply           05 rep 00 atyp bnd.addr bnd.port           (rep 00: succeeded)
 *   atyp 01: 4-byte IPv4, 03: length-prefixed domain name, 04: 16-byte IPv6
 */
import { isIPv4, isIPv6 } from 'node:net';

export const SOCKS5_VERSION = 0x05;
export const SOCKS5_AUTH_VERSION = 0x01;
export const SOCKS5_METHOD_NO_AUTH = 0x00;
export const SOCKS5_METHOD_USER_PASS = 0x02;
export const SOCKS5_METHOD_NONE_ACCEPTABLE = 0xff;
export const SOCKS5_CMD_CONNECT = 0x01;
export const SOCKS5_CMD_UDP_ASSOCIATE = 0x03;
export const SOCKS5_ATYP_IPV4 = 0x01;
export const SOCKS5_ATYP_DOMAIN = 0x03;
export const SOCKS5_ATYP_IPV6 = 0x04;

/** Bytes that cannot be the expected SOCKS5 message; the handshake reports it as 'protocol'. */
export class Socks5WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Socks5WireError';
  }
}

/** A host and port as SOCKS5 carries them: an IPv4 or IPv6 literal, or a domain name. */
export interface Socks5Address {
  readonly host: string;
  readonly port: number;
}

export interface Socks5Greeting {
  readonly methods: readonly number[];
  readonly length: number;
}
export interface Socks5MethodReply {
  readonly method: number;
  readonly length: number;
}
export interface Socks5UserPass {
  readonly username: string;
  readonly password: string;
  readonly length: number;
}
export interface Socks5AuthReply {
  /** 0 = success; anything else is a refusal (RFC 1929 §2). */
  readonly status: number;
  readonly length: number;
}
export interface Socks5Request {
  readonly cmd: number;
  readonly dst: Socks5Address;
  readonly length: number;
}
export interface Socks5Reply {
  /** 0 = succeeded; RFC 1928 §6 lists the failures. */
  readonly rep: number;
  readonly bound: Socks5Address;
  readonly length: number;
}

function checkVersion(buf: Uint8Array, off: number, want: number, what: string): void {
  if (buf[off] !== want) throw new Socks5WireError(`${what}: version byte 0x${buf[off].toString(16).padStart(2, '0')}, expected 0x0${want}`);
}

// ---------------------------------------------------------------- greeting and method reply

export function emitGreeting(methods: readonly number[]): Buffer {
  if (methods.length < 1 || methods.length > 255) throw new RangeError(`a greeting offers 1..255 methods, got ${methods.length}`);
  const b = Buffer.allocUnsafe(2 + methods.length);
  b[0] = SOCKS5_VERSION;
  b[1] = methods.length;
  for (let i = 0; i < methods.length; i++) b[2 + i] = methods[i];
  return b;
}

export function parseGreeting(buf: Uint8Array, off = 0): Socks5Greeting | undefined {
  if (buf.length - off < 2) return undefined;
  checkVersion(buf, off, SOCKS5_VERSION, 'greeting');
  const n = buf[off + 1];
  if (buf.length - off < 2 + n) return undefined;
  return { methods: Array.from(buf.subarray(off + 2, off + 2 + n)), length: 2 + n };
}

export function emitMethodReply(method: number): Buffer {
  return Buffer.from([SOCKS5_VERSION, method]);
}

export function parseMethodReply(buf: Uint8Array, off = 0): Socks5MethodReply | undefined {
  if (buf.length - off < 1) return undefined;
  checkVersion(buf, off, SOCKS5_VERSION, 'method reply');
  if (buf.length - off < 2) return undefined;
  return { method: buf[off + 1], length: 2 };
}

// ---------------------------------------------------------------- RFC 1929 username/password

export function emitUserPassRequest(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  // RFC 1929 has one length byte for each; an empty field is allowed by no server we know.
  if (u.length < 1 || u.length > 255) throw new RangeError(`a SOCKS5 user name has 1..255 bytes, got ${u.length}`);
  if (p.length < 1 || p.length > 255) throw new RangeError(`a SOCKS5 password has 1..255 bytes, got ${p.length}`);
  const b = Buffer.allocUnsafe(3 + u.length + p.length);
  b[0] = SOCKS5_AUTH_VERSION;
  b[1] = u.length;
  u.copy(b, 2);
  b[2 + u.length] = p.length;
  p.copy(b, 3 + u.length);
  return b;
}

export function parseUserPassRequest(buf: Uint8Array, off = 0): Socks5UserPass | undefined {
  if (buf.length - off < 2) return undefined;
  checkVersion(buf, off, SOCKS5_AUTH_VERSION, 'username/password request');
  const ulen = buf[off + 1];
  if (buf.length - off < 3 + ulen) return undefined;
  const plen = buf[off + 2 + ulen];
  const length = 3 + ulen + plen;
  if (buf.length - off < length) return undefined;
  const text = (from: number, n: number): string => Buffer.from(buf.buffer, buf.byteOffset + off + from, n).toString('utf8');
  return { username: text(2, ulen), password: text(3 + ulen, plen), length };
}

export function emitAuthReply(status: number): Buffer {
  return Buffer.from([SOCKS5_AUTH_VERSION, status]);
}

export function parseAuthReply(buf: Uint8Array, off = 0): Socks5AuthReply | undefined {
  if (buf.length - off < 1) return undefined;
  // Some servers answer RFC 1929 with version 05 instead of 01; the status byte is what counts.
  if (buf[off] !== SOCKS5_AUTH_VERSION && buf[off] !== SOCKS5_VERSION) checkVersion(buf, off, SOCKS5_AUTH_VERSION, 'username/password reply');
  if (buf.length - off < 2) return undefined;
  return { status: buf[off + 1], length: 2 };
}

// ---------------------------------------------------------------- request and reply

/** Bytes of the address part (atyp, addr, port) of `a`. */
function addressLength(a: Socks5Address): number {
  if (isIPv4(a.host)) return 1 + 4 + 2;
  if (isIPv6(a.host)) return 1 + 16 + 2;
  const n = Buffer.byteLength(a.host, 'utf8');
  if (n < 1 || n > 255) throw new RangeError(`a SOCKS5 domain name has 1..255 bytes, got ${n}`);
  return 1 + 1 + n + 2;
}

function writeIPv4(b: Buffer, at: number, ip: string): void {
  let part = 0;
  let v = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 0x2e) {
      b[at + part++] = v;
      v = 0;
    } else v = v * 10 + (c - 0x30);
  }
  b[at + part] = v;
}

function writeIPv6(b: Buffer, at: number, ip: string): void {
  // Expand '::' into the missing zero groups; an embedded IPv4 tail becomes two groups.
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const q = v4[1].split('.').map(Number);
    text = `${text.slice(0, v4.index)}${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  for (let i = 0; i < 8; i++) b.writeUInt16BE(parseInt(groups[i], 16), at + 2 * i);
}

function writeAddress(b: Buffer, at: number, a: Socks5Address): void {
  if (isIPv4(a.host)) {
    b[at] = SOCKS5_ATYP_IPV4;
    writeIPv4(b, at + 1, a.host);
    b.writeUInt16BE(a.port, at + 5);
  } else if (isIPv6(a.host)) {
    b[at] = SOCKS5_ATYP_IPV6;
    writeIPv6(b, at + 1, a.host);
    b.writeUInt16BE(a.port, at + 17);
  } else {
    const n = b.write(a.host, at + 2, 'utf8');
    b[at] = SOCKS5_ATYP_DOMAIN;
    b[at + 1] = n;
    b.writeUInt16BE(a.port, at + 2 + n);
  }
}

/** Length of the address part at `off`, or -1 while incomplete. */
function readAddressLength(buf: Uint8Array, off: number, what: string): number {
  if (buf.length - off < 1) return -1;
  switch (buf[off]) {
    case SOCKS5_ATYP_IPV4:
      return 7;
    case SOCKS5_ATYP_IPV6:
      return 19;
    case SOCKS5_ATYP_DOMAIN:
      return buf.length - off < 2 ? -1 : 4 + buf[off + 1];
    default:
      throw new Socks5WireError(`${what}: unknown address type 0x${buf[off].toString(16).padStart(2, '0')}`);
  }
}

function readAddress(buf: Uint8Array, off: number): Socks5Address {
  const portAt = (n: number): number => (buf[off + n] << 8) | buf[off + n + 1];
  if (buf[off] === SOCKS5_ATYP_IPV4) return { host: `${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}.${buf[off + 4]}`, port: portAt(5) };
  if (buf[off] === SOCKS5_ATYP_IPV6) {
    const g: string[] = [];
    for (let i = 0; i < 8; i++) g.push(((buf[off + 1 + 2 * i] << 8) | buf[off + 2 + 2 * i]).toString(16));
    // The uncompressed form is a valid IPv6 literal; no caller needs the canonical one.
    return { host: g.join(':'), port: portAt(17) };
  }
  const n = buf[off + 1];
  return { host: Buffer.from(buf.buffer, buf.byteOffset + off + 2, n).toString('utf8'), port: portAt(2 + n) };
}

/** The bytes of a request: 05 cmd 00 then the address. */
export function emitRequest(cmd: number, dst: Socks5Address): Buffer {
  const b = Buffer.allocUnsafe(3 + addressLength(dst));
  writeRequest(b, 0, cmd, dst);
  return b;
}

/** Size of emitRequest(cmd, dst), to size one buffer for a pipelined handshake. */
export function requestLength(dst: Socks5Address): number {
  return 3 + addressLength(dst);
}

/** Write the request into `b` at `at` (room checked by the caller with requestLength). */
export function writeRequest(b: Buffer, at: number, cmd: number, dst: Socks5Address): void {
  b[at] = SOCKS5_VERSION;
  b[at + 1] = cmd;
  b[at + 2] = 0;
  writeAddress(b, at + 3, dst);
}

export function parseRequest(buf: Uint8Array, off = 0): Socks5Request | undefined {
  if (buf.length - off < 1) return undefined;
  checkVersion(buf, off, SOCKS5_VERSION, 'request');
  const n = readAddressLength(buf, off + 3, 'request');
  if (buf.length - off < 3 || n < 0 || buf.length - off < 3 + n) return undefined;
  return { cmd: buf[off + 1], dst: readAddress(buf, off + 3), length: 3 + n };
}

export function emitReply(rep: number, bound: Socks5Address): Buffer {
  // Same layout as a request, with rep in place of cmd.
  return emitRequest(rep, bound);
}

/** Length of the reply at `off`, or -1 while incomplete (no allocation: the CONNECT path). */
export function replyLength(buf: Uint8Array, off = 0): number {
  if (buf.length - off < 1) return -1;
  checkVersion(buf, off, SOCKS5_VERSION, 'reply');
  if (buf.length - off < 4) return -1;
  const n = readAddressLength(buf, off + 3, 'reply');
  return n < 0 || buf.length - off < 3 + n ? -1 : 3 + n;
}

export function parseReply(buf: Uint8Array, off = 0): Socks5Reply | undefined {
  const length = replyLength(buf, off);
  if (length < 0) return undefined;
  return { rep: buf[off + 1], bound: readAddress(buf, off + 3), length };
}

// ---------------------------------------------------------------- UDP ASSOCIATE datagrams

/** The header of a UDP relay datagram to `dst` (RSV 00 00, FRAG 00, address); data follows it. */
export function emitUdpHeader(dst: Socks5Address): Buffer {
  const b = Buffer.allocUnsafe(3 + addressLength(dst));
  b[0] = 0;
  b[1] = 0;
  b[2] = 0;
  writeAddress(b, 3, dst);
  return b;
}

export interface Socks5UdpHeader {
  readonly frag: number;
  readonly addr: Socks5Address;
  /** Where the data starts. */
  readonly length: number;
}

/** The header of a relay datagram, or undefined when it is truncated. */
export function parseUdpHeader(buf: Uint8Array): Socks5UdpHeader | undefined {
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) return undefined;
  const n = readAddressLength(buf, 3, 'UDP datagram');
  if (n < 0 || buf.length < 3 + n) return undefined;
  return { frag: buf[2], addr: readAddress(buf, 3), length: 3 + n };
}
