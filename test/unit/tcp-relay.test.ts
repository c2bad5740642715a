/**
 * The TCP glue and relay without root: an "app" stack and tunroute's stack joined by an
 * in-memory link (with loss and reordering), tunroute's flows carried to real sockets on
 * loopback. Proves packets ↔ segments, checksums, the one-timer scheduling, backpressure and
 * the refusal path end to end in one process.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { type MemoryLink } from '../../src/link/memory.js';
import { TcpStack } from '../../src/stack/tcp-stack.js';
import { TcpRelay, type TcpRelayOptions } from '../../src/relay/tcp-relay.js';
import { BufferBudget } from '../../src/relay/buffer-budget.js';
import { Router } from '../../src/router/router.js';
import { UpstreamError, newOutboundStats, type Outbound } from '../../src/outbound/outbound.js';
import { monotonicClock } from '../../src/clock.js';
import { silentLogger } from '../../src/logger.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import type { TcpConnection } from '../../src/stack/tcp/connection.js';
import type { CloseReason, TcpListener } from '../../src/stack/tcp/types.js';
import { stackPair } from '../helpers/stack-pair.js';

const APP_IP = ipToU32('198.18.0.1')!;
const DST_IP = ipToU32('10.66.1.7')!;

/** An outbound that connects straight to a loopback port, whatever the destination. */
function loopbackOutbound(port: () => number): Outbound {
  const stats = newOutboundStats();
  return {
    name: 'loop',
    kind: 'socks5',
    stats,
    connectTcp: () =>
      new Promise((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: port() });
        s.once('connect', () => {
          s.removeAllListeners('error');
          s.pause();
          resolve(s);
        });
        s.once('error', () => reject(new UpstreamError('refused', 'loop', 'refused')));
      }),
    close: async () => {},
  };
}

interface Rig {
  appLink: MemoryLink;
  tunLink: MemoryLink;
  appStack: TcpStack;
  relay: TcpRelay;
  close(): void;
}

function rig(port: () => number, faults?: { loss?: number; reorder?: number; seed: number }, maxFlows = 100, extra: Partial<TcpRelayOptions> = {}): Rig {
  const log = silentLogger();
  const pair = stackPair(log, faults);
  const { stack } = pair;
  const relay = new TcpRelay({
    stack,
    router: new Router({ rules: [], defaultOutbound: 'loop' }),
    outbounds: new Map([['loop', loopbackOutbound(port)]]),
    clock: monotonicClock,
    logger: log,
    bufferBytes: 128 * 1024,
    maxFlows,
    ...extra,
  });
  stack.setSynHandler(relay.onSyn);
  return { appLink: pair.appLink, tunLink: pair.tunLink, appStack: pair.appStack, relay, close: () => pair.close() };
}

function appConnect(r: Rig, port: number, listener: TcpListener): TcpConnection {
  const c = r.appStack.table.connect(monotonicClock.now(), APP_IP, DST_IP, {
    localPort: 40000 + Math.floor(Math.random() * 20000),
    remotePort: port,
    iss: r.appStack.random32(),
    mss: 1460,
    listener,
  });
  r.appStack.schedule();
  return c;
}

let servers: Server[] = [];
let rigs: Rig[] = [];
afterEach(() => {
  for (const s of servers) s.close();
  for (const r of rigs) r.close();
  servers = [];
  rigs = [];
});

function echoServer(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer((sock: Socket) => sock.pipe(sock));
    servers.push(s);
    s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port));
  });
}

describe('TCP relay over an in-memory link', () => {
  it('echoes 4 MB through our stack and a real socket, intact, under 2% loss and reordering', async () => {
    const port = await echoServer();
    const r = rig(() => port, { loss: 0.02, reorder: 0.02, seed: 11 });
    rigs.push(r);
    const total = 4 * 1024 * 1024;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i++) data[i] = (i * 131 + (i >> 9)) & 0xff;
    const got: Buffer[] = [];
    let gotBytes = 0;
    const done = new Promise<void>((resolve, reject) => {
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          const n = conn.write(data.subarray(sent, Math.min(total, sent + 65536)));
          if (n === 0) break;
          sent += n;
        }
        if (sent === total) conn.shutdownWrite();
        r.appStack.schedule();
      };
      const conn: TcpConnection = appConnect(r, 7, {
        onEstablished: pump,
        onWritable: pump,
        onData(chunk: Uint8Array) {
          got.push(Buffer.from(chunk));
          gotBytes += chunk.length;
          conn.consumed(chunk.length);
          r.appStack.schedule();
        },
        onPeerFin: () => resolve(),
        onClosed(reason: CloseReason) {
          if (reason !== 'normal') reject(new Error(`closed: ${reason}`));
        },
      });
    });
    await done;
    expect(gotBytes).toBe(total);
    const h = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    expect(h(Buffer.concat(got))).toBe(h(data));
    expect(r.tunLink.faultCounts.lost + r.appLink.faultCounts.lost).toBeGreaterThan(0);
    expect(r.relay.stats.bytesUp).toBe(total);
    expect(r.relay.stats.bytesDown).toBe(total);
  }, 60_000);

  it('answers RST when the destination refuses, and counts it', async () => {
    // A port nothing listens on: bind, note the port, close.
    const port = await echoServer();
    servers.pop()!.close();
    const r = rig(() => port);
    rigs.push(r);
    const reason = await new Promise<string>((resolve) => {
      appConnect(r, 9, { onClosed: (why: CloseReason) => resolve(why) });
    });
    expect(reason).toBe('refused');
    expect(r.relay.stats.upstreamErrors.refused).toBe(1);
    expect(r.relay.stats.flowsOpen).toBe(0);
  });

  it('refuses flows beyond maxFlows with RST', async () => {
    const port = await echoServer();
    const r = rig(() => port, undefined, 1);
    rigs.push(r);
    const first = new Promise<void>((resolve) => appConnect(r, 7, { onEstablished: () => resolve() }));
    await first;
    const second = await new Promise<string>((resolve) => appConnect(r, 7, { onClosed: (why: CloseReason) => resolve(why) }));
    expect(second).toBe('refused');
    expect(r.relay.stats.refusedLimit).toBe(1);
  });
});

describe('TcpRelay.resetWhere (a path that died, an outbound a reload changed)', () => {
  it('resets the flows picked (the app sees a reset, not a hang) and keeps the others', async () => {
    const port = await echoServer();
    const r = rig(() => port);
    rigs.push(r);
    const closed = new Map<number, string>();
    const open = (dstPort: number) =>
      new Promise<void>((resolve) => appConnect(r, dstPort, { onEstablished: () => resolve(), onClosed: (why: CloseReason) => void closed.set(dstPort, why) }));
    await Promise.all([open(7), open(8)]);
    // Wait until both flows have their upstream socket (then they carry bytes).
    for (let i = 0; i < 100 && r.relay.flowInfo().some((f) => f.state !== 'ESTABLISHED'); i++) await new Promise((res) => setTimeout(res, 10));
    expect(r.relay.resetWhere((f) => f.dstPort === 7 && f.outbound.name === 'loop' && f.protocol === 6)).toBe(1);
    for (let i = 0; i < 100 && !closed.has(7); i++) await new Promise((res) => setTimeout(res, 10));
    expect(closed.get(7)).toBe('reset');
    expect(closed.has(8)).toBe(false);
    expect(r.relay.stats.flowsOpen).toBe(1);
  });
});

describe('TcpRelay limits', () => {
  function refusedSecond(r: Rig): Promise<string> {
    return new Promise<void>((resolve) => appConnect(r, 7, { onEstablished: () => resolve() })).then(
      () => new Promise<string>((resolve) => appConnect(r, 7, { onClosed: (why: CloseReason) => resolve(why) })),
    );
  }

  it('refuses a flow with RST when the buffer budget cannot promise it its floors', async () => {
    const port = await echoServer();
    // Room for one flow's two floors and a little pool: the second flow does not fit.
    const r = rig(() => port, undefined, 100, { budget: new BufferBudget(2 * 4096 + 1000, 100, 4096) });
    rigs.push(r);
    expect(await refusedSecond(r)).toBe('refused');
    expect(r.relay.stats.refusedMemory).toBe(1);
    expect(r.relay.stats.flowsOpen).toBe(1);
  });

  it("refuses a user's flows with RST beyond its share, and counts them", async () => {
    const port = await echoServer();
    const owners: Array<[number, number]> = [];
    const r = rig(() => port, undefined, 100, {
      perUidFlows: 1,
      socketOwner: (_s, srcPort) => {
        owners.push([srcPort, 1000]);
        return 1000;
      },
    });
    rigs.push(r);
    expect(await refusedSecond(r)).toBe('refused');
    expect(r.relay.stats.refusedUid).toBe(1);
    expect(owners).toHaveLength(2);
  });

  it('gives RST, a counter and no crash when the upstream socket finds no file descriptor (EMFILE)', async () => {
    const r = rig(() => 1, undefined, 100);
    rigs.push(r);
    const emfile = Object.assign(new Error('connect EMFILE'), { code: 'EMFILE' });
    (r.relay.opts.outbounds.get('loop') as { connectTcp: Outbound['connectTcp'] }).connectTcp = () =>
      Promise.reject(new UpstreamError('proxy_down', 'loop', 'cannot reach the proxy: EMFILE', emfile));
    const why = await new Promise<string>((resolve) => appConnect(r, 7, { onClosed: (w: CloseReason) => resolve(w) }));
    expect(why).toBe('refused');
    expect(r.relay.stats.refusedFds).toBe(1);
  });
});
