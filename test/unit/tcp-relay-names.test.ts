/**
 * Flows to fake-IP addresses (dns.mode fakeip) through the relay, without root: an "app" stack
 * and tunroute's stack joined by an in-memory link; the outbound records the destination it was
 * asked for and connects to a loopback echo server.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { TcpRelay } from '../../src/relay/tcp-relay.js';
import { Router } from '../../src/router/router.js';
import { FakeIpPool } from '../../src/dns/fake-ip.js';
import { UpstreamError, newOutboundStats, type Destination, type Outbound } from '../../src/outbound/outbound.js';
import { monotonicClock } from '../../src/clock.js';
import { silentLogger } from '../../src/logger.js';
import { ipToU32 } from '../../src/net/ipv4.js';
import type { CloseReason } from '../../src/stack/tcp/types.js';
import { stackPair } from '../helpers/stack-pair.js';

const APP_IP = ipToU32('10.0.0.2')!;

function recordingOutbound(name: string, port: () => number, asked: Destination[], onConnect: () => void): Outbound {
  return {
    name,
    kind: 'socks5',
    stats: newOutboundStats(),
    connectTcp: (dst: Destination) => {
      asked.push(dst);
      onConnect();
      return new Promise((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: port() });
        s.once('connect', () => {
          s.removeAllListeners('error');
          s.pause();
          resolve(s);
        });
        s.once('error', () => reject(new UpstreamError('refused', name, 'refused')));
      });
    },
    close: async () => {},
  };
}

let cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups) c();
  cleanups = [];
});

async function echoPort(): Promise<number> {
  const s: Server = createServer((sock: Socket) => sock.pipe(sock));
  cleanups.push(() => s.close());
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
}

function rig(port: number) {
  const log = silentLogger();
  const pair = stackPair(log);
  const { stack, appStack } = pair;
  const pool = new FakeIpPool();
  const office: Destination[] = [];
  const proxy: Destination[] = [];
  /** The pool's busy count each time a flow asked its outbound to connect. */
  const busyAtConnect: number[] = [];
  const sample = (): void => {
    busyAtConnect.push(pool.stats.busy);
  };
  const relay = new TcpRelay({
    stack,
    router: new Router({ rules: [{ domains: ['corp.test'], outbound: 'office' }], defaultOutbound: 'proxy' }),
    outbounds: new Map([
      ['office', recordingOutbound('office', () => port, office, sample)],
      ['proxy', recordingOutbound('proxy', () => port, proxy, sample)],
    ]),
    clock: monotonicClock,
    logger: log,
    names: pool,
  });
  stack.setSynHandler(relay.onSyn);
  cleanups.push(() => pair.close());

  /** Connect to `dst`, send `msg`, read it back, close; resolves the close reason. */
  function exchange(dst: number, msg: string): Promise<{ echoed: string; reason: CloseReason }> {
    return new Promise((resolve) => {
      let echoed = '';
      const conn = appStack.table.connect(monotonicClock.now(), APP_IP, dst, {
        localPort: 40000 + Math.floor(Math.random() * 20000),
        remotePort: 80,
        iss: appStack.random32(),
        mss: 1460,
        listener: {
          onEstablished() {
            conn.write(Buffer.from(msg));
            appStack.schedule();
          },
          onData(chunk: Uint8Array) {
            echoed += Buffer.from(chunk).toString();
            conn.consumed(chunk.length);
            if (echoed.length >= msg.length) conn.shutdownWrite();
            appStack.schedule();
          },
          onPeerFin() {
            appStack.schedule();
          },
          onClosed(reason: CloseReason) {
            resolve({ echoed, reason });
          },
        },
      });
      appStack.schedule();
    });
  }
  return { pool, relay, office, proxy, busyAtConnect, exchange };
}

describe('TCP relay: flows to fake-IP addresses', () => {
  it('carries the flow to its name, routed by the domain rules, and pins the address while it lives', async () => {
    const r = rig(await echoPort());
    const corp = r.pool.lookup('www.corp.test')!;
    const other = r.pool.lookup('other.test')!;
    const a = await r.exchange(corp, 'hello by name');
    expect(a.echoed).toBe('hello by name');
    expect(r.office).toEqual([{ ip: '198.18.0.1', port: 80, name: 'www.corp.test' }]);
    const b = await r.exchange(other, 'elsewhere');
    expect(b.echoed).toBe('elsewhere');
    expect(r.proxy).toEqual([{ ip: '198.18.0.2', port: 80, name: 'other.test' }]);
    // Each flow held its address while it connected (pinned before the outbound was asked)…
    expect(r.busyAtConnect).toEqual([1, 1]);
    // …and lets it go once our side of the flow is closed too (its last ACK arrives a hop after
    // the app's close): wait for that, bounded.
    for (let i = 0; i < 200 && r.pool.stats.busy > 0; i++) await new Promise((res) => setTimeout(res, 10));
    expect(r.pool.stats.busy).toBe(0);
  });

  it('answers RST to a pool address that has no name (an answer from before a lost table)', async () => {
    const r = rig(await echoPort());
    const res = await r.exchange(ipToU32('198.18.3.3')!, 'x');
    expect(res.reason).not.toBe('normal');
    expect(r.relay.stats.refusedNoName).toBe(1);
    expect(r.office.length + r.proxy.length).toBe(0);
  });
});
