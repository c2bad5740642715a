/**
 * Interoperability with a real WireGuard: Debian's `wireguard-go`, configured with `wg`, in a
 * network namespace of a lab this file creates and removes.
 *
 *   ns "wg"  wireguard-go (interface trwg…, 10.202.0.1/24), UDP 10.201.0.1:51820
 *     │ veth 10.201.0.0/24
 *   ns "me"  a tiny UDP relay on 10.201.0.2:51820 ⇄ a unix socket ⇄ this test process, where
 *            our Peer runs (the protocol code is the one under test; only the socket is borrowed)
 *
 * Three sessions, each with ICMP echoes through the tunnel:
 *   1. we initiate (no preshared key): our initiation, wireguard-go's response, a ping each way,
 *      then a second handshake on the live session and a ping each way with the new keys;
 *   2. wireguard-go initiates (with a preshared key), woken by a ping from its side; a ping each way;
 *   3. as 2, but into a Device holding two peers: the initiation reaches the right one.
 * With WG_WRITE_FIXTURE=1 the exchanged bytes are saved to test/fixtures/wg/interop.json,
 * which the unit test wg-interop-vectors replays offline without root.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, labAvailable, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import type { Datagram, Endpoint } from '../../src/wireguard/endpoint.js';
import { StaticIdentity } from '../../src/wireguard/handshake.js';
import { formatKey, generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { Peer } from '../../src/wireguard/peer.js';
import { Device } from '../../src/wireguard/device.js';
import { echoReplyInPlace, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpPacket } from '../../src/wire/icmp.js';
import { IP_PROTO_ICMP, Ipv4Packet } from '../../src/wire/ipv4.js';
import { icmpEcho, seededRandom, toHex } from '../unit/wg-harness.js';

const avail = labAvailable();
if (!avail.ok) console.log(`[e2e/wg-interop] SKIPPED: ${avail.reason}`);
const haveWg = existsSync('/usr/bin/wireguard-go') && existsSync('/usr/bin/wg');
if (avail.ok && !haveWg) console.log('[e2e/wg-interop] SKIPPED: apt-get install wireguard-go wireguard-tools');
const run = avail.ok && haveWg;

const FIXTURE = fileURLToPath(new URL('../fixtures/wg/interop.json', import.meta.url));

const WG_IP = 0x0aca0001; // 10.202.0.1, wireguard-go's tunnel address
const OUR_IP = 0x0aca0002; // 10.202.0.2, ours
const WG_EP: Endpoint = { address: '10.201.0.1', port: 51820 };

// The relay: UDP on one side, length-prefixed frames on a unix socket on the other.
// Frame: u32 length of the rest | u16 port | u8 address length | address | payload.
const RELAY_JS = `
const dgram = require('node:dgram');
const net = require('node:net');
const [sockPath, addr, port] = process.argv.slice(2);
const udp = dgram.createSocket('udp4');
const conn = net.connect(sockPath);
let buf = Buffer.alloc(0);
conn.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
    const n = buf.readUInt32BE(0);
    const f = buf.subarray(4, 4 + n);
    buf = buf.subarray(4 + n);
    const p = f.readUInt16BE(0), al = f[2];
    udp.send(f.subarray(3 + al), p, f.subarray(3, 3 + al).toString());
  }
});
udp.on('message', (msg, r) => {
  const a = Buffer.from(r.address);
  const h = Buffer.alloc(7 + a.length);
  h.writeUInt32BE(3 + a.length + msg.length, 0);
  h.writeUInt16BE(r.port, 4);
  h[6] = a.length;
  a.copy(h, 7);
  conn.write(Buffer.concat([h, msg]));
});
conn.on('close', () => process.exit(0));
conn.on('connect', () => udp.bind(Number(port), addr, () => console.log('relay ready')));
`;

function frame(d: Datagram): Buffer {
  const a = Buffer.from(d.to.address);
  const h = Buffer.alloc(7 + a.length);
  h.writeUInt32BE(3 + a.length + d.data.length, 0);
  h.writeUInt16BE(d.to.port, 4);
  h[6] = a.length;
  a.copy(h, 7);
  return Buffer.concat([h, d.data]);
}

interface Captured {
  from: 'us' | 'wg';
  hex: string;
}

/** What the driver runs: a Peer, or a Device with the peer to send to. */
interface Machine {
  receive(now: number, data: Uint8Array, from: Endpoint): { packets: Uint8Array[]; datagrams: Datagram[] };
  send(now: number, packet: Uint8Array): Datagram[];
  poll(now: number): Datagram[];
  pollAt(): number | undefined;
  readonly counters: Peer['counters'];
}

function deviceMachine(device: Device, peer: Peer): Machine {
  return {
    receive: (now, data, from) => device.receive(now, data, from),
    send: (now, packet) => peer.send(now, packet),
    poll: (now) => device.poll(now),
    pollAt: () => device.pollAt(),
    counters: peer.counters,
  };
}

/** Runs one Peer (or Device) against the relay in real time: receive, answer pings, run timers. */
class LiveDriver {
  readonly captured: Captured[] = [];
  readonly received: Uint8Array[] = [];
  private timer: NodeJS.Timeout | undefined;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  constructor(
    readonly peer: Machine,
    private readonly conn: Socket,
  ) {}

  attach(): void {
    this.conn.on('data', this.onData);
  }

  detach(): void {
    this.conn.off('data', this.onData);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private readonly onData = (d: Buffer): void => {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
      const n = this.buf.readUInt32BE(0);
      const f = this.buf.subarray(4, 4 + n);
      this.buf = this.buf.subarray(4 + n);
      const port = f.readUInt16BE(0);
      const al = f[2];
      const from: Endpoint = { address: f.subarray(3, 3 + al).toString(), port };
      const data = new Uint8Array(f.subarray(3 + al));
      this.captured.push({ from: 'wg', hex: toHex(data) });
      const r = this.peer.receive(performance.now(), data, from);
      this.out(r.datagrams);
      for (const p of r.packets) this.onPacket(p);
    }
    this.schedule();
    for (const w of this.waiters.splice(0)) w();
  };

  private onPacket(p: Uint8Array): void {
    this.received.push(new Uint8Array(p));
    const ip = new Ipv4Packet();
    if (ip.wrap(p, 0, p.length) !== undefined || ip.protocol !== IP_PROTO_ICMP) return;
    const icmp = new IcmpPacket();
    if (icmp.wrap(p, ip.payloadOffset, ip.payloadLen) !== undefined || icmp.type !== ICMP_ECHO_REQUEST) return;
    echoReplyInPlace(ip, icmp);
    this.send(p);
  }

  send(packet: Uint8Array): void {
    this.out(this.peer.send(performance.now(), packet));
    this.schedule();
  }

  out(ds: Datagram[]): void {
    for (const d of ds) {
      this.captured.push({ from: 'us', hex: toHex(d.data) });
      this.conn.write(frame(d));
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    const at = this.peer.pollAt();
    if (at === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.out(this.peer.poll(performance.now()));
      this.schedule();
    }, Math.max(0, at - performance.now()));
  }

  /** Wait until `pred` holds (checked after each datagram). */
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; counters ${JSON.stringify(this.peer.counters)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

function isIcmp(p: Uint8Array, type: number, src: number, dst: number): boolean {
  const ip = new Ipv4Packet();
  if (ip.wrap(p, 0, p.length) !== undefined || ip.protocol !== IP_PROTO_ICMP || ip.src !== src || ip.dst !== dst) return false;
  const icmp = new IcmpPacket();
  return icmp.wrap(p, ip.payloadOffset, ip.payloadLen) === undefined && icmp.type === type;
}

describe.skipIf(!run)('WireGuard interop with wireguard-go', () => {
  let lab: Lab;
  let nsWg: Namespace;
  let nsMe: Namespace;
  let server: Server;
  let conn: Socket;
  let wgd: LabProcess;
  let ifname: string;
  const wgPriv = generatePrivateKey(seededRandom('interop/wg-key'));
  const wgPub = publicKeyOf(wgPriv);
  const fixture: Record<string, unknown> = {
    note: 'Captured from wireguard-go by test/e2e/wg-interop.test.ts (WG_WRITE_FIXTURE=1); test keys only.',
    wgPrivateKey: formatKey(wgPriv),
    wgPublicKey: formatKey(wgPub),
  };

  beforeAll(async () => {
    lab = await Lab.create();
    nsWg = await lab.addNamespace('wg');
    nsMe = await lab.addNamespace('me');
    await lab.link(nsWg, nsMe, { cidrA: '10.201.0.1/24', cidrB: '10.201.0.2/24' });
    const v = await nsWg.exec(['wireguard-go', '--version'], { allowFail: true });
    fixture.wireguardGo = v.stdout.split('\n')[0]?.trim();

    const sock = `${lab.tmpDir}/relay.sock`;
    server = createServer();
    const connected = new Promise<Socket>((r) => server.once('connection', r));
    await new Promise<void>((r) => server.listen(sock, r));
    writeFileSync(`${lab.tmpDir}/relay.cjs`, RELAY_JS);
    const relay = nsMe.spawn(['node', `${lab.tmpDir}/relay.cjs`, sock, '10.201.0.2', '51820'], { name: 'relay' });
    conn = await connected;
    await relay.waitForLine(/relay ready/, 10_000);

    // A distinct interface name per lab: wireguard-go's UAPI socket lives in the shared /var/run.
    ifname = `trwg${lab.id.slice(-4)}`;
    wgd = nsWg.spawn(['wireguard-go', '-f', ifname], { name: 'wireguard-go', env: { LOG_LEVEL: 'verbose' } });
    const sockPath = `/var/run/wireguard/${ifname}.sock`;
    for (let i = 0; i < 100 && !existsSync(sockPath); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(sockPath), `wireguard-go did not create ${sockPath}: ${wgd.outputTail()}`).toBe(true);
    writeFileSync(`${lab.tmpDir}/wg.key`, `${formatKey(wgPriv)}\n`);
    await nsWg.exec(['wg', 'set', ifname, 'private-key', `${lab.tmpDir}/wg.key`, 'listen-port', '51820']);
    await nsWg.exec(['ip', 'addr', 'add', '10.202.0.1/24', 'dev', ifname]);
    await nsWg.exec(['ip', 'link', 'set', ifname, 'up']);
  });

  afterAll(async () => {
    conn?.destroy();
    server?.close();
    await lab?.destroy();
    if (process.env.WG_WRITE_FIXTURE === '1') writeFileSync(FIXTURE, `${JSON.stringify(fixture, null, 2)}\n`);
  });

  it('wireguard-go accepts our initiation; a ping each way, a second handshake, a ping each way again', async () => {
    const seed = 'interop/initiator';
    const ourPriv = generatePrivateKey(seededRandom(`${seed}/key`));
    const ourPub = publicKeyOf(ourPriv);
    await nsWg.exec(['wg', 'set', ifname, 'peer', formatKey(ourPub), 'allowed-ips', '10.202.0.2/32']);
    // The wall clock is read once per initiation; the first reading goes into the fixture so
    // that the offline replay reproduces our initiation (a constant clock would make the
    // second initiation a replay, which wireguard-go rightly ignores).
    const wallReadings: number[] = [];
    const peer = new Peer({
      local: new StaticIdentity(ourPriv),
      publicKey: wgPub,
      endpoint: WG_EP,
      random: seededRandom(`${seed}/rand`),
      wallClock: () => {
        wallReadings.push(Date.now());
        return wallReadings[wallReadings.length - 1];
      },
    });
    const d = new LiveDriver(peer, conn);
    d.attach();
    try {
      // Our echo request to wireguard-go's address: queued, an initiation goes out first.
      const req = icmpEcho(OUR_IP, WG_IP, 1);
      d.send(req);
      await d.until(() => d.received.some((p) => isIcmp(p, ICMP_ECHO_REPLY, WG_IP, OUR_IP)), 10_000, 'the echo reply from wireguard-go');
      expect(peer.counters.handshakesCompleted).toBe(1);
      expect(peer.counters.responsesReceived).toBe(1);
      // And a ping from wireguard-go's side, answered by us.
      const ping = await nsWg.exec(['ping', '-c', '1', '-W', '3', '10.202.0.2'], { allowFail: true });
      expect(ping.code, ping.stdout + ping.stderr).toBe(0);
      const show = await nsWg.exec(['wg', 'show', ifname, 'latest-handshakes']);
      expect(show.stdout).toContain(formatKey(ourPub));
      expect(Number(show.stdout.trim().split(/\s+/)[1])).toBeGreaterThan(0);
      const exchangeForFixture = [...d.captured];
      // A second handshake on the live session (REKEY_TIMEOUT later): wireguard-go rotates to
      // the new keypair and traffic goes on both ways.
      await new Promise((r) => setTimeout(r, 5100));
      d.out(peer.initiate(performance.now()));
      await d.until(() => peer.counters.handshakesCompleted === 2, 5000, 'the second handshake');
      const before = d.received.length;
      d.send(icmpEcho(OUR_IP, WG_IP, 2));
      await d.until(() => d.received.slice(before).some((p) => isIcmp(p, ICMP_ECHO_REPLY, WG_IP, OUR_IP)), 5000, 'an echo reply after the rekey');
      const ping2 = await nsWg.exec(['ping', '-c', '1', '-W', '3', '10.202.0.2'], { allowFail: true });
      expect(ping2.code, ping2.stdout + ping2.stderr).toBe(0);
      const dropped = Object.entries(peer.counters.dropped).filter(([, n]) => n > 0);
      expect(dropped).toEqual([]);
      fixture.initiator = {
        ourPrivateKey: formatKey(ourPriv),
        ourPublicKey: formatKey(ourPub),
        seed,
        wallMs: wallReadings[0],
        echoRequest: toHex(req),
        exchange: exchangeForFixture,
      };
    } finally {
      d.detach();
      peer.destroy();
      await nsWg.exec(['wg', 'set', ifname, 'peer', formatKey(ourPub), 'remove']);
    }
  });

  it('we accept wireguard-go’s initiation (with a preshared key); one ping each way', async () => {
    const seed = 'interop/responder';
    const ourPriv = generatePrivateKey(seededRandom(`${seed}/key`));
    const ourPub = publicKeyOf(ourPriv);
    const psk = seededRandom(`${seed}/psk`)(32);
    writeFileSync(`${lab.tmpDir}/psk`, `${formatKey(psk)}\n`);
    await nsWg.exec([
      'wg', 'set', ifname, 'peer', formatKey(ourPub), 'preshared-key', `${lab.tmpDir}/psk`,
      'endpoint', '10.201.0.2:51820', 'allowed-ips', '10.202.0.2/32',
    ]);
    const peer = new Peer({
      local: new StaticIdentity(ourPriv),
      publicKey: wgPub,
      presharedKey: psk,
      random: seededRandom(`${seed}/rand`),
    });
    const d = new LiveDriver(peer, conn);
    d.attach();
    try {
      // A ping from wireguard-go's side makes it initiate; we respond and answer the echo.
      const ping = await nsWg.exec(['ping', '-c', '1', '-W', '5', '10.202.0.2'], { allowFail: true });
      expect(ping.code, ping.stdout + ping.stderr + wgd.outputTail()).toBe(0);
      expect(peer.counters.initiationsReceived).toBeGreaterThanOrEqual(1);
      expect(peer.counters.handshakesCompleted).toBe(1);
      expect(peer.endpoint).toEqual(WG_EP);
      // And our own echo request over the session wireguard-go started.
      const req = icmpEcho(OUR_IP, WG_IP, 7, 100);
      d.send(req);
      await d.until(() => d.received.some((p) => isIcmp(p, ICMP_ECHO_REPLY, WG_IP, OUR_IP)), 5000, 'the echo reply');
      const dropped = Object.entries(peer.counters.dropped).filter(([, n]) => n > 0);
      expect(dropped).toEqual([]);
      fixture.responder = {
        ourPrivateKey: formatKey(ourPriv),
        ourPublicKey: formatKey(ourPub),
        presharedKey: formatKey(psk),
        seed,
        echoRequest: toHex(req),
        exchange: d.captured,
      };
    } finally {
      d.detach();
      peer.destroy();
      await nsWg.exec(['wg', 'set', ifname, 'peer', formatKey(ourPub), 'remove']);
    }
  });

  it('a Device with two peers routes wireguard-go’s initiation to the right one', async () => {
    const seed = 'interop/device';
    const device = new Device({ privateKey: generatePrivateKey(seededRandom(`${seed}/key`)), random: seededRandom(`${seed}/rand`) });
    const decoy = device.addPeer({ publicKey: publicKeyOf(generatePrivateKey(seededRandom(`${seed}/decoy`))) });
    const peer = device.addPeer({ publicKey: wgPub });
    await nsWg.exec([
      'wg', 'set', ifname, 'peer', formatKey(device.publicKey), 'endpoint', '10.201.0.2:51820', 'allowed-ips', '10.202.0.2/32',
    ]);
    const d = new LiveDriver(deviceMachine(device, peer), conn);
    d.attach();
    try {
      const ping = await nsWg.exec(['ping', '-c', '2', '-i', '0.2', '-W', '5', '10.202.0.2'], { allowFail: true });
      expect(ping.code, ping.stdout + ping.stderr).toBe(0);
      expect(peer.counters.handshakesCompleted).toBe(1);
      expect(decoy.counters.rxDatagrams).toBe(0);
      expect(Object.values(device.dropped).every((n) => n === 0)).toBe(true);
    } finally {
      d.detach();
      device.destroy();
      await nsWg.exec(['wg', 'set', ifname, 'peer', formatKey(device.publicKey), 'remove']);
    }
  });
});
