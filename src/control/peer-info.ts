/**
 * What `status` shows of a WireGuard peer and of drop counters, built the same way for a
 * tunnel of `tunroute up` and for `tunroute server` (both run on the one tunnel runtime).
 */
import type { TunnelPeerStatus } from '../wireguard/runtime.js';
import type { TunnelPeerInfo } from './protocol.js';

/** Only the counters that are not zero, summed over the groups by name. */
export function nonZeroCounts(...groups: Partial<Record<string, number>>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const g of groups) for (const [k, v] of Object.entries(g)) if (v !== undefined && v > 0) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** A peer as `status` lists it, with its non-zero drop counters. */
export function peerInfoOf(p: TunnelPeerStatus): TunnelPeerInfo {
  return {
    publicKey: p.publicKey,
    allowedIPs: p.allowedIPs,
    ...(p.endpoint === undefined ? {} : { endpoint: p.endpoint }),
    ...(p.lastHandshakeAgoMs === undefined ? {} : { lastHandshakeAgoMs: p.lastHandshakeAgoMs }),
    rxBytes: p.counters.rxBytes,
    txBytes: p.counters.txBytes,
    drops: nonZeroCounts(p.dropped),
  };
}
