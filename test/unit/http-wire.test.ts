import { describe, expect, it } from 'vitest';
import {
  HTTP_CONNECT_MAX_HEADER,
  HttpWireError,
  basicAuthLine,
  emitConnectRequest,
  emitConnectResponse,
  headerEnd,
  parseConnectRequest,
  parseConnectResponse,
} from '../../src/outbound/http-wire.js';

describe('HTTP CONNECT wire: round trips', () => {
  it('a request by address, without credentials', () => {
    const b = emitConnectRequest({ host: '10.66.1.7', port: 8080 });
    expect(b.toString('latin1')).toBe('CONNECT 10.66.1.7:8080 HTTP/1.1\r\nHost: 10.66.1.7:8080\r\n\r\n');
    expect(parseConnectRequest(b)).toEqual({ host: '10.66.1.7', port: 8080, length: b.length });
  });

  it('a request by name, with Basic credentials (RFC 7617 example)', () => {
    const line = basicAuthLine('Aladdin', 'open sesame');
    expect(line).toBe('Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n');
    const b = emitConnectRequest({ host: 'web.lab', port: 443 }, line);
    expect(parseConnectRequest(b)).toEqual({ host: 'web.lab', port: 443, authorization: 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==', length: b.length });
  });

  it('UTF-8 credentials are encoded as UTF-8 before base64', () => {
    const v = basicAuthLine('é', 'ü').slice('Proxy-Authorization: Basic '.length, -2);
    expect(Buffer.from(v, 'base64').toString('utf8')).toBe('é:ü');
  });

  it('a response with fields; what follows the blank line is not part of it', () => {
    const head = emitConnectResponse(200, 'Connection established', [['Proxy-Agent', 'tinyproxy/1.11.1']]);
    const withBanner = Buffer.concat([head, Buffer.from('SSH-2.0-banner\r\n')]);
    const r = parseConnectResponse(withBanner);
    expect(r).toMatchObject({ minor: 1, status: 200, reason: 'Connection established', length: head.length });
    expect(r?.headers.get('proxy-agent')).toBe('tinyproxy/1.11.1');
  });

  it('a status line without a reason phrase, HTTP/1.0, bare LF line ends', () => {
    const b = Buffer.from('HTTP/1.0 200\nVia: x\n\nrest');
    expect(parseConnectResponse(b)).toMatchObject({ minor: 0, status: 200, reason: '', length: b.length - 4 });
  });

  it('incomplete at every split point until the blank line is in', () => {
    const b = emitConnectResponse(407, 'Proxy Authentication Required', [['Proxy-Authenticate', 'Basic realm="x"']]);
    for (let i = 1; i < b.length; i++) expect(parseConnectResponse(b.subarray(0, i)), `split at ${i}`).toBeUndefined();
    expect(parseConnectResponse(b)?.status).toBe(407);
    const q = emitConnectRequest({ host: 'a.example', port: 1 });
    for (let i = 0; i < q.length; i++) expect(parseConnectRequest(q.subarray(0, i))).toBeUndefined();
  });
});

describe('HTTP CONNECT wire: refusals', () => {
  const bad = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(HttpWireError);
      return (e as Error).message;
    }
    throw new Error('no error');
  };

  it('a reply that is not HTTP fails at its first byte, without waiting for more', () => {
    expect(bad(() => parseConnectResponse(Buffer.from([0x05, 0x00])))).toMatch(/does not start with "HTTP\/"/);
    expect(bad(() => parseConnectResponse(Buffer.from('HTTX')))).toMatch(/HTTP/);
  });

  it('malformed status lines and header lines', () => {
    expect(bad(() => parseConnectResponse(Buffer.from('HTTP/2 200 OK\r\n\r\n')))).toMatch(/malformed status line/);
    expect(bad(() => parseConnectResponse(Buffer.from('HTTP/1.1 20 OK\r\n\r\n')))).toMatch(/malformed status line/);
    expect(bad(() => parseConnectResponse(Buffer.from('HTTP/1.1 200 OK\r\nno colon\r\n\r\n')))).toMatch(/malformed header line/);
    expect(bad(() => parseConnectResponse(Buffer.from('HTTP/1.1 200 OK\r\n folded: x\r\n\r\n')))).toMatch(/malformed header line/);
  });

  it('the header block is bounded: no blank line within the limit is an error, not a growing buffer', () => {
    const long = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nX: '), Buffer.alloc(HTTP_CONNECT_MAX_HEADER, 0x61)]);
    expect(bad(() => parseConnectResponse(long))).toMatch(new RegExp(`within ${HTTP_CONNECT_MAX_HEADER} bytes`));
    // A blank line past the limit does not count either.
    const late = Buffer.concat([long, Buffer.from('\r\n\r\n')]);
    expect(() => headerEnd(late)).toThrow(HttpWireError);
    // Just inside the limit is fine.
    const fits = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nX: '), Buffer.alloc(HTTP_CONNECT_MAX_HEADER - 24, 0x61), Buffer.from('\r\n\r\n')]);
    expect(fits.length).toBe(HTTP_CONNECT_MAX_HEADER);
    expect(parseConnectResponse(fits)?.length).toBe(HTTP_CONNECT_MAX_HEADER);
  });

  it('a target that could inject a header is never emitted', () => {
    expect(bad(() => emitConnectRequest({ host: 'a.example\r\nX-Evil: 1', port: 80 }))).toMatch(/cannot CONNECT/);
    expect(bad(() => emitConnectRequest({ host: 'a b', port: 80 }))).toMatch(/cannot CONNECT/);
    expect(bad(() => emitConnectRequest({ host: 'a.example', port: 70000 }))).toMatch(/port/);
    expect(bad(() => emitConnectResponse(200, 'OK\r\nX: y'))).toMatch(/line break/);
  });

  it('requests that are not CONNECT', () => {
    expect(bad(() => parseConnectRequest(Buffer.from('GET / HTTP/1.1\r\n\r\n')))).toMatch(/not a CONNECT request line/);
    expect(bad(() => parseConnectRequest(Buffer.from('CONNECT a:99999 HTTP/1.1\r\n\r\n')))).toMatch(/not a CONNECT/);
  });
});
