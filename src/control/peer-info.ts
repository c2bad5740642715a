/**
 * What `status` shows of a WireGuard peer and of drop counters, built the same way for a
 * tunnel of `tunroute up` and for `tunroute server` (their peers' counters differ only in
 * where the drops are kept, so the caller passes those).
 */
import type { TunnelPeerInfo } from './protocol.js';

/** The fields every peer status has, whichever side it comes from. */
export interface PeerLike {
  publicKey: string;
  allowedIPs: string[];
  endpoint?: string;
  lastHandshakeAgoMs?: number;
  counters: { rxBytes: number; txBytes: number };
}

/** Only the counters that are not zero, summed over the groups by name. */
export function nonZeroCounts(...groups: Partial<Record<string, number>>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const g of groups) for (const [k, v] of Object.entries(g)) if (v !== undefined && v > 0) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** A peer as `status` lists it; `drops` are its non-zero drop counters. */
export function peerInfoOf(p: PeerLike, drops: Record<string, number>): TunnelPeerInfo {
  return {
    publicKey: p.publicKey,
    allowedIPs: p.allowedIPs,
    ...(p.endpoint === undefined ? {} : { endpoint: p.endpoint }),
    ...(p.lastHandshakeAgoMs === undefined ? {} : { lastHandshakeAgoMs: p.lastHandshakeAgoMs }),
    rxBytes: p.counters.rxBytes,
    txBytes: p.counters.txBytes,
    drops,
  };
}
