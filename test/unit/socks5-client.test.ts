/**
 * Our SOCKS5 client: the wire messages (round trips, partial reads) and the handshake as byte
 * traces against a fake proxy on 127.0.0.1 that records what it received and answers scripted
 * bytes — pipelined and step by step, with and without username/password, every reply code,
 * and proxies that break pipelining (the fallback, and that it is remembered).
 */
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { UpstreamError, type UpstreamReason } from '../../src/outbound/outbound.js';
import { Socks5PipelineMemory, type Socks5PipelineMode } from '../../src/outbound/socks5-client.js';
import { Socks5Outbound } from '../../src/outbound/socks5.js';
import { parseSocks5Url } from '../../src/outbound/socks5-url.js';
import {
  Socks5WireError,
  emitAuthReply,
  emitGreeting,
  emitMethodReply,
  emitReply,
  emitRequest,
  emitUdpHeader,
  emitUserPassRequest,
  parseAuthReply,
  parseGreeting,
  parseMethodReply,
  parseReply,
  parseRequest,
  parseUdpHeader,
  parseUserPassRequest,
} from '../../src/outbound/socks5-wire.js';

const LOOPBACK = '127.0.0.1';

// ---------------------------------------------------------------- wire messages

/** Every proper prefix parses as "incomplete", the whole message round-trips, with a tail too. */
function roundTrip<T extends { length: number }>(bytes: Buffer, parse: (b: Uint8Array, off?: number) => T | undefined): T {
  for (let i = 0; i < bytes.length; i++) expect(parse(bytes.subarray(0, i)), `prefix of ${i} bytes`).toBeUndefined();
  const m = parse(bytes);
  expect(m).toBeDefined();
  expect((m as T).length).toBe(bytes.length);
  // Several messages in one chunk: the parser reads the one at the offset and reports its length.
  const two = Buffer.concat([Buffer.from([0xaa]), bytes, bytes]);
  expect(parse(two, 1)).toEqual(m);
  expect(parse(two, 1 + bytes.length)).toEqual(m);
  return m as T;
}

describe('SOCKS5 wire messages', () => {
  it('greeting and method reply', () => {
    const g = emitGreeting([0x00, 0x02]);
    expect([...g]).toEqual([5, 2, 0, 2]);
    expect(roundTrip(g, parseGreeting).methods).toEqual([0, 2]);
    expect([...emitGreeting([0x02])]).toEqual([5, 1, 2]);
    const m = emitMethodReply(0x02);
    expect([...m]).toEqual([5, 2]);
    expect(roundTrip(m, parseMethodReply).method).toBe(2);
    expect(() => parseMethodReply(Buffer.from('HTTP/1.1 400'))).toThrow(Socks5WireError);
  });

  it('RFC 1929 username/password request and reply', () => {
    const r = emitUserPassRequest('alice', 'pä:ss');
    expect([...r.subarray(0, 7)]).toEqual([1, 5, ...Buffer.from('alice')]);
    const p = roundTrip(r, parseUserPassRequest);
    expect(p).toMatchObject({ username: 'alice', password: 'pä:ss' });
    expect(roundTrip(emitAuthReply(0), parseAuthReply).status).toBe(0);
    expect(roundTrip(emitAuthReply(1), parseAuthReply).status).toBe(1);
    expect(() => emitUserPassRequest('x'.repeat(256), 'p')).toThrow(RangeError);
  });

  it('CONNECT and UDP ASSOCIATE requests for IPv4, domain and IPv6 destinations', () => {
    const v4 = emitRequest(1, { host: '10.1.2.3', port: 443 });
    expect([...v4]).toEqual([5, 1, 0, 1, 10, 1, 2, 3, 1, 187]);
    expect(roundTrip(v4, parseRequest)).toMatchObject({ cmd: 1, dst: { host: '10.1.2.3', port: 443 } });
    const udp = emitRequest(3, { host: '0.0.0.0', port: 0 });
    expect([...udp]).toEqual([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    const dom = emitRequest(1, { host: 'example.org', port: 80 });
    expect([...dom.subarray(0, 5)]).toEqual([5, 1, 0, 3, 11]);
    expect(roundTrip(dom, parseRequest).dst).toEqual({ host: 'example.org', port: 80 });
    const v6 = emitRequest(1, { host: '2001:db8::1', port: 22 });
    expect(v6.length).toBe(22);
    expect(roundTrip(v6, parseRequest).dst).toEqual({ host: '2001:db8:0:0:0:0:0:1', port: 22 });
  });

  it('replies with an IPv4, domain or IPv6 bound address, and rejects an unknown address type', () => {
    expect(roundTrip(emitReply(0, { host: '127.0.0.1', port: 0x1234 }), parseReply)).toMatchObject({ rep: 0, bound: { host: '127.0.0.1', port: 0x1234 } });
    expect(roundTrip(emitReply(5, { host: 'proxy.lab', port: 1080 }), parseReply)).toMatchObject({ rep: 5, bound: { host: 'proxy.lab', port: 1080 } });
    expect(roundTrip(emitReply(0, { host: '::ffff:10.0.0.1', port: 9 }), parseReply).bound).toEqual({ host: '0:0:0:0:0:ffff:a00:1', port: 9 });
    expect(() => parseReply(Buffer.from([5, 0, 0, 9, 0, 0]))).toThrow(Socks5WireError);
  });

  it('UDP relay headers', () => {
    const h = emitUdpHeader({ host: '192.0.2.1', port: 53 });
    expect([...h]).toEqual([0, 0, 0, 1, 192, 0, 2, 1, 0, 53]);
    expect(parseUdpHeader(Buffer.concat([h, Buffer.from('data')]))).toEqual({ frag: 0, addr: { host: '192.0.2.1', port: 53 }, length: 10 });
    expect(parseUdpHeader(h.subarray(0, 9))).toBeUndefined();
  });
});

// ---------------------------------------------------------------- a recording fake proxy

interface FakeOptions {
  /** What it does with bytes that follow the greeting in the same segment. */
  pipelined?: 'reads' | 'drops' | 'closes';
  /** Require these credentials (method 02); otherwise method 00 only. */
  auth?: { username: string; password: string };
  /** CONNECT reply code (default 0). */
  rep?: number;
  /** Send every reply byte by byte, 3 ms apart (replies split across TCP segments). */
  split?: boolean;
  /** Bytes that follow the CONNECT reply in the same write. */
  trailer?: Buffer;
}

interface Fake {
  port: number;
  /** Per connection, the chunks the proxy received, in order. */
  conns: Buffer[][];
  close(): Promise<void>;
}

async function startFake(o: FakeOptions): Promise<Fake> {
  const conns: Buffer[][] = [];
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    const chunks: Buffer[] = [];
    conns.push(chunks);
    let buf = Buffer.alloc(0);
    let stage: 'greeting' | 'auth' | 'request' | 'open' = 'greeting';
    let queue = Promise.resolve();
    const send = (b: Buffer): void => {
      if (o.split !== true) {
        s.write(b);
        return;
      }
      for (const byte of b) queue = queue.then(() => new Promise((r) => setTimeout(() => (s.destroyed ? r() : s.write(Buffer.from([byte]), () => r())), 3)));
    };
    s.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (stage === 'open') return;
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (stage === 'greeting') {
          const g = parseGreeting(buf);
          if (g === undefined) return;
          buf = buf.subarray(g.length);
          if (buf.length > 0 && o.pipelined === 'closes') {
            s.destroy();
            return;
          }
          if (o.pipelined === 'drops') buf = Buffer.alloc(0);
          const want = o.auth === undefined ? 0 : 2;
          if (!g.methods.includes(want)) {
            s.end(emitMethodReply(0xff));
            return;
          }
          send(emitMethodReply(want));
          stage = o.auth === undefined ? 'request' : 'auth';
        } else if (stage === 'auth') {
          const a = parseUserPassRequest(buf);
          if (a === undefined) return;
          buf = buf.subarray(a.length);
          const ok = a.username === o.auth?.username && a.password === o.auth?.password;
          if (!ok) {
            s.end(emitAuthReply(1));
            return;
          }
          send(emitAuthReply(0));
          stage = 'request';
        } else if (stage === 'request') {
          const r = parseRequest(buf);
          if (r === undefined) return;
          stage = 'open';
          const rep = o.rep ?? 0;
          const reply = emitReply(rep, { host: '127.0.0.1', port: 0x1234 });
          send(o.trailer === undefined ? reply : Buffer.concat([reply, o.trailer]));
          if (rep !== 0) queue = queue.then(() => void s.end());
          return;
        } else return;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, LOOPBACK, () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    conns,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function outbound(port: number, o: { auth?: string; pipeline?: Socks5PipelineMode; memory?: Socks5PipelineMemory; timeoutMs?: number } = {}): Socks5Outbound {
  return new Socks5Outbound({
    name: 'proxy',
    proxy: parseSocks5Url(`socks5://${o.auth === undefined ? '' : `${o.auth}@`}${LOOPBACK}:${port}`),
    pipeline: o.pipeline ?? 'learn',
    pipelineMemory: o.memory ?? new Socks5PipelineMemory(),
    ...(o.timeoutMs === undefined ? {} : { connectTimeoutMs: o.timeoutMs }),
  });
}

async function reasonOf(p: Promise<unknown>): Promise<UpstreamReason> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(UpstreamError);
  return (e as UpstreamError).reason;
}

const DST = { ip: '10.1.2.3', port: 443 };
const REQ = [5, 1, 0, 1, 10, 1, 2, 3, 1, 187];
const AUTH = [...emitUserPassRequest('alice', 's3cret')];

describe('SOCKS5 handshake byte traces', () => {
  it('pipelined, no auth: greeting (one method) and CONNECT in ONE segment', async () => {
    const fake = await startFake({ pipelined: 'reads' });
    const ob = outbound(fake.port, { pipeline: 'on' });
    try {
      (await ob.connectTcp(DST)).destroy();
      expect(fake.conns).toHaveLength(1);
      expect([...fake.conns[0][0]]).toEqual([5, 1, 0, ...REQ]);
    } finally {
      await fake.close();
    }
  });

  it('pipelined with username/password: greeting, RFC 1929 request and CONNECT in ONE segment', async () => {
    const fake = await startFake({ pipelined: 'reads', auth: { username: 'alice', password: 's3cret' } });
    const ob = outbound(fake.port, { pipeline: 'on', auth: 'alice:s3cret' });
    try {
      (await ob.connectTcp(DST)).destroy();
      expect([...fake.conns[0][0]]).toEqual([5, 1, 2, ...AUTH, ...REQ]);
      await expect(reasonOf(outbound(fake.port, { pipeline: 'on', auth: 'alice:wrong' }).connectTcp(DST))).resolves.toBe('auth_failed');
    } finally {
      await fake.close();
    }
  });

  it('step by step, no auth: greeting, then CONNECT after the method reply', async () => {
    const fake = await startFake({ pipelined: 'drops' });
    const ob = outbound(fake.port, { pipeline: 'off' });
    try {
      (await ob.connectTcp(DST)).destroy();
      expect(fake.conns[0].map((c) => [...c])).toEqual([[5, 1, 0], REQ]);
    } finally {
      await fake.close();
    }
  });

  it('step by step with username/password: offers both methods, then auth, then CONNECT', async () => {
    const fake = await startFake({ pipelined: 'drops', auth: { username: 'alice', password: 's3cret' } });
    const ob = outbound(fake.port, { pipeline: 'off', auth: 'alice:s3cret' });
    try {
      (await ob.connectTcp(DST)).destroy();
      expect(fake.conns[0].map((c) => [...c])).toEqual([[5, 2, 0, 2], AUTH, REQ]);
    } finally {
      await fake.close();
    }
  });

  it.each([
    [0x01, 'unreachable'],
    [0x02, 'not_allowed'],
    [0x03, 'unreachable'],
    [0x04, 'unreachable'],
    [0x05, 'refused'],
    [0x06, 'timeout'],
    [0x07, 'protocol'],
    [0x08, 'protocol'],
    [0x09, 'protocol'],
  ] as const)('pipelined: reply 0x%i → %s, and the proxy is known to read pipelined requests', async (rep, reason) => {
    const fake = await startFake({ pipelined: 'reads', rep });
    const memory = new Socks5PipelineMemory();
    const ob = outbound(fake.port, { memory });
    try {
      await expect(reasonOf(ob.connectTcp(DST))).resolves.toBe(reason);
      expect(ob.pipelineVerdict).toBe('works');
      expect(ob.stats.tcpFailures[reason]).toBe(1);
    } finally {
      await fake.close();
    }
  });

  it.each(['on', 'off'] as const)('replies split byte by byte across segments, with a banner behind the reply (pipeline %s)', async (pipeline) => {
    const banner = Buffer.from('SSH-2.0-test\r\n');
    const fake = await startFake({ pipelined: 'reads', split: true, trailer: banner, auth: { username: 'alice', password: 's3cret' } });
    const ob = outbound(fake.port, { pipeline, auth: 'alice:s3cret' });
    try {
      const s = await ob.connectTcp(DST);
      expect(s.isPaused()).toBe(true);
      const got: Buffer[] = [];
      const all = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 3000);
        s.on('data', (c: Buffer) => {
          got.push(c);
          if (Buffer.concat(got).length >= banner.length) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      s.resume();
      await all;
      // The banner bytes that came in the reply's segment, and those after, in order.
      expect(Buffer.concat(got).toString()).toBe(banner.toString());
      s.destroy();
    } finally {
      await fake.close();
    }
  });

  it('all replies in one segment (the proxy answers the pipelined handshake at once)', async () => {
    const fake = await startFake({ pipelined: 'reads' });
    const server = createServer((s) => {
      s.on('error', () => {});
      s.once('data', () => s.write(Buffer.concat([emitMethodReply(2), emitAuthReply(0), emitReply(0, { host: '10.0.0.1', port: 1 }), Buffer.from('hi')])));
    });
    await new Promise<void>((r) => server.listen(0, LOOPBACK, () => r()));
    const ob = outbound((server.address() as AddressInfo).port, { pipeline: 'on', auth: 'a:b' });
    try {
      const s = await ob.connectTcp(DST);
      const got = new Promise<string>((r) => s.once('data', (c: Buffer) => r(c.toString())));
      s.resume();
      expect(await got).toBe('hi');
      s.destroy();
    } finally {
      server.close();
      await fake.close();
    }
  });

  it('a proxy that drops what follows the greeting (microsocks): falls back step by step, and remembers', async () => {
    const fake = await startFake({ pipelined: 'drops' });
    const memory = new Socks5PipelineMemory();
    const ob = outbound(fake.port, { memory });
    try {
      const t0 = performance.now();
      (await ob.connectTcp(DST)).destroy();
      const first = performance.now() - t0;
      expect(ob.pipelineVerdict).toBe('breaks');
      expect(fake.conns).toHaveLength(2);
      expect([...fake.conns[0][0]]).toEqual([5, 1, 0, ...REQ]);
      expect(fake.conns[1].map((c) => [...c])).toEqual([[5, 1, 0], REQ]);
      // Remembered: the next connects go step by step at once, with no probe wait.
      const t1 = performance.now();
      (await ob.connectTcp(DST)).destroy();
      const second = performance.now() - t1;
      console.log(`fallback: first connect ${first.toFixed(1)} ms (with the probe), then ${second.toFixed(1)} ms`);
      expect(fake.conns).toHaveLength(3);
      expect(fake.conns[2].map((c) => [...c])).toEqual([[5, 1, 0], REQ]);
      expect(second).toBeLessThan(first);
      // Another outbound on the same proxy and memory shares the verdict (key host:port).
      (await outbound(fake.port, { memory }).connectTcp(DST)).destroy();
      expect(fake.conns[3]).toHaveLength(2);
    } finally {
      await fake.close();
    }
  });

  it('a proxy that closes on a pipelined segment: falls back and remembers; with credentials too', async () => {
    for (const auth of [undefined, { username: 'alice', password: 's3cret' }]) {
      const fake = await startFake({ pipelined: 'closes', ...(auth === undefined ? {} : { auth }) });
      const ob = outbound(fake.port, auth === undefined ? {} : { auth: 'alice:s3cret' });
      try {
        (await ob.connectTcp(DST)).destroy();
        expect(ob.pipelineVerdict).toBe('breaks');
        expect(fake.conns).toHaveLength(2);
        expect(ob.stats.tcpEstablished).toBe(1);
      } finally {
        await fake.close();
      }
    }
  });

  it('credentials for a proxy that wants none: the single-method offer is refused, step by step works', async () => {
    const fake = await startFake({ pipelined: 'reads' });
    const ob = outbound(fake.port, { auth: 'alice:s3cret' });
    try {
      (await ob.connectTcp(DST)).destroy();
      expect(fake.conns[1].map((c) => [...c])).toEqual([[5, 2, 0, 2], REQ]);
      expect(ob.pipelineVerdict).toBe('breaks');
    } finally {
      await fake.close();
    }
  });

  it('a burst of connects to a proxy not known yet sends one pipelined probe; the rest go step by step', async () => {
    const fake = await startFake({ pipelined: 'reads' });
    const ob = outbound(fake.port);
    try {
      const socks = await Promise.all([1, 2, 3, 4, 5].map(() => ob.connectTcp(DST)));
      for (const s of socks) s.destroy();
      const firsts = fake.conns.map((c) => c[0].length);
      expect(firsts.filter((n) => n === 3 + REQ.length)).toHaveLength(1);
      expect(firsts.filter((n) => n === 3)).toHaveLength(4);
      expect(ob.pipelineVerdict).toBe('works');
      (await ob.connectTcp(DST)).destroy();
      expect([...fake.conns[5][0]]).toEqual([5, 1, 0, ...REQ]);
    } finally {
      await fake.close();
    }
  });

  it("with pipelining 'on', a proxy that drops the request times out (no fallback)", async () => {
    const fake = await startFake({ pipelined: 'drops' });
    const ob = outbound(fake.port, { pipeline: 'on', timeoutMs: 300 });
    try {
      await expect(reasonOf(ob.connectTcp(DST))).resolves.toBe('timeout');
      expect(fake.conns).toHaveLength(1);
    } finally {
      await fake.close();
    }
  });
});
