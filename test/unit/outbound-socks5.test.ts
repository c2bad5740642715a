/**
 * Socks5Outbound against scripted SOCKS5 servers (every reply code, odd timing) and against the
 * real servers from Debian (dante-server's `danted`, `microsocks`), all on 127.0.0.1.
 *
 * The real-server tests skip, with the reason in their title, when the binaries are missing;
 * `.ci/run` must `apt-get install -y dante-server microsocks` so that they run in CI.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockOutbound } from '../../src/outbound/block.js';
import { UpstreamError, type ConnectCancel, type Outbound, type UpstreamReason } from '../../src/outbound/outbound.js';
import { Socks5Outbound } from '../../src/outbound/socks5.js';
import { parseSocks5Url } from '../../src/outbound/socks5-url.js';
import { freeTcpPort as closedPort, hasBinary, LOOPBACK, startLoopbackDante, startLoopbackMicrosocks, stopChild, type LoopbackDaemon } from '../helpers/loopback-daemons.js';

// ---------------------------------------------------------------- helpers

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}


/** Echo server; with `banner`, it speaks first (like SSH or SMTP). Tracks sockets to close them. */
async function startTarget(banner?: Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (banner !== undefined) s.write(banner);
    s.pipe(s);
  });
  const port = await listen(server);
  return {
    port,
    close: () => {
      for (const s of sockets) s.destroy();
      return closeServer(server);
    },
  };
}

/** Resume the socket, send `msg`, and collect `n` bytes back. */
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
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
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
  expect(ue.code).toBe('TR_UPSTREAM');
  expect(ue.reason, ue.message).toBe(reason);
  return ue;
}

/** Connect `n` times in sequence through `ob`, check one echo each, return the sorted setup times (ms). */
async function measureSetup(ob: Outbound, port: number, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const sock = await ob.connectTcp({ ip: LOOPBACK, port });
    times.push(performance.now() - t0);
    const back = readBytes(sock, 4);
    sock.write('ping');
    expect((await back).toString()).toBe('ping');
    sock.destroy();
  }
  return times.sort((a, b) => a - b);
}

function summary(sorted: number[]): string {
  const at = (q: number): string => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(2);
  return `median ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${sorted[sorted.length - 1].toFixed(2)} ms (n=${sorted.length})`;
}

function socks(url: string, timeoutMs?: number): Socks5Outbound {
  return new Socks5Outbound({ name: 'proxy', proxy: parseSocks5Url(url), ...(timeoutMs === undefined ? {} : { connectTimeoutMs: timeoutMs }) });
}

// ---------------------------------------------------------------- a scripted SOCKS5 server

interface Script {
  /** Bytes to answer the greeting with; default 05 00 (no auth). Empty: close instead. */
  greetingReply?: Buffer;
  /** Never answer the greeting (a black hole that accepted the TCP connection). */
  silent?: boolean;
  /** The CONNECT reply code; default 0 (succeeded). */
  rep?: number;
  /** Bytes sent in the same write as the CONNECT reply. */
  trailer?: Buffer;
  /** Half-close right after the reply (and trailer). */
  endAfterReply?: boolean;
}

/** A minimal SOCKS5 server that follows `script`; after a successful reply it echoes. */
async function startScripted(script: Script): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let stage = 0;
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 2 && buf.length >= 2 + buf[1]) {
        buf = buf.subarray(2 + buf[1]);
        stage = 1;
        if (script.silent === true) return;
        const reply = script.greetingReply ?? Buffer.from([5, 0]);
        if (reply.length === 0) {
          s.end();
          return;
        }
        s.write(reply);
      }
      if (stage === 1 && buf.length >= 10) {
        stage = 2;
        s.removeListener('data', onData);
        const reply = Buffer.from([5, script.rep ?? 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34]);
        const out = script.trailer === undefined ? reply : Buffer.concat([reply, script.trailer]);
        // end(out): reply, trailer and FIN leave together, so the client reads all three at once.
        if (script.endAfterReply === true) s.end(out);
        else if ((script.rep ?? 0) === 0) {
          s.write(out);
          s.pipe(s);
        } else s.end(out);
      }
    };
    s.on('data', onData);
  });
  const port = await listen(server);
  return {
    port,
    close: () => {
      for (const s of sockets) s.destroy();
      return closeServer(server);
    },
  };
}

const HAVE_DANTED = hasBinary('danted');
const HAVE_MICROSOCKS = hasBinary('microsocks');
const HAVE_PYTHON = hasBinary('python3');
const NEVER_ACCEPT_PY = [
  'import socket, sys',
  's = socket.socket()',
  "s.bind(('127.0.0.1', 0))",
  's.listen(0)',
  'print(s.getsockname()[1], flush=True)',
  'sys.stdin.read()',
].join('\n');

// ---------------------------------------------------------------- tests that need no SOCKS binaries

describe('Socks5Outbound: a destination by name (fake-IP flows)', () => {
  it('asks the proxy for the name, with the domain address type (byte trace)', async () => {
    const received: Buffer[] = [];
    const sockets = new Set<Socket>();
    const server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
      let buf = Buffer.alloc(0);
      let replied = 0;
      s.on('data', (d: Buffer) => {
        received.push(d);
        buf = Buffer.concat([buf, d]);
        if (replied === 0 && buf.length >= 3) {
          replied = 1;
          s.write(Buffer.from([5, 0]));
        }
        // greeting (3) + request: 05 01 00 03 len name port(2)
        if (replied === 1 && buf.length >= 3 + 5 && buf.length >= 3 + 5 + buf[7] + 2) {
          replied = 2;
          s.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 80]));
        }
      });
    });
    const port = await listen(server);
    const ob = socks(`socks5://${LOOPBACK}:${port}`);
    try {
      const sock = await ob.connectTcp({ ip: '198.18.0.7', name: 'www.site.test', port: 443 });
      sock.destroy();
      const name = Buffer.from('www.site.test', 'ascii');
      const expected = Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([0x01, 0xbb])]);
      expect(Buffer.concat(received).toString('hex')).toBe(expected.toString('hex'));
      // The fake address never reaches the proxy.
      expect(Buffer.concat(received).includes(Buffer.from([198, 18, 0, 7]))).toBe(false);
    } finally {
      for (const s of sockets) s.destroy();
      await closeServer(server);
    }
  });

  it('names the name, not the fake address, in its errors', async () => {
    const server = await startScripted({ rep: 0x04 });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      // The scripted server reads a 10-byte request: pad the name to that size (4 + 1 + 3 + 2).
      const err = await expectReason(ob.connectTcp({ ip: '198.18.0.7', name: 'a.b', port: 443 }), 'unreachable');
      expect(err.message).toContain('a.b:443');
      expect(err.message).not.toContain('198.18.0.7');
    } finally {
      await server.close();
    }
  });
});

describe('Socks5Outbound against a scripted SOCKS5 server', () => {
  const expected: Array<[number, UpstreamReason]> = [
    [0x01, 'unreachable'],
    [0x02, 'not_allowed'],
    [0x03, 'unreachable'],
    [0x04, 'unreachable'],
    [0x05, 'refused'],
    [0x06, 'timeout'],
    [0x07, 'protocol'],
    [0x08, 'protocol'],
    [0x09, 'protocol'],
  ];
  it.each(expected)('maps CONNECT reply 0x%i to reason %s and counts it', async (rep, reason) => {
    const server = await startScripted({ rep });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const err = await expectReason(ob.connectTcp({ ip: '10.1.2.3', port: 443 }), reason);
      expect(err.message).toContain('10.1.2.3:443');
      if (rep <= 8) expect(err.message).toContain(`0x0${rep}`);
      expect(err.outbound).toBe('proxy');
      expect(ob.stats.tcpAttempts).toBe(1);
      expect(ob.stats.tcpFailures[reason]).toBe(1);
      expect(ob.stats.tcpEstablished).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('keeps bytes that arrive in the same segment as the CONNECT reply (a server banner)', async () => {
    const banner = Buffer.from('SSH-2.0-OpenSSH_9.2\r\n');
    const server = await startScripted({ trailer: banner });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const sock = await ob.connectTcp({ ip: LOOPBACK, port: 22 });
      expect(sock.isPaused()).toBe(true);
      // Let a few event-loop turns pass before anyone listens: nothing may be lost meanwhile.
      await new Promise((r) => setTimeout(r, 20));
      const got = readBytes(sock, banner.length + 4);
      sock.write('ping');
      expect((await got).toString()).toBe(`${banner.toString()}ping`);
      sock.destroy();
      expect(ob.stats.tcpEstablished).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('keeps a banner followed at once by the end of the stream', async () => {
    const server = await startScripted({ trailer: Buffer.from('bye\n'), endAfterReply: true });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const sock = await ob.connectTcp({ ip: LOOPBACK, port: 13 });
      await new Promise((r) => setTimeout(r, 20));
      const chunks: Buffer[] = [];
      sock.on('data', (c: Buffer) => chunks.push(c));
      const ended = new Promise((r) => sock.once('end', r));
      sock.resume();
      await ended;
      expect(Buffer.concat(chunks).toString()).toBe('bye\n');
      sock.destroy();
    } finally {
      await server.close();
    }
  });

  it('reports a proxy that closes the connection during the handshake as proxy_down', async () => {
    const server = await startScripted({ greetingReply: Buffer.alloc(0) });
    try {
      await expectReason(socks(`socks5://${LOOPBACK}:${server.port}`).connectTcp({ ip: LOOPBACK, port: 80 }), 'proxy_down');
    } finally {
      await server.close();
    }
  });

  it('reports a reply that is not SOCKS5 as protocol', async () => {
    const server = await startScripted({ greetingReply: Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n') });
    try {
      await expectReason(socks(`socks5://${LOOPBACK}:${server.port}`).connectTcp({ ip: LOOPBACK, port: 80 }), 'protocol');
    } finally {
      await server.close();
    }
  });

  it('reports a proxy that demands authentication we lack as auth_failed', async () => {
    const server = await startScripted({ greetingReply: Buffer.from([5, 0xff]) });
    try {
      await expectReason(socks(`socks5://${LOOPBACK}:${server.port}`).connectTcp({ ip: LOOPBACK, port: 80 }), 'auth_failed');
    } finally {
      await server.close();
    }
  });

  it('times out against a black hole that never answers the greeting', async () => {
    const server = await startScripted({ silent: true });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`, 5000);
    try {
      const t0 = performance.now();
      const err = await expectReason(ob.connectTcp({ ip: LOOPBACK, port: 80 }, { timeoutMs: 300 }), 'timeout');
      const took = performance.now() - t0;
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(2000);
      expect(err.message).toContain('handshake');
      expect(ob.stats.tcpFailures.timeout).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('uses the configured default timeout when the call gives none', async () => {
    const server = await startScripted({ silent: true });
    try {
      const t0 = performance.now();
      await expectReason(socks(`socks5://${LOOPBACK}:${server.port}`, 200).connectTcp({ ip: LOOPBACK, port: 80 }), 'timeout');
      expect(performance.now() - t0).toBeLessThan(2000);
    } finally {
      await server.close();
    }
  });

  it('aborts an attempt in flight when the signal fires, and one already aborted at once', async () => {
    const server = await startScripted({ silent: true });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const ac = new AbortController();
      const p = ob.connectTcp({ ip: LOOPBACK, port: 80 }, { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      const t0 = performance.now();
      await expectReason(p, 'aborted');
      expect(performance.now() - t0).toBeLessThan(1000);
      await expectReason(ob.connectTcp({ ip: LOOPBACK, port: 80 }, { signal: ac.signal }), 'aborted');
      expect(ob.stats.tcpFailures.aborted).toBe(2);
    } finally {
      await server.close();
    }
  });

  it('aborts an attempt in flight when its ConnectCancel is cancelled, and clears the slot', async () => {
    const server = await startScripted({ silent: true });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const slot: ConnectCancel = { pending: undefined };
      const p = ob.connectTcp({ ip: LOOPBACK, port: 80 }, { cancel: slot });
      expect(slot.pending).toBeDefined();
      setTimeout(() => slot.pending?.cancel(), 50);
      await expectReason(p, 'aborted');
      expect(slot.pending).toBeUndefined();
      expect(ob.stats.tcpFailures.aborted).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('close() aborts attempts in flight and refuses new ones', async () => {
    const server = await startScripted({ silent: true });
    const ob = socks(`socks5://${LOOPBACK}:${server.port}`);
    try {
      const p = ob.connectTcp({ ip: LOOPBACK, port: 80 });
      await new Promise((r) => setTimeout(r, 30));
      await ob.close();
      await expectReason(p, 'aborted');
      await expectReason(ob.connectTcp({ ip: LOOPBACK, port: 80 }), 'aborted');
    } finally {
      await server.close();
    }
  });

  it('reports an unreachable proxy as proxy_down with the errno', async () => {
    const port = await closedPort();
    const err = await expectReason(socks(`socks5://${LOOPBACK}:${port}`).connectTcp({ ip: LOOPBACK, port: 80 }), 'proxy_down');
    expect(err.message).toContain('ECONNREFUSED');
  });

  it.skipIf(!HAVE_PYTHON)(
    `reports a proxy whose TCP handshake never completes as proxy_down at the deadline ${HAVE_PYTHON ? '' : '(SKIPPED: needs python3)'}`,
    async () => {
      // A listener that never accepts, with a full backlog: the kernel drops our SYNs.
      const py = spawn('python3', ['-c', NEVER_ACCEPT_PY], { stdio: ['pipe', 'pipe', 'ignore'] });
      const filler: Socket[] = [];
      try {
        const port = Number(await new Promise<string>((resolve) => py.stdout?.once('data', (d: Buffer) => resolve(d.toString()))));
        for (let i = 0; i < 2; i++) filler.push(connect(port, LOOPBACK).on('error', () => {}));
        await new Promise((r) => setTimeout(r, 50));
        const t0 = performance.now();
        const err = await expectReason(socks(`socks5://${LOOPBACK}:${port}`).connectTcp({ ip: LOOPBACK, port: 80 }, { timeoutMs: 300 }), 'proxy_down');
        expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
        expect(err.message).toContain('did not accept a TCP connection within 300 ms');
      } finally {
        for (const f of filler) f.destroy();
        await stopChild(py);
      }
    },
  );

  it('rejects a destination that is not IPv4 without touching the network', async () => {
    const ob = socks('socks5://127.0.0.1:1');
    await expectReason(ob.connectTcp({ ip: '::1', port: 80 }), 'protocol');
    await expectReason(ob.connectTcp({ ip: '1.2.3.4', port: 70000 }), 'protocol');
  });

  it('never puts the password into an error message', async () => {
    const port = await closedPort();
    const err = await expectReason(socks(`socks5://alice:s3cret@${LOOPBACK}:${port}`).connectTcp({ ip: LOOPBACK, port: 80 }), 'proxy_down');
    expect(err.message).not.toContain('s3cret');
  });
});

describe('BlockOutbound', () => {
  it('rejects every connect with not_allowed and counts it', async () => {
    const ob = new BlockOutbound('deny');
    expect(ob.kind).toBe('block');
    const err = await expectReason(ob.connectTcp({ ip: '10.0.0.1', port: 22 }), 'not_allowed');
    expect(err.message).toContain('10.0.0.1:22');
    expect(ob.stats.tcpFailures.not_allowed).toBe(1);
    await ob.close();
  });
});

// ---------------------------------------------------------------- real SOCKS5 servers

const SETUP_ROUNDS = 100;

describe.skipIf(!HAVE_DANTED)(`Socks5Outbound through dante ${HAVE_DANTED ? '' : '(SKIPPED: danted not installed; apt-get install dante-server)'}`, () => {
  let dir = '';
  let dante: LoopbackDaemon | undefined;
  let target: Awaited<ReturnType<typeof startTarget>>;
  let url = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tunroute-danted-'));
    dante = await startLoopbackDante(dir);
    target = await startTarget();
    url = dante.url;
  });

  afterAll(async () => {
    await target?.close();
    await dante?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('carries a flow by name: dante resolves it (a fake-IP flow; the client never resolves)', async () => {
    const ob = socks(url);
    const sock = await ob.connectTcp({ ip: '198.18.0.1', name: 'localhost', port: target.port });
    try {
      sock.write('by name');
      expect((await readBytes(sock, 7)).toString()).toBe('by name');
    } finally {
      sock.destroy();
    }
  });

  it('connects and echoes, with no handshake stall (per-connection setup latency)', async () => {
    const ob = socks(url);
    const times = await measureSetup(ob, target.port, SETUP_ROUNDS);
    console.log(`dante setup latency: ${summary(times)}`);
    // A Nagle/cork stall shows up as ~200 ms on every connection; loopback setup is ~1 ms.
    expect(times[times.length >> 1]).toBeLessThan(50);
    expect(ob.stats.tcpEstablished).toBe(SETUP_ROUNDS);
  });

  it('reports a refused destination as refused within 1 s', async () => {
    const t0 = performance.now();
    const err = await expectReason(socks(url).connectTcp({ ip: LOOPBACK, port: await closedPort() }), 'refused');
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(err.message).toContain('0x05');
  });
});

describe.skipIf(!HAVE_MICROSOCKS)(
  `Socks5Outbound through microsocks ${HAVE_MICROSOCKS ? '' : '(SKIPPED: microsocks not installed; apt-get install microsocks)'}`,
  () => {
    let open: LoopbackDaemon | undefined;
    let auth: LoopbackDaemon | undefined;
    let target: Awaited<ReturnType<typeof startTarget>>;

    beforeAll(async () => {
      open = await startLoopbackMicrosocks();
      auth = await startLoopbackMicrosocks({ user: 'user', pass: 'pa:ss@1' });
      target = await startTarget();
    });

    afterAll(async () => {
      await target?.close();
      await open?.stop();
      await auth?.stop();
    });

    it('connects and echoes, with no handshake stall (per-connection setup latency)', async () => {
      const times = await measureSetup(socks(`socks5://${LOOPBACK}:${open?.port}`), target.port, SETUP_ROUNDS);
      console.log(`microsocks setup latency: ${summary(times)}`);
      expect(times[times.length >> 1]).toBeLessThan(50);
    });

    it('reports a refused destination as refused within 1 s', async () => {
      const t0 = performance.now();
      await expectReason(socks(`socks5://${LOOPBACK}:${open?.port}`).connectTcp({ ip: LOOPBACK, port: await closedPort() }), 'refused');
      expect(performance.now() - t0).toBeLessThan(1000);
    });

    it('authenticates with the right user name and password (percent-decoded from the URL)', async () => {
      const times = await measureSetup(socks(`socks5://user:pa%3Ass%401@${LOOPBACK}:${auth?.port}`), target.port, SETUP_ROUNDS);
      console.log(`microsocks setup latency with username/password: ${summary(times)}`);
      expect(times[times.length >> 1]).toBeLessThan(50);
    });

    it('reports a wrong password as auth_failed', async () => {
      const err = await expectReason(
        socks(`socks5://user:wrong@${LOOPBACK}:${auth?.port}`).connectTcp({ ip: LOOPBACK, port: target.port }),
        'auth_failed',
      );
      expect(err.message).not.toContain('wrong');
    });

    it('reports missing credentials as auth_failed', async () => {
      await expectReason(socks(`socks5://${LOOPBACK}:${auth?.port}`).connectTcp({ ip: LOOPBACK, port: target.port }), 'auth_failed');
    });
  },
);
