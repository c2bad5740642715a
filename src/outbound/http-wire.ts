/**
 * The HTTP CONNECT handshake (RFC 9110 §9.3.6, HTTP/1.1 message syntax RFC 9112) as pure
 * functions: `emit*` builds the bytes, `parse*` reads them back. Both directions exist so that
 * the tests (and a test proxy) can play either side and check that each message round-trips.
 *
 *   request    CONNECT host:port HTTP/1.1\r\n
 *              Host: host:port\r\n
 *              [Proxy-Authorization: Basic base64(user:pass)\r\n]       (RFC 7617)
 *              \r\n
 *   response   HTTP/1.1 200 Connection established\r\n
 *              [header lines]\r\n
 *              \r\n
 *              … then the tunnel: every byte after the blank line is the destination's.
 *
 * A parser takes the bytes received so far and returns undefined while the header block is
 * still incomplete (TCP may split it anywhere), the parsed message once it is complete (with
 * its `length`, so the caller sees what followed in the same chunk: a server banner), and
 * throws HttpWireError when the bytes cannot be that message, or when the header block grows
 * past HTTP_CONNECT_MAX_HEADER without ending (a proxy that streams garbage must not make us
 * buffer without bound). Lines may end in CRLF or a bare LF (RFC 9112 §2.2 lets a recipient
 * accept both). Header fields of a 2xx response are not interpreted: a client MUST ignore
 * Content-Length and Transfer-Encoding there (RFC 9110 §9.3.6).
 */

/** Largest header block (status line + fields + blank line) we read before giving up. */
export const HTTP_CONNECT_MAX_HEADER = 8192;

/** Bytes that cannot be the expected message; the outbound reports it as 'protocol'. */
export class HttpWireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HttpWireError';
  }
}

export interface HttpConnectTarget {
  /** An IPv4 literal or a DNS name (a fake-IP flow's name). */
  readonly host: string;
  readonly port: number;
}

export interface HttpConnectRequest extends HttpConnectTarget {
  /** The Proxy-Authorization value as sent (`Basic …`), if any. */
  readonly authorization?: string;
  readonly length: number;
}

export interface HttpConnectResponse {
  /** The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0. */
  readonly minor: number;
  readonly status: number;
  /** The reason phrase as sent (may be empty); for messages, never trusted otherwise. */
  readonly reason: string;
  /** Field names in lower case → value (the last one wins). */
  readonly headers: ReadonlyMap<string, string>;
  /** Bytes of the header block, blank line included. */
  readonly length: number;
}

/** A host the request line can carry: an IPv4 literal or a name of letters, digits, "-", "_", ".". */
const HOST_RE = /^[A-Za-z0-9_.-]{1,253}$/;

/** The Proxy-Authorization header line for Basic credentials (built once per outbound). */
export function basicAuthLine(username: string, password: string): string {
  return `Proxy-Authorization: Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}\r\n`;
}

/**
 * The CONNECT request; `authLine` is basicAuthLine(…) or ''. One buffer, one write: the proxy
 * reads a whole request, so nothing waits on Nagle or a delayed ACK.
 */
export function emitConnectRequest(target: HttpConnectTarget, authLine = ''): Buffer {
  if (!HOST_RE.test(target.host)) throw new HttpWireError(`cannot CONNECT to ${JSON.stringify(target.host)}: not an IPv4 address or a DNS name`);
  if (!Number.isInteger(target.port) || target.port < 0 || target.port > 65535) throw new HttpWireError(`cannot CONNECT to port ${target.port}`);
  const hp = `${target.host}:${target.port}`;
  return Buffer.from(`CONNECT ${hp} HTTP/1.1\r\nHost: ${hp}\r\n${authLine}\r\n`, 'latin1');
}

/** A response with `status`; `fields` are extra header lines (name → value). */
export function emitConnectResponse(status: number, reason: string, fields: ReadonlyArray<readonly [string, string]> = []): Buffer {
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new HttpWireError(`bad status ${status}`);
  if (/[\r\n]/.test(reason) || fields.some(([n, v]) => /[\r\n:]/.test(n) || /[\r\n]/.test(v))) throw new HttpWireError('a line break inside a header');
  return Buffer.from(`HTTP/1.1 ${status} ${reason}\r\n${fields.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, 'latin1');
}

/**
 * The end of the header block in `b`: the offset just past the blank line, or -1 while it has
 * not arrived. Throws when HTTP_CONNECT_MAX_HEADER bytes came without one.
 */
export function headerEnd(b: Uint8Array): number {
  const n = Math.min(b.length, HTTP_CONNECT_MAX_HEADER);
  for (let i = b.indexOf(0x0a); i >= 0 && i < n; i = b.indexOf(0x0a, i + 1)) {
    // LF LF, or LF CR LF: the blank line.
    if (b[i + 1] === 0x0a) return i + 2;
    if (b[i + 1] === 0x0d && b[i + 2] === 0x0a) return i + 3;
  }
  if (b.length >= HTTP_CONNECT_MAX_HEADER) throw new HttpWireError(`no end of the header block within ${HTTP_CONNECT_MAX_HEADER} bytes`);
  return -1;
}

/** The lines of a complete header block (without the blank line), line ends stripped. */
function headerLines(b: Uint8Array, end: number): string[] {
  const text = Buffer.from(b.buffer, b.byteOffset, end).toString('latin1');
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  // The split leaves the blank line and the empty rest after it.
  return lines.slice(0, -2);
}

function fieldsOf(lines: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of lines) {
    const colon = l.indexOf(':');
    // A field name has no whitespace (RFC 9112 §5.1); obsolete line folding is not accepted.
    if (colon <= 0 || /[\s]/.test(l.slice(0, colon))) throw new HttpWireError(`a malformed header line ${JSON.stringify(l.slice(0, 40))}`);
    out.set(l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim());
  }
  return out;
}

/** The proxy's response, once its header block is complete. */
export function parseConnectResponse(b: Uint8Array): HttpConnectResponse | undefined {
  // A response must start with "HTTP/": say so at once instead of waiting for 8 KiB of garbage.
  const prefix = 'HTTP/';
  for (let i = 0; i < prefix.length && i < b.length; i++) {
    if (b[i] !== prefix.charCodeAt(i)) throw new HttpWireError('the reply does not start with "HTTP/"');
  }
  const end = headerEnd(b);
  if (end < 0) return undefined;
  const lines = headerLines(b, end);
  const m = /^HTTP\/1\.(\d) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (m === null) throw new HttpWireError(`a malformed status line ${JSON.stringify((lines[0] ?? '').slice(0, 40))}`);
  return { minor: Number(m[1]), status: Number(m[2]), reason: m[3] ?? '', headers: fieldsOf(lines.slice(1)), length: end };
}

/** A CONNECT request, once its header block is complete (the test proxy's side). */
export function parseConnectRequest(b: Uint8Array): HttpConnectRequest | undefined {
  const end = headerEnd(b);
  if (end < 0) return undefined;
  const lines = headerLines(b, end);
  const m = /^CONNECT ([A-Za-z0-9_.-]{1,253}):(\d{1,5}) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
  if (m === null || Number(m[2]) > 65535) throw new HttpWireError(`not a CONNECT request line: ${JSON.stringify((lines[0] ?? '').slice(0, 40))}`);
  const fields = fieldsOf(lines.slice(1));
  const authorization = fields.get('proxy-authorization');
  const base = { host: m[1], port: Number(m[2]), length: end };
  return authorization === undefined ? base : { ...base, authorization };
}
