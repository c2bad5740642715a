/**
 * HttpOutbound against a scripted HTTP CONNECT proxy on 127.0.0.1 (every refusal, odd timing,
 * credentials) and, when Debian's tinyproxy is installed, against tinyproxy itself on loopback.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpOutbound } from '../../src/outbound/http.js';
import { emitConnectResponse, parseConnectRequest, type HttpConnectRequest } from '../../src/outbound/http-wire.js';
import { UpstreamError, type ConnectCancel, type Outbound, type UpstreamReason } from '../../src/outbound/outbound.js';
import { parseProxyUrl, type HttpProxyUrl } from '../../src/outbound/proxy-url.js';
import { freeTcpPort, hasBinary, LOOPBACK, startLoopbackDaemon, type LoopbackDaemon } from '../helpers/loopback-daemons.js';
import { tinyproxyConfigText } from '../../tools/lab/servers.js';

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve((server.address() as AddressInfo).port));
  });
}

interface Closer {
  port: number;
  close(): Promise<void>;
}

function tracked(server: Server, sockets: Set<Socket>, port: number): Closer {
  return {
    port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Echo server; with `banner`, it speaks first (like SSH). */
async function startTarget(banner?: string): Promise<Closer> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (banner !== undefined) s.write(banner);
    s.pipe(s);
  });
  return tracked(server, sockets, await listen(server));
}

interface Script {
  /** The status to answer; default 200. */
  status?: number;
  reason?: string;
  /** Raw bytes instead of a response. */
  raw?: Buffer;
  /** Never answer. */
  silent?: boolean;
  /** Send the response a byte at a time. */
  trickle?: boolean;
  /** Basic credentials required (the Proxy-Authorization value); 407 otherwise. */
  requireAuth?: string;
}

/** A CONNECT proxy that follows `script` and, after a 2xx, splices to 127.0.0.1:port. */
async function startProxy(script: Script): Promise<Closer & { requests: HttpConnectRequest[] }> {
  const sockets = new Set<Socket>();
  const requests: HttpConnectRequest[] = [];
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const req = parseConnectRequest(buf);
      if (req === undefined) return;
      s.removeListener('data', onData);
      requests.push(req);
      if (script.silent === true) return;
      if (script.raw !== undefined) {
        if (script.raw.length === 0) s.end();
        else s.write(script.raw);
        return;
      }
      let status = script.status ?? 200;
      if (script.requireAuth !== undefined && req.authorization !== script.requireAuth) status = 407;
      const resp = emitConnectResponse(status, script.reason ?? (status === 407 ? 'Proxy Authentication Required' : 'Connection established'));
      if (status !== 200) {
        s.end(resp);
        return;
      }
      const up = connect({ host: LOOPBACK, port: req.port }, () => {
        if (script.trickle === true) for (const byte of resp) s.write(Buffer.from([byte]));
        else s.write(resp);
        const rest = buf.subarray(req.length);
        if (rest.length > 0) up.write(rest);
        s.pipe(up).pipe(s);
      });
      up.on('error', () => s.destroy());
      sockets.add(up);
    };
    s.on('data', onData);
  });
  return { ...tracked(server, sockets, await listen(server)), requests };
}

function http(url: string, timeoutMs?: number): HttpOutbound {
  return new HttpOutbound({ name: 'office', proxy: parseProxyUrl(url) as HttpProxyUrl, ...(timeoutMs === undefined ? {} : { connectTimeoutMs: timeoutMs }) });
}

function readBytes(sock: Socket, n: number, timeoutMs = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes within ${timeoutMs} ms`)), timeoutMs);
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      }
    });
    sock.resume();
  });
}

async function expectReason(p: Promise<unknown>, reason: UpstreamReason): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  const ue = err as UpstreamError;
  expect(ue.reason, ue.message).toBe(reason);
  return ue;
}

describe('HttpOutbound against a scripted proxy', () => {
  let target: Closer;
  beforeAll(async () => {
    target = await startTarget();
  });
  afterAll(() => target.close());

  it('CONNECTs by address and relays both ways; the socket comes back paused', async () => {
    const p = await startProxy({});
    const ob = http(`http://${LOOPBACK}:${p.port}`);
    try {
      const sock = await ob.connectTcp({ ip: LOOPBACK, port: target.port });
      expect(sock.isPaused()).toBe(true);
      const back = readBytes(sock, 5);
      sock.write('hello');
      expect((await back).toString()).toBe('hello');
      sock.destroy();
      expect(p.requests).toEqual([expect.objectContaining({ host: LOOPBACK, port: target.port })]);
      expect(p.requests[0].authorization).toBeUndefined();
      expect(ob.stats.tcpEstablished).toBe(1);
      expect('openUdp' in (ob as Outbound)).toBe(false);
    } finally {
      await p.close();
    }
  });

  it('a fake-IP flow goes as CONNECT name:port', async () => {
    const p = await startProxy({ status: 403, reason: 'Forbidden' });
    const ob = http(`http://${LOOPBACK}:${p.port}`);
    try {
      const e = await expectReason(ob.connectTcp({ ip: '198.18.0.5', port: 443, name: 'web.lab' }), 'not_allowed');
      expect(p.requests[0]).toMatchObject({ host: 'web.lab', port: 443 });
      expect(e.message).toContain('web.lab:443 via HTTP proxy');
      expect(e.message).toContain('403 Forbidden');
    } finally {
      await p.close();
    }
  });

  it('a server banner that arrives in the same segment as the 200 is kept', async () => {
    const bannered = await startTarget('SSH-2.0-lab\r\n');
    const p = await startProxy({});
    const ob = http(`http://${LOOPBACK}:${p.port}`);
    try {
      const sock = await ob.connectTcp({ ip: LOOPBACK, port: bannered.port });
      expect((await readBytes(sock, 13)).toString()).toBe('SSH-2.0-lab\r\n');
      sock.destroy();
    } finally {
      await p.close();
      await bannered.close();
    }
  });

  it('a response that arrives a byte at a time', async () => {
    const p = await startProxy({ trickle: true });
    const ob = http(`http://${LOOPBACK}:${p.port}`);
    try {
      const sock = await ob.connectTcp({ ip: LOOPBACK, port: target.port });
      const back = readBytes(sock, 2);
      sock.write('ok');
      expect((await back).toString()).toBe('ok');
      sock.destroy();
    } finally {
      await p.close();
    }
  });

  it('Basic credentials are sent, accepted, and the password never shows in a message', async () => {
    const want = `Basic ${Buffer.from('alice:s3cr3t pw').toString('base64')}`;
    const p = await startProxy({ requireAuth: want });
    try {
      const good = http(`http://alice:s3cr3t%20pw@${LOOPBACK}:${p.port}`);
      const sock = await good.connectTcp({ ip: LOOPBACK, port: target.port });
      sock.destroy();
      expect(p.requests[0].authorization).toBe(want);
      expect(good.proxyUrl).toBe(`http://alice:***@${LOOPBACK}:${p.port}`);

      const wrong = http(`http://alice:wrongpass@${LOOPBACK}:${p.port}`);
      const e1 = await expectReason(wrong.connectTcp({ ip: LOOPBACK, port: target.port }), 'auth_failed');
      expect(e1.message).toContain('407');
      expect(e1.message).toContain('refused the user name and password');
      expect(e1.message).not.toContain('wrongpass');

      const none = http(`http://${LOOPBACK}:${p.port}`);
      const e2 = await expectReason(none.connectTcp({ ip: LOOPBACK, port: target.port }), 'auth_failed');
      expect(e2.message).toContain(`requires a user name and password; give them as http://USER:PASS@${LOOPBACK}:${p.port}`);
    } finally {
      await p.close();
    }
  });

  it.each([
    [401, 'auth_failed'],
    [502, 'unreachable'],
    [503, 'unreachable'],
    [504, 'timeout'],
    [405, 'not_allowed'],
    [500, 'protocol'],
  ] as const)('status %i → %s', async (status, reason) => {
    const p = await startProxy({ status, reason: 'Nope' });
    try {
      await expectReason(http(`http://${LOOPBACK}:${p.port}`).connectTcp({ ip: LOOPBACK, port: target.port }), reason);
    } finally {
      await p.close();
    }
  });

  it('a reply that is not HTTP, and one whose header never ends, are protocol errors', async () => {
    const socksy = await startProxy({ raw: Buffer.from([0x05, 0x00]) });
    const endless = await startProxy({ raw: Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nX: '), Buffer.alloc(9000, 0x61)]) });
    try {
      const e = await expectReason(http(`http://${LOOPBACK}:${socksy.port}`).connectTcp({ ip: LOOPBACK, port: 1 }), 'protocol');
      expect(e.message).toContain('does not speak HTTP');
      const e2 = await expectReason(http(`http://${LOOPBACK}:${endless.port}`).connectTcp({ ip: LOOPBACK, port: 1 }), 'protocol');
      expect(e2.message).toContain('within 8192 bytes');
    } finally {
      await socksy.close();
      await endless.close();
    }
  });

  it('proxy down, a silent proxy (deadline), closed before answering', async () => {
    const dead = await freeTcpPort();
    const e = await expectReason(http(`http://${LOOPBACK}:${dead}`).connectTcp({ ip: LOOPBACK, port: 1 }), 'proxy_down');
    expect(e.message).toContain('ECONNREFUSED');
    const silent = await startProxy({ silent: true });
    const hangup = await startProxy({ raw: Buffer.alloc(0) });
    try {
      const t = await expectReason(http(`http://${LOOPBACK}:${silent.port}`, 200).connectTcp({ ip: LOOPBACK, port: 1 }), 'timeout');
      expect(t.message).toContain('did not answer the CONNECT within 200 ms');
      const h = await expectReason(http(`http://${LOOPBACK}:${hangup.port}`).connectTcp({ ip: LOOPBACK, port: 1 }), 'proxy_down');
      expect(h.message).toContain('closed the connection before it answered');
    } finally {
      await silent.close();
      await hangup.close();
    }
  });

  it('abort (signal and cancel slot) and close() end attempts in flight', async () => {
    const silent = await startProxy({ silent: true });
    try {
      const ob = http(`http://${LOOPBACK}:${silent.port}`);
      const ac = new AbortController();
      const p1 = ob.connectTcp({ ip: LOOPBACK, port: 1 }, { signal: ac.signal });
      const slot: ConnectCancel = { pending: undefined };
      const p2 = ob.connectTcp({ ip: LOOPBACK, port: 2 }, { cancel: slot });
      const p3 = ob.connectTcp({ ip: LOOPBACK, port: 3 });
      await new Promise((r) => setTimeout(r, 50));
      ac.abort();
      slot.pending?.cancel();
      await expectReason(p1, 'aborted');
      await expectReason(p2, 'aborted');
      expect(slot.pending).toBeUndefined();
      await ob.close();
      await expectReason(p3, 'aborted');
      await expectReason(ob.connectTcp({ ip: LOOPBACK, port: 4 }), 'aborted');
      expect(ob.stats.tcpFailures.aborted).toBe(4);
    } finally {
      await silent.close();
    }
  });
});

const tinyproxyOk = hasBinary('tinyproxy');

describe.skipIf(!tinyproxyOk)(`HttpOutbound against tinyproxy on loopback${tinyproxyOk ? '' : ' (skipped: apt-get install -y tinyproxy)'}`, () => {
  let dir: string;
  let proxy: LoopbackDaemon;
  let target: Closer;

  beforeAll(async () => {
    target = await startTarget();
    const port = await freeTcpPort();
    dir = mkdtempSync(join(tmpdir(), 'tunroute-tinyproxy-'));
    const conf = join(dir, 'tinyproxy.conf');
    writeFileSync(conf, tinyproxyConfigText({ listen: LOOPBACK, port, logFile: join(dir, 'log'), auth: { user: 'lab', pass: 'labpass' }, dropPrivileges: false }));
    proxy = await startLoopbackDaemon('tinyproxy', ['-d', '-c', conf], port);
  });
  afterAll(async () => {
    await proxy?.stop();
    await target?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('CONNECT with the right credentials relays; a wrong password is auth_failed (407)', async () => {
    const ob = http(`http://lab:labpass@${LOOPBACK}:${proxy.port}`);
    const sock = await ob.connectTcp({ ip: LOOPBACK, port: target.port });
    const back = readBytes(sock, 4);
    sock.write('ping');
    expect((await back).toString()).toBe('ping');
    sock.destroy();
    const bad = http(`http://lab:nope@${LOOPBACK}:${proxy.port}`);
    const e = await expectReason(bad.connectTcp({ ip: LOOPBACK, port: target.port }), 'auth_failed');
    expect(e.message).not.toContain('nope');
    const none = http(`http://${LOOPBACK}:${proxy.port}`);
    await expectReason(none.connectTcp({ ip: LOOPBACK, port: target.port }), 'auth_failed');
  });

  it('a closed destination port is refused by the proxy with an error status', async () => {
    const ob = http(`http://lab:labpass@${LOOPBACK}:${proxy.port}`);
    const e = await ob.connectTcp({ ip: LOOPBACK, port: await freeTcpPort() }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(UpstreamError);
    expect((e as UpstreamError).message).toMatch(/the proxy answered 5\d\d/);
  });
});
