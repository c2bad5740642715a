/**
 * Whether a config gives `up` anything to do. With no upstream (no proxy, no socks5 or
 * WireGuard outbound) and no route, the plan is empty: the device would come up, carry nothing
 * and say nothing about it. `up` refuses that instead, naming what would give it work.
 */
import { TunrouteError } from '../errors.js';
import type { Config } from './schema.js';

/** An upstream to carry flows or packets, or CIDRs to steer into the device. */
export function hasWork(config: Config): boolean {
  const r = config.routes;
  return config.proxy !== undefined || config.outbounds.some((o) => o.type !== 'block') || r.include.length > 0 || r.includeFiles.length > 0;
}

/** Throws TR_NOTHING_TO_DO (exit 2) for a config with no upstream and no route. */
export function refuseNothingToDo(config: Config): void {
  if (hasWork(config)) return;
  throw new TunrouteError(
    'TR_NOTHING_TO_DO',
    'Nothing to route: give an upstream with --proxy socks5://HOST:PORT (everything goes through it) or --tunnel wg0.conf, or CIDRs to send into the device with --route CIDR (or proxy, outbounds or routes.include in the -c file).',
  );
}
