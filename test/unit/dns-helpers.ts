/**
 * Test doubles for the DNS resolver: a scripted DNS server on 127.0.0.1 (UDP and TCP on one
 * port), and an outbound that goes straight to the destination (no proxy) with the same
 * contract as a SOCKS5 one, so the resolver's logic is tested without a proxy in the way.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  UpstreamError,
  newOutboundStats,
  newUdpOutboundStats,
  type Destination,
  type Outbound,
  type TcpUpstream,
  type UdpUpstream,
  type UdpUpstreamHandlers,
  type UpstreamReason,
} from '../../src/outbound/outbound.js';
import { DNS_TYPE_A, DNS_TYPE_SOA, DnsMessage, answerFlags, emitDnsMessage, DNS_RCODE_NXDOMAIN } from '../../src/dns/message.js';

export const LOOPBACK = '127.0.0.1';

export interface DnsServerLog {
  transport: 'udp' | 'tcp';
  name: string;
  id: number;
}

/**
 * Names and what the server does with them:
 *   big.test.         UDP: TC=1, no records; TCP: 40 A records (> 512 bytes)
 *   udp-silent.test.  UDP: no answer; TCP: answered
 *   nx.test.          NXDOMAIN with an SOA (TTL 60)
 *   ttl<N>.test.      one A record with TTL N
 *   anything else     one A record 192.0.2.1, TTL 300
 * With `udpDown`, the UDP side answers nothing at all.
 */
export async function startDnsServer(): Promise<{ port: number; log: DnsServerLog[]; udpDown: boolean; close(): Promise<void> }> {
  for (let tries = 0; ; tries++) {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, LOOPBACK, () => r()));
    const port = udp.address().port;
    const tcp = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, LOOPBACK, () => resolve(true));
    });
    if (!ok) {
      udp.close();
      if (tries > 20) throw new Error('no port free for UDP and TCP');
      continue;
    }
    return serve(udp, tcp, port);
  }
}

function answerFor(q: DnsMessage, transport: 'udp' | 'tcp'): Uint8Array | undefined {
  const name = q.question!.name.toLowerCase();
  const question = { name: q.question!.name, qtype: q.question!.qtype };
  const a = (ttl: number, n: number): Uint8Array =>
    emitDnsMessage({
      id: q.id,
      flags: answerFlags(),
      question,
      answers: Array.from({ length: n }, (_, i) => ({ name: q.question!.name, type: DNS_TYPE_A, ttl, data: Uint8Array.of(192, 0, 2, (i % 250) + 1) })),
    });
  if (name === 'big.test.') {
    return transport === 'udp' ? emitDnsMessage({ id: q.id, flags: answerFlags(0, true), question }) : a(300, 40);
  }
  if (name === 'udp-silent.test.') return transport === 'udp' ? undefined : a(300, 1);
  if (name === 'nx.test.') {
    return emitDnsMessage({ id: q.id, flags: answerFlags(DNS_RCODE_NXDOMAIN), question, authority: [{ name: 'test', type: DNS_TYPE_SOA, ttl: 60, data: new Uint8Array(22) }] });
  }
  const m = /^ttl(\d+)\.test\.$/.exec(name);
  return a(m !== null ? Number(m[1]) : 300, 1);
}

function serve(udp: UdpSocket, tcp: Server, port: number) {
  const log: DnsServerLog[] = [];
  const sockets = new Set<Socket>();
  const state = {
    port,
    log,
    udpDown: false,
    close: async (): Promise<void> => {
      for (const s of sockets) s.destroy();
      udp.close();
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
  udp.on('message', (m, r) => {
    if (state.udpDown) return;
    const q = DnsMessage.parse(new Uint8Array(m));
    if (q?.question === undefined) return;
    log.push({ transport: 'udp', name: q.question.name, id: q.id });
    const a = answerFor(q, 'udp');
    if (a !== undefined) udp.send(a, r.port, r.address);
  });
  tcp.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const q = DnsMessage.parse(new Uint8Array(buf.subarray(2, 2 + len)));
        buf = buf.subarray(2 + len);
        if (q?.question === undefined) continue;
        log.push({ transport: 'tcp', name: q.question.name, id: q.id });
        const a = answerFor(q, 'tcp')!;
        const frame = Buffer.alloc(2 + a.length);
        frame.writeUInt16BE(a.length, 0);
        frame.set(a, 2);
        s.write(frame);
      }
    });
  });
  return state;
}

/**
 * An Outbound that reaches destinations directly. `udp`: 'ok' gives openUdp, a reason makes
 * openUdp reject with it, 'absent' leaves openUdp out. Counts what it was asked.
 */
export function directOutbound(udp: 'ok' | 'absent' | UpstreamReason = 'ok'): Outbound & { tcpConnects: number; udpOpens: number; associations: UdpUpstream[] } {
  const stats = newOutboundStats();
  stats.udp = newUdpOutboundStats();
  const o = {
    name: 'direct',
    kind: 'socks5' as const,
    stats,
    tcpConnects: 0,
    udpOpens: 0,
    associations: [] as UdpUpstream[],
    connectTcp(dst: Destination): Promise<TcpUpstream> {
      o.tcpConnects++;
      return new Promise((resolve, reject) => {
        const s = connect(dst.port, dst.ip);
        s.once('connect', () => {
          s.removeAllListeners('error');
          s.pause();
          resolve(s);
        });
        s.once('error', (e: NodeJS.ErrnoException) => reject(new UpstreamError(e.code === 'ECONNREFUSED' ? 'refused' : 'unreachable', 'direct', e.message, e)));
      });
    },
    close: () => Promise.resolve(),
    ...(udp === 'absent'
      ? {}
      : {
          openUdp(): Promise<UdpUpstream> {
            o.udpOpens++;
            if (udp !== 'ok') return Promise.reject(new UpstreamError(udp, 'direct', `UDP refused: ${udp}`));
            return directUdp().then((a) => {
              o.associations.push(a);
              return a;
            });
          },
        }),
  };
  return o;
}

async function directUdp(): Promise<UdpUpstream> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, LOOPBACK, () => r()));
  let handlers: UdpUpstreamHandlers | undefined;
  let closed = false;
  s.on('message', (m, r) => handlers?.message(new Uint8Array(m), { ip: r.address, port: r.port }));
  return {
    relay: { ip: LOOPBACK, port: s.address().port },
    setHandlers: (h) => {
      handlers = h;
    },
    send: (dst, payload) => {
      if (closed) return false;
      s.send(Buffer.from(payload), dst.port, dst.ip);
      return true;
    },
    close: () => {
      if (closed) return;
      closed = true;
      s.close();
    },
  };
}
