/**
 * Where a new TCP or UDP flow goes: the one decision both relays make at a flow's first packet.
 * A flow to a fake-IP address (dns.mode fakeip) carries the name the address stands for and is
 * routed by it (domain rules first, then its address); any other flow by its address.
 */
import type { FakeIpPool } from '../dns/fake-ip.js';
import type { Router } from '../router/router.js';

export interface FlowRoute {
  /** The outbound's name. */
  readonly outbound: string;
  /** The name a fake-IP destination stands for (the flow goes to it), or undefined. */
  readonly host: string | undefined;
}

/** The router as the relays use it; `routeSource` is per-app routing's source → outbound map. */
export type FlowRouter = Pick<Router, 'route'> & Partial<Pick<Router, 'routeName'>> & { routeSource?(srcIp: number): string | undefined };

/**
 * The route of a flow to dstIp:dstPort with IP protocol `protocol`; undefined for a pool address
 * with no name (an answer from a table we no longer remember): nowhere to go.
 */
export function routeFlow(
  router: FlowRouter,
  names: FakeIpPool | undefined,
  dstIp: number,
  protocol: number,
  dstPort: number,
  srcIp = 0,
): FlowRoute | undefined {
  let host: string | undefined;
  if (names?.contains(dstIp) === true) {
    host = names.nameOf(dstIp);
    if (host === undefined) return undefined;
  }
  // A program run by `tunroute exec --outbound NAME`: its flows come from NAME's own source
  // address (routes/apps.ts), and go to NAME whatever the rules say.
  const bySource = router.routeSource?.(srcIp);
  if (bySource !== undefined) return { outbound: bySource, host };
  const byName = host === undefined ? undefined : router.routeName?.(host, protocol, dstPort);
  return { outbound: byName ?? router.route(dstIp, protocol, dstPort), host };
}
