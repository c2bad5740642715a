/**
 * The pieces around the server's data path: the PacketPipe link (batches, copies, MTU), and
 * `tunroute status` against a running server over a real control socket.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { formatStatus, queryControl, startControlServer } from '../../src/control/index.js';
import { parseResponse } from '../../src/control/protocol.js';
import { PacketPipe } from '../../src/link/packet-pipe.js';
import { silentLogger } from '../../src/logger.js';
import { serverStatusSnapshot } from '../../src/server/status.js';
import { parseServerConfig } from '../../src/config/server-schema.js';
import { formatKey } from '../../src/wireguard/keys.js';
import { CLIENT_IPS, SERVER_IP, makeRig, until, type Rig } from './server-harness.js';
import { icmpEcho } from './wg-harness.js';

describe('PacketPipe', () => {
  it('delivers what one turn queued as one batch of copies, and hands sends to transmit', async () => {
    const sent: number[] = [];
    const pipe = new PacketPipe({ name: 'p', mtu: 100, transmit: (p) => (sent.push(p.length), p[0] !== 0xff) });
    const batches: Array<number[]> = [];
    pipe.onReceive((b) => {
      const lens: number[] = [];
      for (let i = 0; i < b.count; i++) lens.push(b.lengths[i], b.buf[b.offsets[i]]);
      batches.push(lens);
    });
    const a = Uint8Array.of(1, 2, 3);
    pipe.deliver(a);
    pipe.deliver(Uint8Array.of(9, 9));
    a[0] = 7; // the pipe copies at delivery time, not before: the caller hands over fresh packets
    expect(batches).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(batches).toEqual([[3, 7, 2, 9]]);
    expect(pipe.stats).toMatchObject({ rxPackets: 2, rxBytes: 5 });

    expect(pipe.send(new Uint8Array(10))).toBe(true);
    expect(pipe.send(new Uint8Array(101))).toBe(false); // over the MTU
    expect(pipe.sendMany([new Uint8Array(5), Uint8Array.of(0xff)])).toBe(1); // transmit refused one
    expect(sent).toEqual([10, 5, 1]);
    expect(pipe.stats).toMatchObject({ txPackets: 2, txBytes: 15, txErrors: 2 });
    pipe.close();
    pipe.deliver(a);
    expect(pipe.flush()).toBe(0);
  });

  it('splits a large queue into batches of batchSize', () => {
    const pipe = new PacketPipe({ name: 'p', mtu: 1500, transmit: () => true, batchSize: 4 });
    const counts: number[] = [];
    pipe.onReceive((b) => counts.push(b.count));
    for (let i = 0; i < 10; i++) pipe.deliver(new Uint8Array(100));
    expect(pipe.flush()).toBe(10);
    expect(counts).toEqual([4, 4, 2]);
  });
});

describe('tunroute status for a server', () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it('answers over the control socket with the peers, and prints them', async () => {
    rig = await makeRig();
    const c = rig.clients[0];
    c.sendPacket(icmpEcho(CLIENT_IPS[0], SERVER_IP, 1));
    await until(() => c.received.length === 1, 'the echo reply');
    const config = parseServerConfig({
      listen: '192.0.2.1:51820',
      privateKey: formatKey(rig.keys.server),
      address: '10.8.0.1/16',
      peers: [{ publicKey: rig.server.peers()[0].publicKey, allowedIPs: ['10.8.0.2/32'] }],
    });
    const path = join(mkdtempSync(join(tmpdir(), 'tunroute-server-status-')), 'server.sock');
    const started = new Date(Date.now() - 65_000);
    const control = await startControlServer({
      path,
      logger: silentLogger(),
      snapshot: () => serverStatusSnapshot(rig!.server, config, { version: '9.9.9', startedAt: started }),
    });
    try {
      const s = await queryControl(path, 'status');
      expect(s.device).toEqual({ name: 'wg', mtu: 1420, address: '10.8.0.1/16' });
      expect(s.server).toMatchObject({ listen: '192.0.2.1:51820', publicKey: rig.server.publicKey, forwarded: 0 });
      expect(s.server?.peers[0]).toMatchObject({ name: 'c0', allowedIPs: ['10.8.0.2/32'], endpoint: '198.51.100.10:40000' });
      expect(s.server?.peers[0]?.lastHandshakeAgoMs).toBeGreaterThanOrEqual(0);
      const text = formatStatus(s);
      expect(text).toContain(`server    listen 192.0.2.1:51820  public key ${rig.server.publicKey}  mode userspace  forwarded 0`);
      expect(text).toMatch(/peer {6}c0 {2}10\.8\.0\.2\/32 {2}198\.51\.100\.10:40000 {2}handshake \d+ms ago {2}rx \d+ B {2}tx \d+ B/);
      expect(text).toContain('icmp echo 1');
    } finally {
      await control.close();
    }
  });

  it('still reads a status without a server part (a client daemon), and one from an older server', () => {
    const base = { version: '1', pid: 1, startedAt: 'x', uptimeMs: 0, device: { name: 'tun0', mtu: 1500, address: 'a' }, routes: 0, link: {}, packets: {}, tcp: {}, outbounds: {}, flows: [] };
    const plain = parseResponse('status', JSON.stringify({ v: 1, ok: true, data: base }));
    expect(plain.ok === true && plain.data.server).toBeUndefined();
    const partial = parseResponse('status', JSON.stringify({ v: 1, ok: true, data: { ...base, server: { listen: 'l', publicKey: 'k', udp: {}, peers: [{ name: 'n', publicKey: 'k', allowedIPs: [] }] } } }));
    expect(partial.ok === true && partial.data.server).toMatchObject({ forwarded: 0, drops: {}, peers: [{ rxBytes: 0, drops: {} }] });
  });
});
