import { describe, expect, it } from 'vitest';
import { TunrouteError } from '../../src/errors.js';
import { formatProxyUrl, parseProxyUrl } from '../../src/outbound/proxy-url.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';

/** loadConfig of a config file with this content (a temp file, removed after). */
function fromFile(content: object): ReturnType<typeof loadConfig> {
  const dir = mkdtempSync(join(tmpdir(), 'tunroute-proxy-url-'));
  try {
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify(content));
    return loadConfig({ file });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('parseProxyUrl: http:// (HTTP CONNECT) besides socks5://', () => {
  it.each([
    ['http://10.0.0.1:3128', { scheme: 'http', host: '10.0.0.1', hostKind: 'ipv4', port: 3128 }],
    ['HTTP://Proxy.Corp', { scheme: 'http', host: 'proxy.corp', hostKind: 'hostname', port: 80 }],
    ['http://bob:p%40ss%3Aw@proxy.corp:8080/', { scheme: 'http', host: 'proxy.corp', hostKind: 'hostname', port: 8080, auth: { username: 'bob', password: 'p@ss:w' } }],
    ['socks5://127.0.0.1', { scheme: 'socks5', host: '127.0.0.1', hostKind: 'ipv4', port: 1080 }],
  ])('%s', (value, expected) => {
    expect(parseProxyUrl(value)).toEqual(expected);
  });

  it.each([
    ['https://10.0.0.1:3128', 'scheme "https" is not supported; SOCKS5 and HTTP (CONNECT) proxies are supported: use socks5:// or http://'],
    ['http://b%3Ab:pw@h:1', 'the user name contains ":"'],
    ['http://bob@h:1', 'Basic authentication needs both'],
    ['http://h:0', 'the port "0" is not a number from 1 to 65535; give a port such as http://h:3128'],
  ])('%s is refused: %s', (value, problem) => {
    let err: unknown;
    try {
      parseProxyUrl(value);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TunrouteError);
    expect((err as Error).message).toContain(problem);
  });

  it('never shows the password', () => {
    const u = parseProxyUrl('http://bob:hunter2@h:1');
    expect(formatProxyUrl(u)).toBe('http://bob:***@h:1');
    expect(() => parseProxyUrl('http://bob:hunter2@h:0')).toThrow(/bob:\*\*\*@h:0/);
    try {
      parseProxyUrl('http://bob:hunter2@h:0');
    } catch (e) {
      expect((e as Error).message).not.toContain('hunter2');
    }
  });
});

describe('config: http proxies', () => {
  it('--proxy http://… and an outbound of type http', () => {
    const c = fromFile({ proxy: 'http://u:p@10.0.0.1:3128', outbounds: [{ name: 'office', type: 'http', url: 'http://10.0.0.2:8080' }] });
    expect(c.proxy).toMatchObject({ scheme: 'http', port: 3128 });
    expect(c.outbounds[0]).toMatchObject({ name: 'office', type: 'http', url: { scheme: 'http', host: '10.0.0.2' }, connectTimeoutMs: 10_000 });
  });

  it('an outbound of type http takes only http://, and says so without the password', () => {
    expect(loadConfig({ flags: { proxy: 'http://10.0.0.9:3128' } }).proxy).toMatchObject({ scheme: 'http', host: '10.0.0.9' });
    expect(() => fromFile({ outbounds: [{ name: 'office', type: 'http', url: 'socks5://u:secret@10.0.0.2:1080' }] })).toThrow(/outbounds\[0\]\.url.*"socks5:\/\/u:\*\*\*@10\.0\.0\.2:1080": the scheme "socks5" is not supported/);
    expect(() => fromFile({ outbounds: [{ name: 'office', type: 'socks5', url: 'http://10.0.0.2:1080' }] })).toThrow(/only SOCKS5 proxies are supported/);
  });
});
