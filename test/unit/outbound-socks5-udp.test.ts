/**
 * SOCKS5 UDP ASSOCIATE against a real dante (started and stopped here, by PID, with a temp
 * config on 127.0.0.1), microsocks (which refuses UDP ASSOCIATE), and a scripted proxy for what
 * a real one will not do on demand (relay 0.0.0.0, closing the control connection).
 *
 * The real-server tests skip, with the reason in their title, when the binaries are missing.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UpstreamError, type Destination, type UpstreamReason } from '../../src/outbound/outbound.js';
import { Socks5UdpOutbound, openSocks5UdpAssociation, type Socks5UdpAssociation, type UdpUnreachableReason } from '../../src/outbound/socks5-udp.js';
import { parseSocks5Url } from '../../src/outbound/socks5-url.js';
import { freeTcpPort, hasBinary, LOOPBACK, startLoopbackDante, startLoopbackMicrosocks, type LoopbackDaemon } from '../helpers/loopback-daemons.js';

const HAVE_DANTED = hasBinary('danted');
const HAVE_MICROSOCKS = hasBinary('microsocks');

// ---------------------------------------------------------------- helpers

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve((server.address() as AddressInfo).port));
  });
}

function bindUdp(port = 0): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(port, LOOPBACK, () => resolve(s));
  });
}

async function freeUdpPort(): Promise<number> {
  const s = await bindUdp();
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** UDP echo: answers "echo:" + data; with `from`, answers from that other socket (another port). */
async function startEcho(): Promise<{ port: number; reflectPort: number; close(): void }> {
  const s = await bindUdp();
  const other = await bindUdp();
  s.on('message', (m, r) => {
    if (m.toString().startsWith('reflect:')) other.send(Buffer.concat([Buffer.from('reflected:'), m]), r.port, r.address);
    else s.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address);
  });
  return { port: s.address().port, reflectPort: other.address().port, close: () => { s.close(); other.close(); } };
}

interface Received {
  payload: Buffer;
  from: Destination;
}

/** Collects what an association delivers; `next()` waits (bounded) for the next one. */
function collect(a: Socks5UdpAssociation) {
  const got: Received[] = [];
  const unreachable: UdpUnreachableReason[] = [];
  const closed: UpstreamError[] = [];
  let wake: (() => void) | undefined;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  a.setHandlers({
    message: (payload, from) => {
      got.push({ payload: Buffer.from(payload), from });
      poke();
    },
    closed: (err) => {
      closed.push(err);
      poke();
    },
    unreachable: (r) => {
      unreachable.push(r);
      poke();
    },
  });
  const until = async (cond: () => boolean, what: string, ms = 3000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.min(left, 50));
      });
    }
  };
  return { got, unreachable, closed, until };
}

async function expectReason(p: Promise<unknown>, reason: UpstreamReason): Promise<UpstreamError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(UpstreamError);
  expect((err as UpstreamError).reason, (err as UpstreamError).message).toBe(reason);
  return err as UpstreamError;
}

// ---------------------------------------------------------------- dante

describe.skipIf(!HAVE_DANTED)(`SOCKS5 UDP ASSOCIATE through dante ${HAVE_DANTED ? '' : '(SKIPPED: danted not installed; apt-get install dante-server)'}`, () => {
  let dir = '';
  let dante: LoopbackDaemon | undefined;
  let coneDante: LoopbackDaemon | undefined;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let url = '';
  let coneUrl = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tunroute-danted-udp-'));
    // connectdst yes (dante's default) relays ICMP errors; no gives full-cone replies.
    dante = await startLoopbackDante(dir, { connectdst: true });
    url = dante.url;
    coneDante = await startLoopbackDante(dir, { connectdst: false });
    coneUrl = coneDante.url;
    echo = await startEcho();
  });

  afterAll(async () => {
    echo?.close();
    await dante?.stop();
    await coneDante?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  const outbound = (): Socks5UdpOutbound => new Socks5UdpOutbound({ name: 'proxy', proxy: parseSocks5Url(url) });

  it('associates, relays datagrams both ways, and counts them', async () => {
    const ob = outbound();
    const a = await ob.openUdp();
    expect(a.relay.ip).toBe(LOOPBACK);
    expect(a.relay.port).toBeGreaterThan(0);
    const c = collect(a);
    for (let i = 0; i < 20; i++) expect(a.send({ ip: LOOPBACK, port: echo.port }, Buffer.from(`ping ${i}`))).toBe(true);
    await c.until(() => c.got.length === 20, '20 echoes');
    expect(c.got.map((g) => g.payload.toString()).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `echo:ping ${i}`).sort());
    expect(c.got[0].from).toEqual({ ip: LOOPBACK, port: echo.port });
    expect(ob.stats.udp).toMatchObject({ attempts: 1, established: 1, datagramsUp: 20, datagramsDown: 20 });
    expect(ob.udpAssociations).toBe(1);
    a.close();
    expect(ob.udpAssociations).toBe(0);
    await ob.close();
  });

  it('delivers replies from another remote port (full cone; dante with udp.connectdst: no)', async () => {
    const ob = new Socks5UdpOutbound({ name: 'proxy', proxy: parseSocks5Url(coneUrl) });
    const a = await ob.openUdp();
    const c = collect(a);
    a.send({ ip: LOOPBACK, port: echo.port }, Buffer.from('reflect:x'));
    await c.until(() => c.got.length === 1, 'the reflected reply');
    expect(c.got[0].from).toEqual({ ip: LOOPBACK, port: echo.reflectPort });
    expect(c.got[0].payload.toString()).toBe('reflected:reflect:x');
    await ob.close();
  });

  it('carries a 20 KB and a 60 KB datagram intact', async () => {
    const ob = outbound();
    const a = await ob.openUdp();
    const c = collect(a);
    for (const n of [20_000, 60_000]) {
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31) & 0xff;
      a.send({ ip: LOOPBACK, port: echo.port }, data);
      await c.until(() => c.got.length === 1, `${n}-byte echo`);
      const got = c.got.pop()!;
      expect(got.payload.length).toBe(n + 5);
      expect(got.payload.subarray(5).equals(data)).toBe(true);
    }
    await ob.close();
  });

  it('reports a destination that refused (dante relays the ICMP) without ending the association', async () => {
    const ob = outbound();
    const a = await ob.openUdp();
    const c = collect(a);
    a.send({ ip: LOOPBACK, port: await freeUdpPort() }, Buffer.from('anyone?'));
    await c.until(() => c.unreachable.length > 0, 'unreachable');
    expect(c.unreachable[0]).toBe('refused');
    expect(c.closed).toHaveLength(0);
    a.send({ ip: LOOPBACK, port: echo.port }, Buffer.from('still here'));
    await c.until(() => c.got.length === 1, 'an echo after the error');
    await ob.close();
  });

  it('runs many associations at once, each its own', async () => {
    const ob = outbound();
    const all = await Promise.all(Array.from({ length: 20 }, () => ob.openUdp()));
    const cs = all.map((a, i) => {
      const c = collect(a);
      a.send({ ip: LOOPBACK, port: echo.port }, Buffer.from(`a${i}`));
      return c;
    });
    for (const [i, c] of cs.entries()) {
      await c.until(() => c.got.length === 1, `echo ${i}`);
      expect(c.got[0].payload.toString()).toBe(`echo:a${i}`);
    }
    expect(new Set(all.map((a) => a.relay.port)).size).toBe(20);
    await ob.close();
    expect(ob.udpAssociations).toBe(0);
  });

  it('refuses to open after close()', async () => {
    const ob = outbound();
    await ob.close();
    await expectReason(ob.openUdp(), 'aborted');
  });
});

// ---------------------------------------------------------------- microsocks

describe.skipIf(!HAVE_MICROSOCKS)(`SOCKS5 UDP ASSOCIATE against microsocks ${HAVE_MICROSOCKS ? '' : '(SKIPPED: microsocks not installed)'}`, () => {
  let ms: LoopbackDaemon | undefined;
  let port = 0;
  beforeAll(async () => {
    ms = await startLoopbackMicrosocks();
    port = ms.port;
  });
  afterAll(() => ms?.stop());

  it("is refused as 'protocol' (command not supported): the caller falls back to TCP", async () => {
    const ob = new Socks5UdpOutbound({ name: 'ms', proxy: parseSocks5Url(`socks5://${LOOPBACK}:${port}`) });
    const err = await expectReason(ob.openUdp(), 'protocol');
    expect(err.message).toContain('0x07');
    expect(ob.stats.udp?.failures.protocol).toBe(1);
    await ob.close();
  });
});

// ---------------------------------------------------------------- a scripted proxy

/**
 * Grants UDP ASSOCIATE with relay address 0.0.0.0 (the client must use the proxy's address),
 * echoes frames on its relay socket, and closes control connections on request.
 */
async function startScriptedProxy(): Promise<{ port: number; controls: Socket[]; close(): Promise<void> }> {
  const relay = await bindUdp();
  // Frames come back as they are, except a few payloads that ask for a malformed answer.
  relay.on('message', (m, r) => {
    const ask = m.subarray(10).toString();
    let back = m;
    if (ask === 'frag') back = Buffer.concat([Buffer.from([0, 0, 1]), m.subarray(3)]);
    else if (ask === 'domain') back = Buffer.concat([Buffer.from([0, 0, 0, 3, 3]), Buffer.from('abc'), Buffer.from([0, 53]), Buffer.from('x')]);
    else if (ask === 'short') back = Buffer.from([0, 0, 0]);
    else if (ask === 'rsv') back = Buffer.concat([Buffer.from([1]), m.subarray(1)]);
    relay.send(back, r.port, r.address);
  });
  const controls: Socket[] = [];
  const server = createServer((s) => {
    controls.push(s);
    s.on('error', () => {});
    let stage = 0;
    s.on('data', (chunk: Buffer) => {
      let d = chunk;
      if (stage === 0) {
        s.write(Buffer.from([5, 0]));
        stage = 1;
        // A pipelined client sends the request in the same segment as the greeting.
        d = d.subarray(2 + d[1]);
        if (d.length === 0) return;
      }
      if (d[1] !== 3) {
        s.end(Buffer.from([5, 7, 0, 1, 0, 0, 0, 0, 0, 0]));
        return;
      }
      const p = relay.address().port;
      s.write(Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, p >> 8, p & 0xff]));
    });
  });
  const port = await listen(server);
  return {
    port,
    controls,
    close: async () => {
      for (const c of controls) c.destroy();
      relay.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('SOCKS5 UDP ASSOCIATE against a scripted proxy', () => {
  it('uses the proxy address when the relay address is 0.0.0.0', async () => {
    const proxy = await startScriptedProxy();
    const a = await openSocks5UdpAssociation({ name: 'p', proxy: parseSocks5Url(`socks5://${LOOPBACK}:${proxy.port}`) });
    expect(a.relay.ip).toBe(LOOPBACK);
    const c = collect(a);
    a.send({ ip: '192.0.2.1', port: 53 }, Buffer.from('q'));
    await c.until(() => c.got.length === 1, 'the frame back');
    expect(c.got[0]).toEqual({ payload: Buffer.from('q'), from: { ip: '192.0.2.1', port: 53 } });
    a.close();
    await proxy.close();
  });

  it('ends the association when the proxy closes the control connection', async () => {
    const proxy = await startScriptedProxy();
    const a = await openSocks5UdpAssociation({ name: 'p', proxy: parseSocks5Url(`socks5://${LOOPBACK}:${proxy.port}`) });
    const c = collect(a);
    proxy.controls[0].destroy();
    await c.until(() => c.closed.length === 1, 'closed');
    expect(c.closed[0].reason).toBe('proxy_down');
    expect(a.isClosed).toBe(true);
    expect(a.send({ ip: '192.0.2.1', port: 53 }, Buffer.from('late'))).toBe(false);
    await proxy.close();
  });

  it("reports a proxy that is not listening as 'proxy_down'", async () => {
    await expectReason(openSocks5UdpAssociation({ name: 'p', proxy: parseSocks5Url(`socks5://${LOOPBACK}:${await freeTcpPort()}`) }), 'proxy_down');
  });

  it("reports a proxy that never answers as 'timeout', and an abort as 'aborted'", async () => {
    // Reads (so that it sees our FIN and closes) but never answers.
    const silent = createServer((s) => s.on('error', () => {}).resume());
    const port = await listen(silent);
    const proxy = parseSocks5Url(`socks5://${LOOPBACK}:${port}`);
    await expectReason(openSocks5UdpAssociation({ name: 'p', proxy, timeoutMs: 200 }), 'timeout');
    const ctl = new AbortController();
    const p = openSocks5UdpAssociation({ name: 'p', proxy }, { signal: ctl.signal });
    setTimeout(() => ctl.abort(), 50);
    await expectReason(p, 'aborted');
    const ob = new Socks5UdpOutbound({ name: 'p', proxy });
    const pending = ob.openUdp();
    await new Promise((r) => setTimeout(r, 50));
    await ob.close();
    await expectReason(pending, 'aborted');
    await new Promise<void>((r) => silent.close(() => r()));
  });

  it('drops frames it cannot deliver (SOCKS fragments, non-IPv4, garbage) and counts them', async () => {
    const proxy = await startScriptedProxy();
    const ob = new Socks5UdpOutbound({ name: 'p', proxy: parseSocks5Url(`socks5://${LOOPBACK}:${proxy.port}`) });
    const a = await ob.openUdp();
    const c = collect(a);
    for (const ask of ['frag', 'domain', 'short', 'rsv']) a.send({ ip: '192.0.2.1', port: 53 }, Buffer.from(ask));
    a.send({ ip: '192.0.2.1', port: 53 }, Buffer.from('ok'));
    await c.until(() => c.got.length === 1, 'the good frame');
    expect(c.got[0].payload.toString()).toBe('ok');
    expect(c.got).toHaveLength(1);
    expect(ob.stats.udp?.dropped).toBe(4);
    await ob.close();
    await proxy.close();
  });
});
