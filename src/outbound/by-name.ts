import { BLOCK_OUTBOUND } from '../config/schema.js';
import { UpstreamError, type ConnectOptions, type Destination, type Outbound, type TcpUpstream, type UdpOpenOptions, type UdpUpstream } from './outbound.js';

/**
 * An outbound found by name at each use, for the one user built once that must follow a reload
 * or a new upstream address: the DNS resolver (the relays look outbounds up per flow anyway).
 */
export function outboundByName(name: string, outbounds: ReadonlyMap<string, Outbound>): Outbound {
  const now = (): Outbound => outbounds.get(name) ?? outbounds.get(BLOCK_OUTBOUND)!;
  return {
    name,
    get kind() {
      return now().kind;
    },
    get stats() {
      return now().stats;
    },
    connectTcp: (dst: Destination, opts?: ConnectOptions): Promise<TcpUpstream> => now().connectTcp(dst, opts),
    openUdp: (opts?: UdpOpenOptions): Promise<UdpUpstream> => {
      const o = now();
      return o.openUdp === undefined ? Promise.reject(new UpstreamError('protocol', name, 'this outbound carries no UDP')) : o.openUdp(opts);
    },
    // The engine closes the outbounds themselves.
    close: () => Promise.resolve(),
  };
}
