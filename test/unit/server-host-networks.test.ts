/**
 * What `tunroute server` refuses on its own host: every IPv4 address of the host and the
 * networks it is directly connected to (interface subnets, scope-link routes), less `allow`;
 * the deny list still wins. A default route of scope link is not a "connected network".
 */
import { describe, expect, it } from 'vitest';
import type { NetworkInterfaceInfo } from 'node:os';
import { parseServerConfig } from '../../src/config/server-schema.js';
import { IP_PROTO_TCP } from '../../src/wire/ipv4.js';
import { cidrToString, ipToU32 } from '../../src/net/ipv4.js';
import { fromInterfaces, hostDenyList, parseLinkRoutes, readHostNetworks } from '../../src/server/host-networks.js';
import { serverRouter } from '../../src/server/server.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';

const S = (l: ReadonlyArray<{ addr: number; prefix: number }>): string[] => l.map(cidrToString);

function iface(cidr: string, family: 'IPv4' | 'IPv6' = 'IPv4'): NetworkInterfaceInfo {
  const address = cidr.split('/')[0];
  return family === 'IPv4'
    ? { address, netmask: '255.255.255.0', family, mac: '02:00:00:00:00:01', internal: false, cidr }
    : { address, netmask: 'ffff:ffff:ffff:ffff::', family, mac: '02:00:00:00:00:01', internal: false, cidr, scopeid: 0 };
}

const IFS = { lo: [iface('127.0.0.1/8')], eth0: [iface('203.0.113.7/24'), iface('2001:db8::7/64', 'IPv6')], eth1: [iface('10.20.0.5/16')] };
const LINK_ROUTES = JSON.stringify([
  { dst: 'default', dev: 'ppp0', flags: [] },
  { dst: '203.0.113.0/24', dev: 'eth0', protocol: 'kernel', prefsrc: '203.0.113.7', flags: [] },
  { dst: '198.51.100.0/25', dev: 'eth1', flags: [] },
  { dst: '224.0.0.0/4', type: 'multicast', dev: 'eth1', flags: [] },
]);

describe("the server host's networks", () => {
  it('reads every IPv4 address and its subnet, and the scope-link routes but the default', async () => {
    const h = await readHostNetworks({ interfaces: () => IFS, linkRoutes: () => Promise.resolve(LINK_ROUTES) });
    expect(S(h.addresses)).toEqual(['127.0.0.1/32', '203.0.113.7/32', '10.20.0.5/32']);
    expect(S(h.networks)).toEqual(['127.0.0.0/8', '203.0.113.0/24', '10.20.0.0/16', '203.0.113.0/24', '198.51.100.0/25']);
    expect(h.problem).toBeUndefined();
    expect(S(parseLinkRoutes(''))).toEqual([]);
  });

  it('keeps the addresses and says why when ip cannot run', async () => {
    const h = await readHostNetworks({ interfaces: () => IFS, linkRoutes: () => Promise.reject(new Error('spawn ip ENOENT')) });
    expect(S(h.addresses)).toHaveLength(3);
    expect(h.problem).toBe('cannot read the connected routes with ip (spawn ip ENOENT)');
  });

  it('reads this machine without failing (its loopback at least)', async () => {
    const h = await readHostNetworks();
    expect(S(h.addresses)).toContain('127.0.0.1/32');
    expect(fromInterfaces({})).toEqual({ addresses: [], networks: [] });
  });

  it('denies the host less allow; deny still wins over allow', () => {
    const h = fromInterfaces(IFS);
    const config = parseServerConfig({
      privateKey: formatKey(generatePrivateKey()),
      address: '10.8.0.1/16',
      allow: ['10.20.0.0/17', '127.0.0.1/32'],
      peers: [{ publicKey: formatKey(publicKeyOf(generatePrivateKey())), allowedIPs: ['10.8.0.2/32'] }],
    });
    const deny = hostDenyList(h, config.allow);
    expect(S(deny)).toContain('10.20.128.0/17');
    const r = serverRouter(config, 'direct', deny);
    const route = (ip: string): string => r.route(ipToU32(ip)!, IP_PROTO_TCP, 22);
    expect(route('203.0.113.7')).toBe('block'); // the host's own public address
    expect(route('203.0.113.99')).toBe('block'); // its LAN
    expect(route('10.20.200.1')).toBe('block'); // the part of 10.20/16 not allowed
    expect(route('10.20.1.1')).toBe('direct'); // allowed
    expect(route('127.0.0.1')).toBe('block'); // allowed, but 127/8 is in the default deny list
    expect(route('10.8.0.1')).toBe('block'); // the tunnel address
    expect(route('192.0.2.1')).toBe('direct'); // the internet
    expect(r.why(ipToU32('203.0.113.7')!, IP_PROTO_TCP, 22).ruleIndex).toBe(2);
  });
});
