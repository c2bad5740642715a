/**
 * The route plan: a pure description of every change `up` makes to the host, and its exact
 * inverse for `down`. Nothing here runs a command, so `--dry-run`, `check` and the tests see
 * the same plan that `apply` executes.
 */
import { parseCidr, u32ToIp } from '../wire/ipv4.js';
import type { Config } from '../config/schema.js';
import { computeRouteSet, type Prefix } from './cidr-set.js';

export type RouteOp =
  | { op: 'addr-add'; dev: string; cidr: string }
  | { op: 'link-set'; dev: string; mtu: number; txqueuelen: number }
  | { op: 'link-up'; dev: string }
  | { op: 'route-add'; dev: string; cidr: string };

export interface RoutePlan {
  dev: string;
  /** Applied in order by `up`. */
  up: RouteOp[];
  /** The inverse of `up`, in reverse order; safe to run when only part of `up` was applied. */
  down: RouteOp[];
  /** The prefixes that enter the device, after merging and excluding. */
  prefixes: Prefix[];
}

function prefixToString(p: Prefix): string {
  return `${u32ToIp(p.addr)}/${p.prefix}`;
}

function mustParse(cidr: string): Prefix {
  const p = parseCidr(cidr);
  // The schema validated every CIDR already; reaching this is a bug, not a user error.
  if (!p) throw new Error(`unvalidated CIDR reached the planner: ${cidr}`);
  return p;
}

export function planUp(config: Config): RoutePlan {
  const dev = config.tun.name;
  const prefixes = computeRouteSet(config.routes.include.map(mustParse), config.routes.exclude.map(mustParse));
  const up: RouteOp[] = [
    { op: 'link-set', dev, mtu: config.tun.mtu, txqueuelen: config.tun.txqueuelen },
    { op: 'addr-add', dev, cidr: config.tun.address },
    { op: 'link-up', dev },
    ...prefixes.map((p): RouteOp => ({ op: 'route-add', dev, cidr: prefixToString(p) })),
  ];
  return { dev, up, down: invert(up), prefixes };
}

/**
 * What undoes each op. Link settings need no undo: the TUN device is not persistent and
 * vanishes with its file descriptor, taking its address with it; routes are deleted explicitly
 * first so the host never holds a route to a device that is going away.
 */
export function invert(ops: readonly RouteOp[]): RouteOp[] {
  const out: RouteOp[] = [];
  for (let i = ops.length - 1; i >= 0; i--) {
    const o = ops[i]!;
    if (o.op === 'route-add') out.push({ op: 'route-add', dev: o.dev, cidr: o.cidr });
  }
  return out;
}

/** One iproute2 batch line per op (`ip -batch -` syntax). */
export function toIpBatch(ops: readonly RouteOp[], mode: 'apply' | 'undo'): string[] {
  return ops.map((o) => {
    switch (o.op) {
      case 'link-set':
        return `link set dev ${o.dev} mtu ${o.mtu} txqueuelen ${o.txqueuelen}`;
      case 'addr-add':
        return `address ${mode === 'apply' ? 'add' : 'del'} ${o.cidr} dev ${o.dev}`;
      case 'link-up':
        return `link set dev ${o.dev} ${mode === 'apply' ? 'up' : 'down'}`;
      case 'route-add':
        return `route ${mode === 'apply' ? 'add' : 'del'} ${o.cidr} dev ${o.dev}`;
    }
  });
}

/** The plan as a person reads it (`--dry-run`, `check`). */
export function describePlan(plan: RoutePlan): string {
  const lines = [`device ${plan.dev}:`];
  for (const o of plan.up) {
    switch (o.op) {
      case 'link-set':
        lines.push(`  set mtu ${o.mtu}, txqueuelen ${o.txqueuelen}`);
        break;
      case 'addr-add':
        lines.push(`  add address ${o.cidr}`);
        break;
      case 'link-up':
        lines.push('  bring the device up');
        break;
      case 'route-add':
        break;
    }
  }
  const routes = plan.up.filter((o) => o.op === 'route-add');
  lines.push(routes.length === 0 ? 'routes: none (only the device\'s own subnet enters it)' : `routes into ${plan.dev} (${routes.length}):`);
  for (const o of routes) lines.push(`  + ${o.cidr}`);
  lines.push('on exit: the routes above are deleted and the device is removed.');
  return lines.join('\n');
}
