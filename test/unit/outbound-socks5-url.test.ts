import { describe, expect, it } from 'vitest';
import { TunrouteError } from '../../src/errors.js';
import { formatSocks5Url, parseSocks5Url } from '../../src/outbound/socks5-url.js';

describe('parseSocks5Url accepts', () => {
  it.each([
    ['socks5://127.0.0.1:1080', { scheme: 'socks5', host: '127.0.0.1', hostKind: 'ipv4', port: 1080 }],
    ['socks5://127.0.0.1', { scheme: 'socks5', host: '127.0.0.1', hostKind: 'ipv4', port: 1080 }],
    ['socks5h://proxy.example:9050', { scheme: 'socks5h', host: 'proxy.example', hostKind: 'hostname', port: 9050 }],
    ['SOCKS5://Proxy.Example.:1', { scheme: 'socks5', host: 'proxy.example.', hostKind: 'hostname', port: 1 }],
    ['socks5://localhost:65535/', { scheme: 'socks5', host: 'localhost', hostKind: 'hostname', port: 65535 }],
    ['socks5://0.0.0.0:1080', { scheme: 'socks5', host: '0.0.0.0', hostKind: 'ipv4', port: 1080 }],
    ['socks5://255.255.255.255:1080', { scheme: 'socks5', host: '255.255.255.255', hostKind: 'ipv4', port: 1080 }],
    ['socks5://my-proxy1.corp:1080', { scheme: 'socks5', host: 'my-proxy1.corp', hostKind: 'hostname', port: 1080 }],
  ])('%s', (value, expected) => {
    expect(parseSocks5Url(value)).toEqual(expected);
  });

  it('a user name and password, percent-decoded', () => {
    expect(parseSocks5Url('socks5://al%40ice:p%3Ass%2Fw%20rd%25@10.0.0.1:1081')).toEqual({
      scheme: 'socks5',
      host: '10.0.0.1',
      hostKind: 'ipv4',
      port: 1081,
      auth: { username: 'al@ice', password: 'p:ss/w rd%' },
    });
  });

  it('a password with a literal ":" or "@" (split at the first ":" and the last "@")', () => {
    expect(parseSocks5Url('socks5://user:a:b@c@host:1080').auth).toEqual({ username: 'user', password: 'a:b@c' });
  });

  it('UTF-8 credentials up to 255 bytes', () => {
    const u = parseSocks5Url(`socks5://${'%C3%A9'.repeat(127)}:x@h:1`);
    expect(u.auth?.username).toBe('é'.repeat(127));
  });
});

describe('parseSocks5Url rejects, naming the value and the fix in one sentence', () => {
  it.each([
    ['', 'the scheme is missing'],
    ['127.0.0.1:1080', 'the scheme is missing'],
    ['http://127.0.0.1:8080', 'scheme "http" is not supported'],
    ['socks4://127.0.0.1:1080', 'scheme "socks4" is not supported'],
    ['socks5://', 'the host is missing'],
    ['socks5://:1080', 'the host is missing'],
    ['socks5://host:', 'the port "" is not a number from 1 to 65535'],
    ['socks5://host:0', 'the port "0" is not'],
    ['socks5://host:65536', 'the port "65536" is not'],
    ['socks5://host:12ab', 'the port "12ab" is not'],
    ['socks5://host:-1', 'the port "-1" is not'],
    ['socks5://host:1080/path', 'no path, query or fragment'],
    ['socks5://host:1080?x=1', 'no path, query or fragment'],
    ['socks5://host:1080#frag', 'no path, query or fragment'],
    ['socks5://[::1]:1080', 'IPv6 proxy addresses are not supported'],
    ['socks5://::1', 'IPv6 proxy addresses are not supported'],
    ['socks5://256.1.1.1:1080', 'is not a valid IPv4 address'],
    ['socks5://1.2.3:1080', 'is not a valid IPv4 address'],
    ['socks5://01.2.3.4:1080', 'is not a valid IPv4 address'],
    ['socks5://bad_host:1080', 'is not a valid host name'],
    ['socks5://-bad.example:1080', 'is not a valid host name'],
    ['socks5://a..b:1080', 'is not a valid host name'],
    [`socks5://${'a'.repeat(64)}.example:1080`, 'is not a valid host name'],
    ['socks5://pro xy:1080', 'contains whitespace'],
    ['socks5://user@host:1080', 'the user name has no password'],
    ['socks5://user:@host:1080', 'must not be empty'],
    ['socks5://:pass@host:1080', 'must not be empty'],
    ['socks5://us%zzer:pass@host:1080', 'broken percent-escape'],
    [`socks5://${'u'.repeat(256)}:p@host:1080`, 'longer than 255 bytes'],
  ])('%j', (value, problem) => {
    let err: unknown;
    try {
      parseSocks5Url(value);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TunrouteError);
    const te = err as TunrouteError;
    expect(te.code).toBe('TR_BAD_FLAG');
    expect(te.message).toContain(problem);
    expect(te.message.startsWith('--proxy "')).toBe(true);
    expect(te.message.endsWith('.')).toBe(true);
    // One sentence: a single full stop, at the end (dotted addresses and host names aside).
    expect(te.message.replace(/"[^"]*"/g, '""').replace(/\d+\.\d+\.\d+\.\d+|[a-z0-9-]+\.[a-z]+/g, 'X').split('. ').length).toBe(1);
  });

  it('names the source and uses TR_BAD_CONFIG for a config file', () => {
    expect(() => parseSocks5Url('socks5://h:0', { source: 'tunroute.yaml: proxy', code: 'TR_BAD_CONFIG' })).toThrow(
      expect.objectContaining({ code: 'TR_BAD_CONFIG', message: expect.stringMatching(/^tunroute\.yaml: proxy "socks5:\/\/h:0": /) as unknown }),
    );
  });

  it('never echoes the password', () => {
    for (const value of ['socks5://alice:s3cret@host:0', 'alice:s3cret@host:1080', 'socks5://alice:s3cret@bad_host', 'socks5://alice:s3cret@h/x']) {
      expect(() => parseSocks5Url(value)).toThrow(TunrouteError);
      try {
        parseSocks5Url(value);
      } catch (e) {
        expect((e as Error).message).not.toContain('s3cret');
        expect((e as Error).message).toContain('alice:***@');
      }
    }
  });
});

describe('formatSocks5Url', () => {
  it('prints the URL back with the password hidden by default', () => {
    const u = parseSocks5Url('socks5h://al%40ice:s3cret@proxy.example');
    expect(formatSocks5Url(u)).toBe('socks5h://al%40ice:***@proxy.example:1080');
    expect(formatSocks5Url(u, { redact: false })).toBe('socks5h://al%40ice:s3cret@proxy.example:1080');
    expect(parseSocks5Url(formatSocks5Url(u, { redact: false }))).toEqual(u);
    expect(formatSocks5Url(parseSocks5Url('socks5://10.0.0.1:1'))).toBe('socks5://10.0.0.1:1');
  });
});
