/**
 * `mode: tun` without root: the TUN device is an in-memory link and the `ip` runner records
 * its lines. Decrypted packets must reach the device untouched (the kernel answers), and what
 * the "kernel" writes into the device must be sealed to the peer that owns the destination.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { parseServerConfig } from '../../src/config/server-schema.js';
import { TunrouteError } from '../../src/errors.js';
import { MemoryLink } from '../../src/link/memory.js';
import { silentLogger } from '../../src/logger.js';
import { formatKey, publicKeyOf } from '../../src/wireguard/keys.js';
import type { IpRunner } from '../../src/routes/apply.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import { CLIENT_IPS, FakeNet, SERVER_EP, TestClient, testKeys, until } from './server-harness.js';
import { icmpEcho } from './wg-harness.js';

const keys = testKeys(1, 'tun-mode');
const config = parseServerConfig({
  listen: '192.0.2.1:51820',
  privateKey: formatKey(keys.server),
  address: '10.8.0.1/16',
  mode: 'tun',
  tun: { name: 'trtest0' },
  peers: [{ name: 'c0', publicKey: formatKey(publicKeyOf(keys.clients[0])), allowedIPs: ['10.8.0.2/32'] }],
});

function recorder(ok = true): IpRunner & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    batch: (l) => {
      lines.push(...l);
      return Promise.resolve(ok ? { ok: true, stderr: '' } : { ok: false, stderr: 'RTNETLINK answers: File exists' });
    },
  };
}

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
});

describe('tunroute server, mode: tun', () => {
  it('addresses the device, hands decrypted packets to the kernel as they are, and seals what it routes back', async () => {
    const dev = new MemoryLink({ mtu: 1420, name: 'trtest0' });
    const runner = recorder();
    const net = new FakeNet();
    const server: RunningServer = await startServer(config, { transport: net.bind(SERVER_EP), logger: silentLogger(), openTun: async () => dev, ipRunner: runner });
    cleanup.push(() => server.stop());
    const client = new TestClient(net, { address: '198.51.100.10', port: 40000 }, CLIENT_IPS[0], keys.clients[0], publicKeyOf(keys.server));
    cleanup.push(() => client.close());

    expect(runner.lines).toEqual(['address add 10.8.0.1/16 dev trtest0', 'link set dev trtest0 mtu 1420 up']);
    expect(server.mode).toBe('tun');

    // An echo to a host behind the server: the kernel's to answer (or forward), not ours.
    const echo = icmpEcho(CLIENT_IPS[0], ipToU32('10.77.0.2')!, 1);
    client.sendPacket(echo);
    await until(() => dev.drain().some((p) => Buffer.from(p).equals(Buffer.from(echo))), 'the echo in the device');

    // The kernel's reply comes back through the device and is sealed to the peer.
    const reply = icmpEcho(ipToU32('10.77.0.2')!, CLIENT_IPS[0], 1, 56, 0);
    dev.inject(reply);
    await until(() => client.received.length === 1, 'the reply at the client');
    expect(Buffer.from(client.received[0]).equals(Buffer.from(reply))).toBe(true);

    // Nothing of ours terminates traffic in this mode; a packet for nobody is counted.
    dev.inject(icmpEcho(ipToU32('10.77.0.2')!, ipToU32('10.8.0.77')!, 2));
    await until(() => server.stats().tunnel.noPeer === 1, 'the drop');
    expect(server.stats().packets).toBeUndefined();
    expect(server.flows()).toEqual([]);
  });

  it('says why when the device cannot be set up, and leaves nothing open', async () => {
    let closed = false;
    const dev = new MemoryLink({ mtu: 1420, name: 'trtest0' });
    const close = dev.close.bind(dev);
    dev.close = () => {
      closed = true;
      close();
    };
    const net = new FakeNet();
    const transport = net.bind(SERVER_EP);
    let e: unknown;
    try {
      await startServer(config, { transport, logger: silentLogger(), openTun: async () => dev, ipRunner: recorder(false) });
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(TunrouteError);
    expect((e as TunrouteError).message).toBe(
      'Cannot give trtest0 the address 10.8.0.1/16 and bring it up (RTNETLINK answers: File exists): check that the address is not used by another interface.',
    );
    expect(closed).toBe(true);
    expect(transport.send(new Uint8Array(1), SERVER_EP)).toBe(false); // the UDP socket was closed too
  });
});
