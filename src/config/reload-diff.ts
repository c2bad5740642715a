/**
 * What a reload changes, pure: the running config and the new one in, the difference out.
 *
 * A reload applies only the difference, without a restart (issue 14): the route plan through the
 * journal, outbounds and rules in place. Flows whose outbound is the same object before and
 * after keep running; flows whose outbound was removed or changed are reset. Some settings are
 * fixed for the life of the device or of its sockets (the device itself, the state dir, the
 * control socket, DNS, the stack's limits, WireGuard tunnels, which own a UDP socket and keys):
 * a reload that changes one of them is refused with a sentence naming the first such field, and
 * the running config stays.
 *
 * Both configs are compared as `up` runs them: after expandTunnels and the fake-IP route, before
 * upstream names are pinned (a name is the same outbound whatever it resolves to today).
 */
import { BLOCK_OUTBOUND, PROXY_OUTBOUND, type Config } from './schema.js';

export interface ReloadDiff {
  /** routes.* changed (or something folded into them): the plan is made again and the difference applied. */
  readonly routes: boolean;
  /** The rules or the default outbound changed: the router is replaced, and flows it now sends elsewhere are reset. */
  readonly rules: boolean;
  readonly outbounds: {
    readonly added: readonly string[];
    readonly removed: readonly string[];
    /** Same name, another definition (URL, credentials, timeout, type): rebuilt, their flows reset. */
    readonly changed: readonly string[];
  };
  /** Whether anything at all changes. */
  readonly any: boolean;
}

export type ReloadVerdict = { readonly ok: true; readonly diff: ReloadDiff } | { readonly ok: false; readonly reason: string };

/** Top-level settings a running instance cannot change; rules, routes, outbounds, proxy and log can. */
const FIXED: ReadonlyArray<keyof Config> = ['tun', 'stateDir', 'user', 'control', 'icmp', 'udp', 'fragments', 'dns', 'tcp'];

type OutboundDef = { readonly type: string } & Record<string, unknown>;

/** The outbounds a config defines, by name, as comparable values (`proxy` included; `block` is built in). */
function outboundDefs(c: Config): Map<string, OutboundDef> {
  const out = new Map<string, OutboundDef>();
  if (c.proxy !== undefined) out.set(PROXY_OUTBOUND, { type: 'socks5', url: c.proxy });
  for (const o of c.outbounds) out.set(o.name, o);
  out.delete(BLOCK_OUTBOUND);
  return out;
}

/** Deep equality of parsed config values (plain data: objects, arrays, numbers, strings). */
export function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function diffConfigs(running: Config, next: Config): ReloadVerdict {
  for (const key of FIXED) {
    if (!sameValue(running[key], next[key])) {
      return { ok: false, reason: `the new config changes "${key}", which only a restart applies (systemctl restart, or tunroute down and up); the running config stays` };
    }
  }
  const was = outboundDefs(running);
  const now = outboundDefs(next);
  const added = [...now.keys()].filter((n) => !was.has(n));
  const removed = [...was.keys()].filter((n) => !now.has(n));
  const changed = [...now.keys()].filter((n) => was.has(n) && !sameValue(was.get(n), now.get(n)));
  for (const n of [...added, ...removed, ...changed]) {
    if (now.get(n)?.type === 'wireguard' || was.get(n)?.type === 'wireguard') {
      return { ok: false, reason: `the new config adds, removes or changes the WireGuard tunnel "${n}", which only a restart applies (its socket and keys are opened at start); the running config stays` };
    }
  }
  const routes = !sameValue(running.routes, next.routes);
  const rules = !sameValue(running.rules, next.rules) || running.defaultOutbound !== next.defaultOutbound || (running.proxy === undefined) !== (next.proxy === undefined);
  const any = routes || rules || added.length + removed.length + changed.length > 0 || !sameValue(running.log, next.log);
  return { ok: true, diff: { routes, rules, outbounds: { added, removed, changed }, any } };
}
