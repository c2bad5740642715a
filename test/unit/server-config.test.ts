/**
 * `tunroute server`'s config: defaults, and errors that name the file, the field and the fix
 * (never a key's value); a taken UDP port in one sentence.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SERVER_CONTROL_PATH, DEFAULT_SERVER_DENY, loadServerConfig, parseServerConfig, serverControlPath, serverPrivateKey } from '../../src/config/server-schema.js';
import { TunrouteError } from '../../src/errors.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { serverRouter } from '../../src/server/server.js';
import { openServerTransport } from '../../src/server/udp-transport.js';
import { IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { cidrToString, ipToU32 } from '../../src/net/ipv4.js';
import { formatEndpoint } from '../../src/net/endpoint.js';
import { seededRandom } from './wg-harness.js';

const SERVER_KEY = formatKey(generatePrivateKey(seededRandom('cfg/server')));
const PEER_KEY = formatKey(publicKeyOf(generatePrivateKey(seededRandom('cfg/peer'))));
const PEER2_KEY = formatKey(publicKeyOf(generatePrivateKey(seededRandom('cfg/peer2'))));

function file(name: string, text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'tunroute-server-config-')), name);
  writeFileSync(p, text);
  return p;
}

function errorOf(fn: () => unknown): TunrouteError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TunrouteError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

async function asyncErrorOf(p: Promise<unknown>): Promise<TunrouteError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TunrouteError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

const minimal = `privateKey: "${SERVER_KEY}"\naddress: 10.8.0.1/16\npeers:\n  - publicKey: "${PEER_KEY}"\n    allowedIPs: [10.8.0.2/32]\n`;

describe('server config', () => {
  it('fills the defaults around a minimal file', () => {
    const c = loadServerConfig({ file: file('s.yaml', minimal) });
    // The schema parses addresses into values; they are compared here in their text form.
    expect({ ...c, listen: formatEndpoint(c.listen), deny: c.deny.map(cidrToString) }).toMatchObject({
      listen: '0.0.0.0:51820',
      mode: 'userspace',
      mtu: 1420,
      icmp: 'reply',
      deny: [...DEFAULT_SERVER_DENY],
      control: {},
      log: { level: 'info' },
    });
    expect(c.peers[0].allowedIPs.map(cidrToString)).toEqual(['10.8.0.2/32']);
  });

  it('accepts config/server.example.yaml once its keys are filled in', () => {
    const example = readFileSync(new URL('../../config/server.example.yaml', import.meta.url), 'utf8');
    const keys = [SERVER_KEY, PEER_KEY, PEER2_KEY];
    const filled = example.replace(/"REPLACE:[^"]*"/g, () => `"${keys.shift()!}"`);
    expect(keys).toEqual([]);
    const c = loadServerConfig({ file: file('example.yaml', filled) });
    expect(c.peers.map((p) => p.name)).toEqual(['laptop', 'phone']);
    expect(c.deny.map(cidrToString)).toEqual([...DEFAULT_SERVER_DENY]);
  });

  it('puts the control socket where this user may: root /run, others $XDG_RUNTIME_DIR, else asks', () => {
    const c = loadServerConfig({ file: file('s.yaml', minimal) });
    expect(serverControlPath(c, { uid: 0, xdgRuntimeDir: undefined })).toBe(DEFAULT_SERVER_CONTROL_PATH);
    expect(serverControlPath(c, { uid: 1000, xdgRuntimeDir: '/run/user/1000' })).toBe('/run/user/1000/tunroute/server.sock');
    expect(() => serverControlPath(c, { uid: 65534, xdgRuntimeDir: undefined, file: 's.yaml' })).toThrow(
      'As user 65534 the server needs a place for its control socket: set control.socket in s.yaml (or --control PATH) to a path in a directory this user may write.',
    );
    const set = loadServerConfig({ file: file('s.yaml', `${minimal}control: {socket: /srv/s.sock}\n`) });
    expect(serverControlPath(set, { uid: 65534, xdgRuntimeDir: undefined })).toBe('/srv/s.sock');
  });

  it('lets --control and --log-level override the file', () => {
    const c = loadServerConfig({ file: file('s.yaml', minimal), flags: { control: '/tmp/x.sock', logLevel: 'debug' } });
    expect(c.control.socket).toBe('/tmp/x.sock');
    expect(c.log.level).toBe('debug');
    const e = errorOf(() => loadServerConfig({ file: file('s.yaml', minimal), flags: { logLevel: 'loud' } }));
    expect(e.code).toBe('TR_BAD_FLAG');
    expect(e.message).toMatch(/^The flag --log-level "loud" /);
  });

  it('names the file, the field and the fix; never prints a key', () => {
    const f = file('bad.yaml', minimal.replace(PEER_KEY, 'abc'));
    const e = errorOf(() => loadServerConfig({ file: f }));
    expect(e.code).toBe('TR_BAD_CONFIG');
    expect(e.message).toBe(`The config file ${f}: peers[0].publicKey "abc" is not a WireGuard key (44 base64 characters as printed by \`wg genkey\` or \`wg pubkey\`): correct that field.`);
    const bad = SERVER_KEY.slice(0, 40);
    const e2 = errorOf(() => loadServerConfig({ file: file('bad2.yaml', minimal.replace(SERVER_KEY, bad)) }));
    expect(e2.message).toContain('privateKey is not a WireGuard key');
    expect(e2.message).not.toContain(bad);
  });

  it('explains the other mistakes a server config can have', () => {
    const cases: Array<[string, RegExp]> = [
      [minimal.replace('address: 10.8.0.1/16\n', ''), /: address is missing: correct that field\.$/],
      [minimal.replace('10.8.0.2/32', '10.8.0.2'), /peers\[0\]\.allowedIPs\[0\] "10\.8\.0\.2" is not an IPv4 CIDR/],
      [`${minimal}listen: "51820"\n`, /listen "51820" is not an IPv4 ADDRESS:PORT like 0\.0\.0\.0:51820/],
      [`${minimal}mode: kernel\n`, /: mode "kernel" /],
      [minimal.replace(`privateKey: "${SERVER_KEY}"\n`, ''), /privateKey is missing: set privateKey \(from `wg genkey`\) or privateKeyFile\.$/],
      [`${minimal}privateKeyFile: /etc/k\n`, /privateKey and privateKeyFile are both set: keep one/],
      [`${minimal}  - publicKey: "${PEER_KEY}"\n    allowedIPs: [10.8.0.3/32]\n`, /peers\[1\]\.publicKey "[^"]+" is the same key as peers\[0\] \(list each peer once\): correct that field\.$/],
      [`${minimal}  - publicKey: "${PEER2_KEY}"\n    allowedIPs: [10.8.0.2/32]\n`, /peers\[1\]\.allowedIPs\[0\] "10\.8\.0\.2\/32" is already allowed for peers\[0\]/],
      [`${minimal}peer: []\n`, /has unknown setting\(s\) peer: remove them or check their spelling\./],
      [minimal.replace(/peers:[\s\S]*$/, 'peers: []\n'), /peers is empty: add at least one peer with publicKey and allowedIPs\.$/],
    ];
    for (const [text, re] of cases) expect(errorOf(() => loadServerConfig({ file: file('c.yaml', text) })).message).toMatch(re);
  });

  it('reads privateKeyFile, and says so in one sentence when it cannot', () => {
    const keyFile = file('server.key', `${SERVER_KEY}\n`);
    const input = { privateKeyFile: keyFile, address: '10.8.0.1/24', peers: [{ publicKey: PEER_KEY, allowedIPs: ['10.8.0.2/32'] }] };
    const c = parseServerConfig(input);
    expect(formatKey(serverPrivateKey(c))).toBe(SERVER_KEY);
    const missing = parseServerConfig({ ...input, privateKeyFile: '/nonexistent/server.key' });
    expect(errorOf(() => serverPrivateKey(missing, 'cfg.yaml')).message).toBe(
      'Cannot read privateKeyFile /nonexistent/server.key named in cfg.yaml (ENOENT): check the path and that this user may read it.',
    );
  });

  it('blocks its own address, the unowned tunnel subnet and the deny list; everything else goes direct', () => {
    const c = loadServerConfig({ file: file('s.yaml', minimal) });
    const r = serverRouter(c, 'direct');
    const route = (ip: string): string => r.route(ipToU32(ip)!, IP_PROTO_TCP, 80);
    expect(route('10.8.0.1')).toBe('block');
    expect(route('10.8.7.7')).toBe('block');
    expect(route('127.0.0.1')).toBe('block');
    expect(route('169.254.169.254')).toBe('block');
    expect(route('192.0.2.10')).toBe('direct');
  });
});

describe('server UDP socket', () => {
  it('says in one sentence that the port is taken', async () => {
    const first = await openServerTransport({ address: '127.0.0.1', port: 0 });
    try {
      const e = await asyncErrorOf(openServerTransport({ address: '127.0.0.1', port: first.port, file: 's.yaml' }));
      expect(e.code).toBe('TR_LISTEN');
      expect(e.message).toBe(`UDP port ${first.port} on 127.0.0.1 is already in use (another tunroute server or WireGuard?): stop it, or set another port in listen in s.yaml.`);
    } finally {
      first.close();
    }
  });
});
