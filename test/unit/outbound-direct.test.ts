/**
 * The direct outbound against real sockets on 127.0.0.1: TCP connects hand back a paused
 * socket, failures carry the reason the stack answers with, UDP associations are connected to
 * their destination so that its ICMP port unreachable comes back as `unreachable('refused')`.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DirectOutbound, reasonOfErrno } from '../../src/outbound/direct.js';
import { isUpstreamError, type ConnectCancel, type Destination, type UdpUpstream, type UpstreamReason } from '../../src/outbound/outbound.js';

let closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers) c();
  closers = [];
});

function tcpServer(onConn: (s: Socket) => void): Promise<number> {
  return new Promise((resolve) => {
    const s: Server = createServer(onConn);
    closers.push(() => s.close());
    s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port));
  });
}

function udpEcho(): Promise<number> {
  return new Promise((resolve) => {
    const s: UdpSocket = createSocket('udp4');
    closers.push(() => s.close());
    s.on('message', (m, r) => s.send(m, r.port, r.address));
    s.bind(0, '127.0.0.1', () => resolve(s.address().port));
  });
}

async function reasonOf(p: Promise<unknown>): Promise<UpstreamReason> {
  try {
    await p;
  } catch (e) {
    if (isUpstreamError(e)) return e.reason;
    throw e;
  }
  throw new Error('expected a rejection');
}

describe('DirectOutbound TCP', () => {
  it('connects and hands back a paused socket; a banner sent at once is not lost', async () => {
    const port = await tcpServer((s) => s.end('banner\n'));
    const ob = new DirectOutbound();
    const sock = await ob.connectTcp({ ip: '127.0.0.1', port });
    closers.push(() => sock.destroy());
    expect(sock.isPaused()).toBe(true);
    await new Promise((r) => setTimeout(r, 30));
    const got = await new Promise<string>((resolve) => {
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('end', () => resolve(text));
      sock.resume();
    });
    expect(got).toBe('banner\n');
    expect(ob.stats).toMatchObject({ tcpAttempts: 1, tcpEstablished: 1 });
    expect(ob.kind).toBe('direct');
  });

  it('reports a closed port as refused', async () => {
    const port = await tcpServer(() => {});
    closers.pop()!();
    const ob = new DirectOutbound();
    expect(await reasonOf(ob.connectTcp({ ip: '127.0.0.1', port }))).toBe('refused');
    expect(ob.stats.tcpFailures.refused).toBe(1);
  });

  it('rejects with aborted when the caller aborts, and after close()', async () => {
    const port = await tcpServer(() => {});
    const ob = new DirectOutbound();
    const ctl = new AbortController();
    const p = ob.connectTcp({ ip: '127.0.0.1', port }, { signal: ctl.signal });
    ctl.abort();
    expect(await reasonOf(p)).toBe('aborted');
    await ob.close();
    expect(await reasonOf(ob.connectTcp({ ip: '127.0.0.1', port }))).toBe('aborted');
  });

  it('rejects with aborted when the caller cancels through its ConnectCancel, which is cleared when the attempt settles', async () => {
    const port = await tcpServer(() => {});
    const ob = new DirectOutbound();
    const slot: ConnectCancel = { pending: undefined };
    const p = ob.connectTcp({ ip: '127.0.0.1', port }, { cancel: slot });
    expect(slot.pending).toBeDefined();
    slot.pending?.cancel();
    expect(await reasonOf(p)).toBe('aborted');
    expect(slot.pending).toBeUndefined();
    const s = await ob.connectTcp({ ip: '127.0.0.1', port }, { cancel: slot });
    expect(slot.pending).toBeUndefined();
    s.destroy();
  });

  it('refuses a destination that is not IPv4:port', async () => {
    const ob = new DirectOutbound();
    expect(await reasonOf(ob.connectTcp({ ip: 'example.com', port: 80 }))).toBe('protocol');
    expect(await reasonOf(ob.connectTcp({ ip: '127.0.0.1', port: 0 }))).toBe('protocol');
  });

  it('maps socket errnos to the reasons the stack answers with', () => {
    expect(reasonOfErrno('ECONNREFUSED')).toBe('refused');
    expect(reasonOfErrno('ECONNRESET')).toBe('refused');
    expect(reasonOfErrno('EHOSTUNREACH')).toBe('unreachable');
    expect(reasonOfErrno('ENETUNREACH')).toBe('unreachable');
    expect(reasonOfErrno('ETIMEDOUT')).toBe('timeout');
    expect(reasonOfErrno('EPERM')).toBe('not_allowed');
    expect(reasonOfErrno('EWHATEVER')).toBeUndefined();
  });
});

describe('DirectOutbound UDP', () => {
  async function open(ob: DirectOutbound): Promise<{ a: UdpUpstream; got: Array<{ data: string; from: Destination }>; unreachable: string[] }> {
    const a = await ob.openUdp();
    closers.push(() => a.close());
    const got: Array<{ data: string; from: Destination }> = [];
    const unreachable: string[] = [];
    a.setHandlers({
      message: (p, from) => got.push({ data: Buffer.from(p).toString(), from }),
      closed: () => unreachable.push('closed'),
      unreachable: (r) => unreachable.push(r),
    });
    return { a, got, unreachable };
  }

  it('sends and receives through one socket, queueing while it connects', async () => {
    const port = await udpEcho();
    const ob = new DirectOutbound();
    const { a, got } = await open(ob);
    expect(a.send({ ip: '127.0.0.1', port }, Buffer.from('one'))).toBe(true);
    expect(a.send({ ip: '127.0.0.1', port }, Buffer.from('two'))).toBe(true);
    for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(got.map((g) => g.data)).toEqual(['one', 'two']);
    expect(got[0].from).toEqual({ ip: '127.0.0.1', port });
    expect(ob.stats.udp).toMatchObject({ attempts: 1, established: 1, datagramsUp: 2, datagramsDown: 2 });
  });

  it('reports the destination\'s ICMP port unreachable as unreachable(refused)', async () => {
    const port = await udpEcho();
    closers.pop()!();
    const ob = new DirectOutbound();
    const { a, unreachable } = await open(ob);
    a.send({ ip: '127.0.0.1', port }, Buffer.from('x'));
    for (let i = 0; i < 100 && unreachable.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(unreachable).toEqual(['refused']);
    // The association lives on.
    expect(a.send({ ip: '127.0.0.1', port }, Buffer.from('y'))).toBe(true);
  });

  it('carries a datagram to a second destination through a second socket', async () => {
    const p1 = await udpEcho();
    const p2 = await udpEcho();
    const ob = new DirectOutbound();
    const { a, got } = await open(ob);
    a.send({ ip: '127.0.0.1', port: p1 }, Buffer.from('first'));
    a.send({ ip: '127.0.0.1', port: p2 }, Buffer.from('second'));
    for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(got.map((g) => `${g.data}@${g.from.port}`).sort()).toEqual([`first@${p1}`, `second@${p2}`].sort());
  });

  it('closes its associations on close() and refuses new ones', async () => {
    const ob = new DirectOutbound();
    const { a } = await open(ob);
    expect(ob.udpAssociations).toBe(1);
    await ob.close();
    expect(ob.udpAssociations).toBe(0);
    expect(a.send({ ip: '127.0.0.1', port: 9 }, Buffer.from('x'))).toBe(false);
    expect(await reasonOf(ob.openUdp())).toBe('aborted');
  });
});
