/**
 * UDP sent straight out of one interface of this host, past the routes tunroute added: how
 * tunroute itself asks the system's resolver in a split tunnel by domain (dns.mode fakeip with
 * routes.includeDomains). The plan routes that resolver's address into tun0 so that every app's
 * query reaches tunroute; tunroute's own query for a name that goes direct must still reach the
 * resolver the host's way. A socket bound to the default route's device (SO_BINDTODEVICE, see
 * native/udp.c) makes the kernel skip routes through any other device, tun0's among them, so
 * the lookup falls back to the host's own route to the resolver.
 *
 * UDP only: node:net cannot bind a TCP socket to a device, so connectTcp refuses ('protocol')
 * and a DNS answer too large for UDP reaches the app truncated (it may retry over TCP, which
 * tunroute then answers through its own resolver).
 */
import { TunrouteError } from '../errors.js';
import type { Logger } from '../logger.js';
import { tryLoadNativeUdp } from '../native/udp.js';
import { NativeUdpTransport } from '../wireguard/native-udp-transport.js';
import {
  UpstreamError,
  newOutboundStats,
  newUdpOutboundStats,
  type Destination,
  type Outbound,
  type OutboundStats,
  type TcpUpstream,
  type UdpUpstream,
  type UdpUpstreamHandlers,
} from './outbound.js';

export interface DeviceBoundOutboundOptions {
  readonly name: string;
  /** The interface each new socket is bound to (the default route's device, as it is now); undefined: none. */
  readonly device: () => string | undefined;
  readonly logger?: Logger;
}

export class DeviceBoundUdpOutbound implements Outbound {
  readonly name: string;
  readonly kind = 'direct' as const;
  readonly stats: OutboundStats = { ...newOutboundStats(), udp: newUdpOutboundStats() };
  private readonly device: () => string | undefined;
  private readonly log: Logger | undefined;
  private readonly open = new Set<UdpUpstream>();
  private closed = false;

  constructor(o: DeviceBoundOutboundOptions) {
    this.name = o.name;
    this.device = o.device;
    this.log = o.logger;
  }

  connectTcp(dst: Destination): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    this.stats.tcpFailures.protocol++;
    return Promise.reject(new UpstreamError('protocol', this.name, `TCP to ${dst.ip}:${dst.port} out of the default route's device is not supported (UDP only)`));
  }

  openUdp(): Promise<UdpUpstream> {
    const udp = this.stats.udp!;
    udp.attempts++;
    if (this.closed) {
      udp.failures.aborted++;
      return Promise.reject(new UpstreamError('aborted', this.name, 'closed'));
    }
    const device = this.device();
    if (device === undefined) {
      udp.failures.unreachable++;
      return Promise.reject(new UpstreamError('unreachable', this.name, 'no default route: the system resolver cannot be reached directly'));
    }
    const native = tryLoadNativeUdp();
    if (native === undefined) {
      udp.failures.protocol++;
      return Promise.reject(new UpstreamError('protocol', this.name, 'the native addon is not built (npm run build): no socket bound to a device'));
    }
    let t: NativeUdpTransport;
    try {
      t = NativeUdpTransport.open(native, {
        device,
        bufferBytes: 0,
        maxBatch: 16,
        receiveBatch: 16,
        maxDatagramBytes: 65535,
        onError: (e) => this.log?.debug({ device, err: e.message }, 'direct DNS socket error'),
        bindError: (e) => new TunrouteError('TR_UPSTREAM', `Cannot bind a UDP socket to ${device} (${e.code ?? e.message}) for DNS to the system resolver: tunroute needs root (CAP_NET_RAW).`, e),
      });
    } catch (e) {
      udp.failures.not_allowed++;
      return Promise.reject(new UpstreamError('not_allowed', this.name, e instanceof Error ? e.message : String(e), e));
    }
    udp.established++;
    let handlers: UdpUpstreamHandlers | undefined;
    const open = this.open;
    const assoc: UdpUpstream = {
      relay: { ip: '0.0.0.0', port: t.port },
      setHandlers(h) {
        handlers = h;
      },
      send(dst, payload) {
        // The transport keeps the bytes until its flush (a microtask): give it its own copy.
        const ok = t.send(payload.slice(), { address: dst.ip, port: dst.port });
        if (ok) {
          udp.datagramsUp++;
          udp.bytesUp += payload.length;
        } else udp.dropped++;
        return ok;
      },
      close() {
        open.delete(assoc);
        t.close();
      },
    };
    t.onMessage((data, from) => {
      udp.datagramsDown++;
      udp.bytesDown += data.length;
      // The view is valid only during this call.
      handlers?.message(data.slice(), { ip: from.address, port: from.port });
    });
    this.open.add(assoc);
    return Promise.resolve(assoc);
  }

  close(): Promise<void> {
    this.closed = true;
    for (const a of [...this.open]) a.close();
    return Promise.resolve();
  }
}
