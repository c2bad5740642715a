/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §4, §7) on our SOCKS5 client (socks5-client.ts).
 *
 *   client                                           proxy
 *     ── TCP connect ───────────────────────────────►          control connection
 *     ── greeting / auth (as for CONNECT) ──────────►
 *     ── 05 03 00 01 0.0.0.0 0 ──────────────────────►          UDP ASSOCIATE, "any source"
 *     ◄──────────── 05 00 00 01 relay.addr relay.port ──        where to send datagrams
 *     ══ UDP: 00 00 frag atyp dst.addr dst.port data ═►  relay ══► dst
 *     ◄═ UDP: 00 00 00   atyp src.addr src.port data ══  relay ◄══ any remote
 *
 * The association lives exactly as long as the TCP control connection (RFC 1928 §7): when
 * the proxy closes it, the association is over and the user hears `closed` ('proxy_down').
 * A relay address of 0.0.0.0 in the reply means "the address you reached me at": we use the
 * control connection's remote address. The destination in the request is 0.0.0.0:0 — we
 * do not know our source address as the proxy sees it (NAT); dante accepts that and locks
 * the association to the first datagram's source (FACTS.md).
 *
 * Our UDP socket is bound to the control connection's local address and `connect()`ed to the
 * relay, so only the relay's datagrams reach us, and ICMP errors about our datagrams surface
 * as socket errors. dante uses exactly that to report a destination that refused: it sends us
 * ICMP port unreachable (ECONNREFUSED here) and keeps the association; we pass it on as
 * `unreachable('refused')` so that the app gets its own ICMP port unreachable.
 *
 * One association per app flow, not one shared per app socket. Sharing (one association for
 * everything an app socket sends) would give the app a single external port at the proxy for
 * all its destinations, which peer-to-peer hole punching likes. We choose per flow because:
 *   - the router picks the outbound per destination: two destinations of one socket may go
 *     through different proxies, or one may be blocked;
 *   - an error the proxy reports (ECONNREFUSED above, the control connection dying) can only
 *     be attributed to a destination when the association carries one: the app gets the ICMP
 *     error for the right datagram;
 *   - the flow's idle timeout (10 s for DNS) releases the association with the flow.
 * The cost is two sockets per flow (the control connection and the UDP socket) — the flow
 * table's cap bounds them. Replies from any remote still reach the app (full cone inbound).
 *
 * SOCKS-level fragmentation (FRAG ≠ 0) is optional in RFC 1928 and we do not implement it:
 * such frames are dropped, as the RFC allows. Only IPv4 remote addresses are delivered.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIPv4, type Socket } from 'node:net';
import type { Logger } from '../logger.js';
import {
  UpstreamError,
  newUdpOutboundStats,
  type Destination,
  type UdpOpenOptions,
  type UdpOutboundStats,
  type UdpUpstream,
  type UdpUpstreamHandlers,
  type UpstreamReason,
} from './outbound.js';
import { Socks5Connector, type Socks5Failure, type Socks5HandshakeOwner, type Socks5PipelineMemory, type Socks5PipelineMode } from './socks5-client.js';
import { Socks5Outbound, connectorOptions, type Socks5OutboundOptions } from './socks5.js';
import { SOCKS5_CMD_UDP_ASSOCIATE, emitUdpHeader, type Socks5Address } from './socks5-wire.js';
import { formatSocks5Url, type Socks5Url } from './socks5-url.js';

export const SOCKS5_UDP_DEFAULT_TIMEOUT_MS = 10_000;
/** Datagrams queued in our UDP socket beyond which sends are dropped (UDP has no backpressure). */
export const SOCKS5_UDP_MAX_SEND_QUEUE = 512;
/** Keep-alive on the control connection: a proxy that vanished is noticed. */
const CONTROL_KEEPALIVE_MS = 15_000;

/** How a remote could not be reached, as the proxy reported it through ICMP. */
export type UdpUnreachableReason = Extract<UpstreamReason, 'refused' | 'unreachable'>;


export interface Socks5UdpOptions {
  /** The outbound's name, for errors and logs. */
  readonly name: string;
  readonly proxy: Socks5Url;
  /** Deadline for proxy connect + handshake + relay socket; default 10 s. */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
  /** Counters to bump (the outbound's); a private set otherwise. */
  readonly stats?: UdpOutboundStats;
  /** The proxy's connector (the outbound's, sharing its deadline sweep); a new one otherwise. */
  readonly connector?: Socks5Connector;
  readonly pipeline?: Socks5PipelineMode;
  readonly pipelineMemory?: Socks5PipelineMemory;
}

/** '::ffff:1.2.3.4' → '1.2.3.4'; IPv4 as is; anything else undefined. */
function ipv4Of(addr: string | undefined): string | undefined {
  if (addr === undefined) return undefined;
  if (isIPv4(addr)) return addr;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m !== null && isIPv4(m[1]) ? m[1] : undefined;
}

/**
 * Open one association. Resolves when the proxy granted it and our relay socket is ready;
 * rejects with an UpstreamError: 'proxy_down' (cannot reach the proxy), 'protocol' (the proxy
 * does not do UDP ASSOCIATE — microsocks answers 0x07 — or broke the protocol),
 * 'not_allowed', 'auth_failed', 'timeout', 'aborted'.
 */
export function openSocks5UdpAssociation(opts: Socks5UdpOptions, open: UdpOpenOptions = {}): Promise<Socks5UdpAssociation> {
  const stats = opts.stats ?? newUdpOutboundStats();
  stats.attempts++;
  const name = opts.name;
  const proxyAddr = `${opts.proxy.host}:${opts.proxy.port}`;
  const error = (reason: UpstreamReason, message: string, cause?: unknown): UpstreamError =>
    new UpstreamError(reason, name, `UDP ASSOCIATE via SOCKS5 proxy ${proxyAddr}: ${message}`, cause);
  const signal = open.signal;
  if (signal?.aborted === true) {
    stats.failures.aborted++;
    return Promise.reject(error('aborted', 'aborted before it started'));
  }
  const timeoutMs = open.timeoutMs ?? opts.timeoutMs ?? SOCKS5_UDP_DEFAULT_TIMEOUT_MS;
  return new Promise<Socks5UdpAssociation>((resolve, reject) => {
    let udp: UdpSocket | undefined;
    let control: Socket | undefined;
    let settled = false;
    const fail = (err: UpstreamError): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      control?.destroy();
      if (udp !== undefined) {
        udp.removeAllListeners();
        udp.on('error', () => {});
        udp.close();
      }
      stats.failures[err.reason]++;
      if (opts.logger?.isLevelEnabled('debug') === true) opts.logger.debug({ outbound: name, reason: err.reason }, err.message);
      reject(err);
    };
    const owner: Socks5HandshakeOwner = {
      handshakeDone: (socket: Socket, bound: Socks5Address | undefined): void => {
        control = socket;
        if (settled) {
          socket.destroy();
          return;
        }
        // From here the control connection only has to stay open: whatever it carries is dropped.
        control.on('data', () => {});
        control.on('error', () => {});
        // Our client opens half-open sockets (for CONNECT); the proxy's FIN ends the association.
        control.once('end', () => control?.destroy());
        control.resume();
        control.setKeepAlive(true, CONTROL_KEEPALIVE_MS);
        const said = bound?.host;
        const relayIp = said !== undefined && said !== '0.0.0.0' ? ipv4Of(said) : ipv4Of(control.remoteAddress);
        const relayPort = bound?.port ?? 0;
        if (relayIp === undefined || relayPort === 0) {
          fail(error('protocol', `the proxy named an unusable relay address ${String(said)}:${relayPort}`));
          return;
        }
        startRelay(socket, { ip: relayIp, port: relayPort });
      },
      handshakeFailed: (f: Socks5Failure): void => fail(error(f.reason, f.detail, f.cause)),
    };
    const onAbort = (): void => {
      handshake.fail({ reason: 'aborted', detail: 'aborted by the caller', cause: signal?.reason });
      // After the handshake (binding the relay socket) the handshake is over: fail here.
      fail(error('aborted', 'aborted by the caller', signal?.reason));
    };

    const startRelay = (control: Socket, relay: Destination): void => {
      const u = createSocket({ type: 'udp4' });
      udp = u;
      const onUdpError = (err: NodeJS.ErrnoException): void => {
        fail(error('proxy_down', `cannot set up the relay socket to ${relay.ip}:${relay.port}: ${err.code ?? err.message}`, err));
      };
      u.once('error', onUdpError);
      const local = ipv4Of(control.localAddress) ?? '0.0.0.0';
      u.bind({ address: local, port: 0 }, () => {
        if (settled) return;
        u.connect(relay.port, relay.ip, () => {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          u.removeListener('error', onUdpError);
          stats.established++;
          resolve(new Socks5UdpAssociation(name, control, u, relay, stats, opts.logger));
        });
      });
    };

    const connector = opts.connector ?? new Socks5Connector(connectorOptions({ name, proxy: opts.proxy, pipeline: opts.pipeline, pipelineMemory: opts.pipelineMemory }));
    signal?.addEventListener('abort', onAbort, { once: true });
    // The request names 0.0.0.0:0, "any source" (see above); the reply's address is the relay.
    const handshake = connector.open(SOCKS5_CMD_UDP_ASSOCIATE, { host: '0.0.0.0', port: 0 }, timeoutMs, owner, true);
  });
}

/** One granted association: the control connection and our UDP socket connected to the relay. */
export class Socks5UdpAssociation implements UdpUpstream {
  private handlers: UdpUpstreamHandlers | undefined;
  private closed = false;
  /** The frame header for the last destination (a flow sends to one). */
  private lastDst = '';
  /** The Destination object the header was last checked for. */
  private lastDstRef: Destination | undefined = undefined;
  private lastHeader: Buffer = Buffer.alloc(0);
  private readonly closeListeners: Array<() => void> = [];

  constructor(
    private readonly name: string,
    private readonly control: Socket,
    private readonly udp: UdpSocket,
    readonly relay: Destination,
    private readonly stats: UdpOutboundStats,
    private readonly logger: Logger | undefined,
  ) {
    udp.on('message', this.onMessage);
    udp.on('error', this.onUdpError);
    control.once('close', this.onControlClose);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Run `cb` once when the association ends, whichever way (now, if it has ended). */
  onceClosed(cb: () => void): void {
    if (this.closed) cb();
    else this.closeListeners.push(cb);
  }

  setHandlers(h: UdpUpstreamHandlers): void {
    this.handlers = h;
  }

  send(dst: Destination, payload: Uint8Array): boolean {
    if (this.closed) return false;
    const s = this.stats;
    if (this.udp.getSendQueueCount() >= SOCKS5_UDP_MAX_SEND_QUEUE) {
      s.dropped++;
      return false;
    }
    // The header is rebuilt only for another destination: a flow passes the same object with
    // every datagram, so the usual check is one comparison, no string built per datagram.
    if (dst !== this.lastDstRef) {
      // A destination by name (a fake-IP flow) is sent as a name: the proxy resolves it.
      const host = dst.name ?? dst.ip;
      const key = `${host}:${dst.port}`;
      if (key !== this.lastDst) {
        this.lastHeader = emitUdpHeader({ host, port: dst.port });
        this.lastDst = key;
      }
      this.lastDstRef = dst;
    }
    const h = this.lastHeader;
    // One copy: the caller's bytes are a view into a reused buffer, and dgram sends later.
    const frame = Buffer.allocUnsafe(h.length + payload.length);
    h.copy(frame, 0);
    frame.set(payload, h.length);
    this.udp.send(frame);
    s.datagramsUp++;
    s.bytesUp += payload.length;
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.control.removeListener('close', this.onControlClose);
    this.control.destroy();
    this.udp.removeListener('message', this.onMessage);
    this.udp.close();
    for (const cb of this.closeListeners.splice(0)) cb();
  }

  private readonly onMessage = (msg: Buffer): void => {
    const s = this.stats;
    // RSV 0 0, FRAG 0 (no SOCKS fragmentation), ATYP 1 (IPv4): 10 header bytes.
    if (msg.length < 10 || msg[0] !== 0 || msg[1] !== 0 || msg[2] !== 0 || msg[3] !== 1 || this.handlers === undefined) {
      s.dropped++;
      return;
    }
    const data = msg.subarray(10);
    s.datagramsDown++;
    s.bytesDown += data.length;
    this.handlers.message(data, { ip: `${msg[4]}.${msg[5]}.${msg[6]}.${msg[7]}`, port: (msg[8] << 8) | msg[9] });
  };

  private readonly onUdpError = (err: NodeJS.ErrnoException): void => {
    if (this.closed) return;
    // ICMP errors about what we sent, relayed by the proxy (dante) or from the relay port.
    if (err.code === 'ECONNREFUSED') return this.handlers?.unreachable?.('refused');
    if (err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH') return this.handlers?.unreachable?.('unreachable');
    this.end(new UpstreamError('proxy_down', this.name, `UDP relay socket to ${this.relay.ip}:${this.relay.port} failed: ${err.code ?? err.message}`, err));
  };

  private readonly onControlClose = (): void => {
    this.end(new UpstreamError('proxy_down', this.name, `the SOCKS5 proxy closed the UDP ASSOCIATE control connection (relay ${this.relay.ip}:${this.relay.port})`));
  };

  private end(err: UpstreamError): void {
    if (this.closed) return;
    this.close();
    this.stats.lost++;
    if (this.logger?.isLevelEnabled('debug') === true) this.logger.debug({ outbound: this.name, relay: this.relay }, err.message);
    this.handlers?.closed(err);
  }
}

/**
 * The SOCKS5 outbound with UDP: CONNECT as Socks5Outbound, plus `openUdp` (UDP ASSOCIATE).
 * The composition root builds this one wherever it built a Socks5Outbound.
 */
export class Socks5UdpOutbound extends Socks5Outbound {
  private readonly udpOpts: Socks5UdpOptions;
  private readonly udpStats: UdpOutboundStats = newUdpOutboundStats();
  private readonly live = new Set<Socks5UdpAssociation>();
  private readonly opening = new Set<AbortController>();
  private udpClosed = false;

  constructor(opts: Socks5OutboundOptions & { readonly udpTimeoutMs?: number }) {
    super(opts);
    this.stats.udp = this.udpStats;
    this.udpOpts = {
      name: opts.name,
      proxy: opts.proxy,
      timeoutMs: opts.udpTimeoutMs ?? opts.connectTimeoutMs ?? SOCKS5_UDP_DEFAULT_TIMEOUT_MS,
      logger: opts.logger,
      stats: this.udpStats,
      // The TCP side's connector: one deadline sweep and one pipelining verdict per proxy.
      connector: this.connector,
    };
  }

  /** Associations open now. */
  get udpAssociations(): number {
    return this.live.size;
  }

  async openUdp(opts: UdpOpenOptions = {}): Promise<Socks5UdpAssociation> {
    if (this.udpClosed) {
      this.udpStats.attempts++;
      this.udpStats.failures.aborted++;
      throw new UpstreamError('aborted', this.name, `UDP ASSOCIATE via ${formatSocks5Url(this.udpOpts.proxy)}: outbound '${this.name}' is closed`);
    }
    // Our own controller, so that close() can abort what is still opening.
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(opts.signal?.reason);
    if (opts.signal?.aborted === true) ctl.abort(opts.signal.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    this.opening.add(ctl);
    try {
      const a = await openSocks5UdpAssociation(this.udpOpts, { signal: ctl.signal, timeoutMs: opts.timeoutMs });
      if (this.udpClosed) {
        a.close();
        throw new UpstreamError('aborted', this.name, `outbound '${this.name}' was closed`);
      }
      this.live.add(a);
      a.onceClosed(() => this.live.delete(a));
      return a;
    } finally {
      this.opening.delete(ctl);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  override async close(): Promise<void> {
    this.udpClosed = true;
    for (const ctl of [...this.opening]) ctl.abort(new Error('outbound closed'));
    for (const a of [...this.live]) a.close();
    await super.close();
  }
}
