/**
 * The outbound that carries nothing: every connect rejects with reason 'not_allowed', and the
 * stack answers the app with RST (TCP) or ICMP administratively prohibited (UDP, ICMP).
 */
import {
  UpstreamError,
  newOutboundStats,
  type ConnectOptions,
  type Destination,
  type Outbound,
  type OutboundStats,
  type TcpUpstream,
} from './outbound.js';

export class BlockOutbound implements Outbound {
  readonly kind = 'block' as const;
  readonly stats: OutboundStats = newOutboundStats();

  constructor(readonly name: string = 'block') {}

  connectTcp(dst: Destination, _opts?: ConnectOptions): Promise<TcpUpstream> {
    this.stats.tcpAttempts++;
    this.stats.tcpFailures.not_allowed++;
    return Promise.reject(
      new UpstreamError('not_allowed', this.name, `${dst.ip}:${dst.port} is blocked by outbound '${this.name}'`),
    );
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
