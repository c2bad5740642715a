/**
 * wg-quick files: a real-world file parses (comments, any key case, several peers, repeated
 * list keys, IPv6 kept for later skipping), every mistake is one sentence naming the file, the
 * line and the fix; `--tunnel` turns the file into an outbound; and the tunnel's AllowedIPs and
 * endpoint become routes, rules and a bypass before the route plan is made.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { DEFAULT_ROUTE_TABLE } from '../../src/config/schema.js';
import { expandTunnels, tunnelSpecsOf } from '../../src/config/tunnels.js';
import { parseWgQuick, tunnelNameOf, wgQuickOutbound } from '../../src/config/wg-quick.js';
import { formatEndpoint, parseEndpoint } from '../../src/net/endpoint.js';
import { isTunrouteError } from '../../src/errors.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { planRoutes } from '../../src/routes/plan.js';
import { pinUpstreams, resolveUpstreams, upstreamsOf } from '../../src/routes/upstreams.js';
import { NO_NETWORK } from '../../src/routes/host.js';
import { Router } from '../../src/router/router.js';
import { IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { cidrToString, ipToU32 } from '../../src/net/ipv4.js';
import { seededRandom } from './wg-harness.js';

const PRIV = formatKey(generatePrivateKey(seededRandom('wgq/priv')));
const PUB1 = formatKey(publicKeyOf(generatePrivateKey(seededRandom('wgq/peer1'))));
const PUB2 = formatKey(publicKeyOf(generatePrivateKey(seededRandom('wgq/peer2'))));
const PSK = formatKey(seededRandom('wgq/psk')(32));

const GOOD = `# office tunnel, exported from the VPN portal
[Interface]
privatekey = ${PRIV}   # this machine
Address = 10.8.0.2/16, fd00:8::2/64
DNS = 10.8.0.1, corp.example
MTU = 1380
ListenPort = 51821

[Peer]
PublicKey = ${PUB1}
PresharedKey = ${PSK}
Endpoint = vpn.example.com:51820
AllowedIPs = 10.8.0.0/16, 10.9.1.7
allowedips = ::/0
PersistentKeepalive = 25

[peer]
PUBLICKEY = ${PUB2}
Endpoint = 203.0.113.9:443
AllowedIPs = 192.168.50.5/24
PersistentKeepalive = off
`;

function errorOf(text: string): string {
  try {
    parseWgQuick(text, 'wg0.conf');
  } catch (e) {
    if (isTunrouteError(e)) return `${e.code} ${e.message}`;
    throw e;
  }
  throw new Error('parsed without error');
}

describe('wg-quick files', () => {
  it('parses a full file: comments, any key case, repeated list keys, several peers', () => {
    expect(parseWgQuick(GOOD, 'wg0.conf')).toEqual({
      privateKey: PRIV,
      address: ['10.8.0.2/16', 'fd00:8::2/64'],
      dns: ['10.8.0.1', 'corp.example'],
      mtu: 1380,
      listenPort: 51821,
      peers: [
        {
          publicKey: PUB1,
          presharedKey: PSK,
          endpoint: 'vpn.example.com:51820',
          allowedIPs: ['10.8.0.0/16', '10.9.1.7/32', '::/0'],
          persistentKeepalive: 25,
        },
        // host bits cleared, keepalive off is 0
        { publicKey: PUB2, endpoint: '203.0.113.9:443', allowedIPs: ['192.168.50.0/24'], persistentKeepalive: 0 },
      ],
    });
  });

  it('accepts CRLF line ends and a minimal file', () => {
    const min = `[Interface]\r\nPrivateKey = ${PRIV}\r\n[Peer]\r\nPublicKey = ${PUB1}\r\n`;
    expect(parseWgQuick(min, 'x.conf')).toEqual({ privateKey: PRIV, address: [], dns: [], peers: [{ publicKey: PUB1, allowedIPs: [] }] });
  });

  const base = (extra: string, peerExtra = ''): string => `[Interface]\nPrivateKey = ${PRIV}\n${extra}[Peer]\nPublicKey = ${PUB1}\n${peerExtra}`;
  const cases: Array<[string, string, string]> = [
    ['a key before any section', `PrivateKey = ${PRIV}\n[Interface]\n`, 'TR_BAD_CONFIG wg0.conf line 1: PrivateKey comes before any section: put it under [Interface] or [Peer].'],
    ['an unknown section', '[Interfase]\n', 'wg0.conf line 1: unknown section [Interfase]: a wg-quick file has one [Interface] and [Peer] sections.'],
    ['a second [Interface]', base('') + '[Interface]\n', 'wg0.conf line 5: a second [Interface] section: merge it into the first one.'],
    ['a line that is not Key = Value', base('garbage\n'), 'wg0.conf line 3: the line is neither a [Section] nor a Key = Value line (it is not shown: it may hold a secret): fix or remove it.'],
    ['an unknown key', base('Adress = 10.8.0.2/24\n'), 'wg0.conf line 3: unknown key Adress in [Interface]: known keys are PrivateKey, Address, DNS, MTU, ListenPort.'],
    ['a peer key in [Interface]', base('Endpoint = a:1\n'), 'wg0.conf line 3: Endpoint belongs in a [Peer] section, not in [Interface]: move it.'],
    ['an interface key in [Peer]', base('', 'MTU = 1400\n'), 'wg0.conf line 5: MTU belongs in [Interface], not in [Peer]: move it.'],
    ['an empty value', base('MTU =\n'), 'wg0.conf line 3: MTU has no value: give one or remove the line.'],
    ['a repeated single key', base('MTU = 1400\nMTU = 1300\n'), 'wg0.conf line 4: MTU appears twice in this section (also on line 3): keep one.'],
    ['PostUp', base('PostUp = iptables -A FORWARD -j ACCEPT\n'), 'wg0.conf line 3: PostUp is not supported: tunroute runs no shell commands: remove the line and run the command yourself after `tunroute up`.'],
    ['Table', base('Table = off\n'), 'wg0.conf line 3: Table is not supported: tunroute routes AllowedIPs'],
    ['FwMark', base('FwMark = 0x1\n'), 'wg0.conf line 3: FwMark is not supported: tunroute cannot mark its tunnel socket'],
    ['SaveConfig', base('SaveConfig = true\n'), 'wg0.conf line 3: SaveConfig is not supported: tunroute never writes the file back: remove the line.'],
    ['a short private key', `[Interface]\nPrivateKey = abc\n[Peer]\nPublicKey = ${PUB1}\n`, 'wg0.conf line 2: PrivateKey: the private key has 3 characters, not 44'],
    ['a bad public key', `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nPublicKey = ${PUB1.slice(0, 42)}!=\n`, 'wg0.conf line 4: PublicKey: the peer public key is not valid base64 for 32 bytes'],
    ['a bad preshared key', base('', 'PresharedKey = nope\n'), 'wg0.conf line 5: PresharedKey: the preshared key has 4 characters, not 44'],
    ['no [Interface]', `[Peer]\nPublicKey = ${PUB1}\n`, 'wg0.conf: no [Interface] section: add one with the PrivateKey of this machine.'],
    ['no [Peer]', `[Interface]\nPrivateKey = ${PRIV}\n`, 'wg0.conf: no [Peer] section: add the server as a [Peer] with its PublicKey, Endpoint and AllowedIPs.'],
    ['no PrivateKey', `[Interface]\nMTU = 1400\n[Peer]\nPublicKey = ${PUB1}\n`, 'wg0.conf line 1: [Interface] has no PrivateKey: add PrivateKey = <the output of `wg genkey` or `tunroute genkey`>.'],
    ['no PublicKey', `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nEndpoint = a.example:1\n`, 'wg0.conf line 3: [Peer] has no PublicKey'],
    ['the same peer twice', base('', `[Peer]\nPublicKey = ${PUB1}\n`), 'wg0.conf line 6: the same PublicKey as the [Peer] on line 3: merge the two sections.'],
    ['a bad address', base('Address = 10.8.0.300/24\n'), 'wg0.conf line 3: Address "10.8.0.300/24" is not an IP address with a prefix length like 10.8.0.2/24: fix it.'],
    ['a bad MTU', base('MTU = 100\n'), 'wg0.conf line 3: MTU "100" is not an MTU from 576 to 65535: use a number like 1420.'],
    ['a bad ListenPort', base('ListenPort = 70000\n'), 'wg0.conf line 3: ListenPort "70000" is not a UDP port from 0 to 65535'],
    ['an endpoint without port', base('', 'Endpoint = vpn.example.com\n'), 'wg0.conf line 5: Endpoint "vpn.example.com" is not HOST:PORT: write it like vpn.example.com:51820 or 203.0.113.7:51820.'],
    ['an endpoint with port 0', base('', 'Endpoint = 1.2.3.4:0\n'), 'wg0.conf line 5: Endpoint "1.2.3.4:0" is not HOST:PORT'],
    ['an IPv6 endpoint', base('', 'Endpoint = [2001:db8::1]:51820\n'), 'wg0.conf line 5: Endpoint "[2001:db8::1]:51820" is IPv6, which tunroute cannot reach yet'],
    ['a bad allowed IP', base('', 'AllowedIPs = 10.8.0.0/16, 10.0.0.0/33\n'), 'wg0.conf line 5: AllowedIPs entry "10.0.0.0/33" is not a CIDR like 10.8.0.0/16 (or an IPv6 one): fix it.'],
    ['a bad keepalive', base('', 'PersistentKeepalive = soon\n'), 'wg0.conf line 5: PersistentKeepalive "soon" is not a number of seconds from 1 to 65535 (or off): use e.g. 25.'],
  ];
  it.each(cases)('refuses %s, naming the line and the fix', (_what, text, expected) => {
    expect(errorOf(text)).toContain(expected);
  });

  it('endpoints: names and IPv4 literals with a port; nothing else', () => {
    expect(parseEndpoint('vpn.example.com:51820')).toEqual({ host: 'vpn.example.com', port: 51820, kind: 'name' });
    expect(parseEndpoint('203.0.113.7:1')).toEqual({ host: '203.0.113.7', port: 1, kind: 'ipv4' });
    expect(parseEndpoint('[::1]:5')).toEqual({ host: '::1', port: 5, kind: 'ipv6' });
    for (const bad of ['1.2.3:5', '1.2.3.4', 'a b:1', 'x:65536', ':80', 'host:', '[nope]:1', '-bad.example:1']) {
      expect(parseEndpoint(bad), bad).toBeUndefined();
    }
  });
});

describe('--tunnel wg0.conf', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wgq-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('becomes a wireguard outbound named after the file, added to the config file’s outbounds', () => {
    const file = join(dir, 'office.conf');
    writeFileSync(file, GOOD);
    const yaml = join(dir, 'tunroute.yaml');
    writeFileSync(yaml, 'outbounds:\n  - {name: other, type: block}\n');
    const c = loadConfig({ file: yaml, flags: { tunnel: [file], proxy: 'socks5://10.66.0.1:1080' } });
    expect(c.outbounds.map((o) => [o.name, o.type])).toEqual([
      ['other', 'block'],
      ['office', 'wireguard'],
    ]);
    expect(wgQuickOutbound(file)).toMatchObject({ name: 'office', type: 'wireguard', mtu: 1380, listenPort: 51821, address: ['10.8.0.2/16', 'fd00:8::2/64'] });
  });

  it('a file name that cannot name an outbound, or a missing file, is one sentence', () => {
    expect(() => tunnelNameOf('/etc/wireguard/my office.conf')).toThrow(/--tunnel \/etc\/wireguard\/my office.conf: the tunnel is named after the file/);
    expect(() => loadConfig({ flags: { tunnel: [join(dir, 'missing.conf')] } })).toThrow(/Cannot read the tunnel file .*missing.conf \(ENOENT\): check the path given with --tunnel\./);
  });

  it('a config-file wireguard outbound is validated by the schema, naming the field', () => {
    const yaml = join(dir, 'bad.yaml');
    writeFileSync(yaml, `outbounds:\n  - name: wg0\n    type: wireguard\n    privateKey: "${PRIV}"\n    peers:\n      - publicKey: short\n`);
    expect(() => loadConfig({ file: yaml })).toThrow('outbounds[0].peers[0].publicKey "short" is not a WireGuard key');
  });
});

describe('tunnels in the route plan', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wgq-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'wg0.conf');
  writeFileSync(file, GOOD);
  const resolve = async (host: string): Promise<string[]> => (host === 'vpn.example.com' ? ['198.51.100.7', '198.51.100.8'] : []);

  it('split: AllowedIPs become routes and rules, endpoints stay out of the device, names are pinned', async () => {
    const c = loadConfig({ flags: { tunnel: [file], proxy: 'socks5://10.66.0.1:1080', route: ['10.66.1.0/24'] } });
    const { config, notes } = await expandTunnels(c, resolve);
    expect(config.routes.include.map(cidrToString)).toEqual(['10.66.1.0/24', '10.8.0.0/16', '10.9.1.7/32', '192.168.50.0/24']);
    expect(config.routes.exclude.map(cidrToString)).toEqual(['198.51.100.7/32', '198.51.100.8/32', '203.0.113.9/32']);
    expect(config.rules.map((r) => ({ ...r, cidrs: r.cidrs?.map(cidrToString) }))).toEqual([{ cidrs: ['10.8.0.0/16', '10.9.1.7/32', '192.168.50.0/24'], outbound: 'wg0' }]);
    const wg = config.outbounds[0];
    expect(wg.type === 'wireguard' && wg.peers.map((p) => p.endpoint && formatEndpoint(p.endpoint))).toEqual(['198.51.100.7:51820', '203.0.113.9:443']);
    expect(notes.join('\n')).toMatch(/IPv6 AllowedIPs ::\/0 skipped/);
    expect(notes.join('\n')).toMatch(/DNS 10\.8\.0\.1, corp\.example not applied/);
    expect(notes.join('\n')).toMatch(/endpoint vpn\.example\.com resolved to 198\.51\.100\.7, 198\.51\.100\.8/);

    const plan = planRoutes(config, { network: NO_NETWORK, upstreams: [], files: new Map() });
    expect(plan.mode).toBe('split');
    expect(plan.prefixes.length).toBeGreaterThan(0);
    const router = new Router({ rules: config.rules, defaultOutbound: 'proxy' });
    expect(router.route(ipToU32('10.8.0.1')!, IP_PROTO_TCP, 80)).toBe('wg0');
    expect(router.route(ipToU32('10.66.1.5')!, IP_PROTO_TCP, 80)).toBe('proxy');

    const [spec] = tunnelSpecsOf(config);
    expect(spec).toMatchObject({ name: 'wg0', mtu: 1380, listenPort: 51821, address: ipToU32('10.8.0.2') });
    expect(spec.peers.map((p) => [p.endpoint, p.allowedIPs.length, p.persistentKeepaliveSec])).toEqual([
      [{ address: '198.51.100.7', port: 51820 }, 2, 25],
      [{ address: '203.0.113.9', port: 443 }, 1, 0],
    ]);
  });

  it('the pinned endpoints are upstreams: the loop guard and the labels cover the tunnel\'s own UDP', async () => {
    const c = loadConfig({ flags: { tunnel: [file], proxy: 'socks5://10.66.0.1:1080', route: ['10.66.1.0/24'] } });
    const { config } = await expandTunnels(c, resolve);
    const ups = await resolveUpstreams(upstreamsOf(config));
    expect(ups.map((u) => [u.name, u.kind, u.addrs.join(','), u.port])).toEqual([
      ['proxy', 'socks5', '10.66.0.1', 1080],
      ['wg0', 'wireguard', '198.51.100.7', 51820],
      ['wg0', 'wireguard', '203.0.113.9', 443],
    ]);
    // A full tunnel (everything enters the device) lists what it carves out, with why.
    const full = (await expandTunnels(loadConfig({ flags: { tunnel: [file], proxy: 'socks5://10.66.0.1:1080' } }), resolve)).config;
    const plan = planRoutes(full, { network: NO_NETWORK, upstreams: await resolveUpstreams(upstreamsOf(full)), files: new Map() });
    expect(plan.direct.map((d) => d.source)).toContain("upstream 'wg0' (wireguard 203.0.113.9:443): tunroute's own connections");
    // pinning the SOCKS5 upstreams leaves the (already pinned) endpoints alone
    expect(pinUpstreams(config, upstreamsOf(config), ups).outbounds).toEqual(config.outbounds);
  });

  it('full tunnel (a proxy, no routes): no extra routes, the rules still send AllowedIPs to the tunnel', async () => {
    const c = loadConfig({ flags: { tunnel: [file], proxy: 'socks5://10.66.0.1:1080' } });
    const { config } = await expandTunnels(c, resolve);
    expect(config.routes.include).toEqual([]);
    expect(config.rules.length).toBe(1);
    expect(planRoutes(config, { network: NO_NETWORK, upstreams: [], files: new Map() }).mode).toBe('full');
  });

  it('AllowedIPs 0.0.0.0/0 without a proxy: a table of its own, the endpoint carved out', async () => {
    const f = join(dir, 'all.conf');
    writeFileSync(f, `[Interface]\nPrivateKey = ${PRIV}\nAddress = 10.8.0.2/32\n[Peer]\nPublicKey = ${PUB1}\nEndpoint = 203.0.113.9:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n`);
    const { config, notes } = await expandTunnels(loadConfig({ flags: { tunnel: [f] } }), resolve);
    expect(config.routes.table).toBe(DEFAULT_ROUTE_TABLE);
    const plan = planRoutes(config, { network: NO_NETWORK, upstreams: [], files: new Map() });
    expect(plan.table).toBe(DEFAULT_ROUTE_TABLE);
    expect(plan.prefixes.some((p) => p.addr <= ipToU32('203.0.113.9')! && ipToU32('203.0.113.9')! < p.addr + 2 ** (32 - p.prefix))).toBe(false);
    expect(notes.join('\n')).toMatch(/routes 0\.0\.0\.0\/0: its routes go into table 7300/);
  });

  it('an endpoint name that does not resolve stops start-up in one sentence', async () => {
    const f = join(dir, 'nx.conf');
    writeFileSync(f, `[Interface]\nPrivateKey = ${PRIV}\n[Peer]\nPublicKey = ${PUB1}\nEndpoint = nowhere.example:1\n`);
    await expect(expandTunnels(loadConfig({ flags: { tunnel: [f] } }), resolve)).rejects.toThrow(
      "The tunnel endpoint nowhere.example (outbounds[0] ('nx').peers[0].endpoint) has no IPv4 address: give the server's IPv4 address instead.",
    );
    const failing = async (): Promise<string[]> => {
      throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
    };
    await expect(expandTunnels(loadConfig({ flags: { tunnel: [f] } }), failing)).rejects.toThrow(/Cannot resolve the tunnel endpoint nowhere\.example .*ENOTFOUND/);
  });
});
