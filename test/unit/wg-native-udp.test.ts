/**
 * NativeUdpTransport (the addon's recvmmsg/sendmmsg socket) on loopback: batches both ways,
 * the source endpoint, drops on a full socket buffer, close, and the one-sentence bind error.
 * Skipped when the addon is not built; openUdpTransport then falls back to node:dgram.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { TunrouteError } from '../../src/errors.js';
import { addonPath } from '../../src/native/addon.js';
import { tryLoadNativeUdp, type NativeUdpAddon } from '../../src/native/udp.js';
import type { Endpoint } from '../../src/wireguard/endpoint.js';
import { NativeUdpTransport } from '../../src/wireguard/native-udp-transport.js';
import { DgramTransport, openUdpTransport } from '../../src/wireguard/udp-transport.js';

const native = tryLoadNativeUdp();
if (native === undefined) {
  console.warn(`wg-native-udp: SKIPPED — the native addon is not built (${addonPath()}); run \`npm run build\`.`);
}
const d = native === undefined ? describe.skip : describe;

const LOCAL = '127.0.0.1';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function open(opts: Parameters<typeof NativeUdpTransport.open>[1] = {}): NativeUdpTransport {
  const t = NativeUdpTransport.open(native!, { address: LOCAL, ...opts });
  cleanup.push(() => t.close());
  return t;
}

async function dgram(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, LOCAL, resolve));
  cleanup.push(() => s.close());
  return s;
}

/** Datagram i: `size` bytes, each (i + j) & 0xff, its index in the first two bytes. */
function datagram(i: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let j = 0; j < size; j++) b[j] = (i + j) & 0xff;
  b[0] = i >>> 8;
  b[1] = i & 0xff;
  return b;
}

function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() > until) reject(new Error('timed out'));
      else setTimeout(tick, 2);
    };
    tick();
  });
}

d('NativeUdpTransport', () => {
  it('binds an ephemeral port on the address asked for', () => {
    const t = open();
    expect(t.port).toBeGreaterThan(0);
  });

  it('sends everything of one turn in one sendmmsg, in order, to a node:dgram socket', async () => {
    const t = open();
    const rx = await dgram();
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    const sizes = [1452, 1452, 1452, 100, 32, 1452, 1, 0, 1452];
    for (let i = 0; i < sizes.length; i++) expect(t.send(datagram(i, sizes[i]), to)).toBe(true);
    expect(t.stats.txFlushes).toBe(0); // staged, not sent yet
    await waitFor(() => got.length === sizes.length);
    expect(t.stats.txFlushes).toBe(1);
    expect(got.map((m) => m.length)).toEqual(sizes);
    for (let i = 0; i < sizes.length; i++) if (sizes[i] >= 2) expect(new Uint8Array(got[i])).toEqual(datagram(i, sizes[i]));
    expect(t.sendDrops).toBe(0);
  });

  it('copies at send: the caller may reuse its buffer at once', async () => {
    const t = open();
    const rx = await dgram();
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    const buf = new Uint8Array(4);
    for (let i = 0; i < 3; i++) {
      buf.fill(i);
      t.send(buf, to);
    }
    await waitFor(() => got.length === 3);
    expect(got.map((m) => m[0])).toEqual([0, 1, 2]);
  });

  it('flushes at once when the staging area is full', async () => {
    const t = open({ maxBatch: 4 });
    const rx = await dgram();
    let n = 0;
    rx.on('message', () => n++);
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    for (let i = 0; i < 10; i++) t.send(datagram(i, 200), to);
    expect(t.stats.txFlushes).toBe(2); // at the 5th and the 9th
    await waitFor(() => n === 10);
    expect(t.stats.txFlushes).toBe(3);
  });

  it('receives a burst in batches, each datagram whole, with the source endpoint', async () => {
    const t = open({ receiveBatch: 16 });
    const tx = await dgram();
    const got: { data: Uint8Array; from: Endpoint }[] = [];
    // The view is valid only during the call: copy.
    t.onMessage((data, from) => got.push({ data: Uint8Array.from(data), from }));
    const N = 200;
    for (let i = 0; i < N; i++) tx.send(datagram(i, 64 + (i % 1000)), t.port, LOCAL);
    await waitFor(() => got.length === N);
    for (let i = 0; i < N; i++) expect(got[i].data).toEqual(datagram(i, 64 + (i % 1000)));
    expect(got[0].from).toEqual({ address: LOCAL, port: tx.address().port });
    // One Endpoint object per source, not one per datagram.
    expect(new Set(got.map((g) => g.from)).size).toBe(1);
    expect(t.stats.rxDatagrams).toBe(N);
  });

  it('tells sources apart', async () => {
    const t = open();
    const a = await dgram();
    const b = await dgram();
    const from: Endpoint[] = [];
    t.onMessage((_data, f) => from.push(f));
    a.send(Buffer.from('a'), t.port, LOCAL);
    await waitFor(() => from.length === 1);
    b.send(Buffer.from('b'), t.port, LOCAL);
    await waitFor(() => from.length === 2);
    a.send(Buffer.from('a'), t.port, LOCAL);
    await waitFor(() => from.length === 3);
    expect(from.map((f) => f.port)).toEqual([a.address().port, b.address().port, a.address().port]);
    expect(from[2]).toBe(from[0]);
  });

  it('two native transports talk to each other, replies sent from inside the handler', async () => {
    const a = open();
    const b = open();
    let echoed = 0;
    b.onMessage((data, from) => b.send(data, from));
    a.onMessage(() => echoed++);
    const to: Endpoint = { address: LOCAL, port: b.port };
    for (let i = 0; i < 100; i++) a.send(datagram(i, 1000), to);
    await waitFor(() => echoed === 100);
    expect(b.stats.txFlushes).toBeLessThan(100);
  });

  it('cuts a datagram longer than its slot to the slot', async () => {
    const t = open({ maxDatagramBytes: 128 });
    const tx = await dgram();
    const lengths: number[] = [];
    t.onMessage((data) => lengths.push(data.length));
    tx.send(Buffer.alloc(500), t.port, LOCAL);
    tx.send(Buffer.alloc(100), t.port, LOCAL);
    await waitFor(() => lengths.length === 2);
    expect(lengths).toEqual([128, 100]);
  });

  it('counts what a full socket buffer refuses in sendDrops', async () => {
    // Loopback never fills a send buffer (it hands each datagram over at once), so the socket
    // buffer is made "full" after 3 datagrams by a wrapper around the real addon.
    let room = 3;
    const full: NativeUdpAddon = {
      ...native!,
      udpSendMany: (fd, buf, offsets, lengths, addrs, ports, count, flags) => {
        const n = Math.min(count, room);
        room -= n;
        return n === 0 ? 0 : native!.udpSendMany(fd, buf, offsets, lengths, addrs, ports, n, flags);
      },
    };
    const t = NativeUdpTransport.open(full, { address: LOCAL });
    cleanup.push(() => t.close());
    const rx = await dgram();
    let n = 0;
    rx.on('message', () => n++);
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    for (let i = 0; i < 10; i++) t.send(datagram(i, 100), to);
    t.flush();
    expect(t.stats.txDatagrams).toBe(3);
    expect(t.sendDrops).toBe(7);
    await waitFor(() => n === 3);
  });

  it('counts a datagram the kernel refuses as too long (EMSGSIZE) and sends the rest', async () => {
    const t = open();
    const rx = await dgram();
    let n = 0;
    rx.on('message', () => n++);
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    t.send(new Uint8Array(10), to);
    t.send(new Uint8Array(70000), to);
    t.send(new Uint8Array(10), to);
    await waitFor(() => n === 2);
    expect(t.sendDrops).toBe(1);
  });

  it('drops and counts a datagram to an address that is not IPv4, and keeps going', async () => {
    const t = open();
    const rx = await dgram();
    let n = 0;
    rx.on('message', () => n++);
    expect(t.send(new Uint8Array(10), { address: '::1', port: 9 })).toBe(false);
    expect(t.sendDrops).toBe(1);
    expect(t.send(new Uint8Array(10), { address: LOCAL, port: rx.address().port })).toBe(true);
    await waitFor(() => n === 1);
  });

  it('counts a datagram the kernel refuses (port 0) and sends the rest of the batch', async () => {
    const t = open();
    const rx = await dgram();
    let n = 0;
    rx.on('message', () => n++);
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    t.send(new Uint8Array(10), to);
    t.send(new Uint8Array(10), { address: LOCAL, port: 0 });
    t.send(new Uint8Array(10), to);
    await waitFor(() => n === 2);
    expect(t.sendDrops).toBe(1);
  });

  it('close is idempotent, stops receiving, and sends no more', async () => {
    const t = NativeUdpTransport.open(native!, { address: LOCAL });
    const tx = await dgram();
    let n = 0;
    t.onMessage(() => n++);
    t.close();
    t.close();
    tx.send(Buffer.from('x'), t.port, LOCAL);
    await new Promise((r) => setTimeout(r, 30));
    expect(n).toBe(0);
    expect(t.send(new Uint8Array(1), { address: LOCAL, port: tx.address().port })).toBe(false);
    expect(t.sendDrops).toBe(1);
  });

  it('close from inside the handler stops the rest of the batch', async () => {
    const t = NativeUdpTransport.open(native!, { address: LOCAL });
    const tx = await dgram();
    let n = 0;
    t.onMessage(() => {
      n++;
      t.close();
    });
    for (let i = 0; i < 20; i++) tx.send(Buffer.from('x'), t.port, LOCAL);
    await waitFor(() => n > 0);
    await new Promise((r) => setTimeout(r, 30));
    expect(n).toBe(1);
  });

  it('says in one sentence that the port is taken', () => {
    const first = open();
    let err: unknown;
    try {
      open({ port: first.port });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TunrouteError);
    expect((err as TunrouteError).message).toBe(
      `UDP port ${first.port} for the tunnel is already in use: pick another ListenPort (listenPort), or leave it out for any free port.`,
    );
  });

  it('hands a failed bind to the caller sentence, with the errno code', () => {
    const first = open();
    let code: string | undefined;
    expect(() =>
      open({
        port: first.port,
        bindError: (e) => {
          code = e.code;
          return new TunrouteError('TR_LISTEN', 'taken');
        },
      }),
    ).toThrow('taken');
    expect(code).toBe('EADDRINUSE');
  });

  it('an address that is not this host fails as EADDRNOTAVAIL', () => {
    let code: string | undefined;
    expect(() =>
      open({
        address: '192.0.2.77',
        bindError: (e) => {
          code = e.code;
          return new TunrouteError('TR_LISTEN', 'not ours');
        },
      }),
    ).toThrow('not ours');
    expect(code).toBe('EADDRNOTAVAIL');
  });

  it('GSO: runs of equal datagrams (a shorter last) arrive as the same datagrams', async () => {
    const t = open({ gso: true, maxBatch: 256 });
    const rx = await dgram();
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    const to: Endpoint = { address: LOCAL, port: rx.address().port };
    const sizes = [...Array<number>(70).fill(1200), 300, 1200, 1200, 1300, 1300, 5, 5, 5];
    for (let i = 0; i < sizes.length; i++) t.send(datagram(i, sizes[i]), to);
    await waitFor(() => got.length === sizes.length);
    expect(got.map((m) => m.length)).toEqual(sizes);
    for (let i = 0; i < sizes.length; i++) expect(new Uint8Array(got[i])).toEqual(datagram(i, sizes[i]));
  });
});

describe('openUdpTransport', () => {
  it('uses the addon when it is built, node:dgram otherwise', async () => {
    const t = await openUdpTransport({ address: LOCAL });
    try {
      expect(t).toBeInstanceOf(native === undefined ? DgramTransport : NativeUdpTransport);
    } finally {
      t.close();
    }
  });
});
