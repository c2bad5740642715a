/**
 * A running tunroute changed in place: a reload (a new config), an upstream whose address moved
 * (a network change), a WireGuard endpoint name that now resolves elsewhere. Each changes the
 * routes (journal first), the outbounds and the rules without a restart; flows whose outbound
 * stays keep running, the others are reset so their apps reconnect at once instead of hanging.
 *
 * One queue runs these in the order they were asked, so two reloads, or a reload and a
 * re-resolved endpoint, never interleave their route changes.
 */
import type { Config } from './config/schema.js';
import { diffConfigs, type ReloadDiff } from './config/reload-diff.js';
import { expandTunnels, tunnelSpecsOf } from './config/tunnels.js';
import { TunrouteError } from './errors.js';
import type { Logger } from './logger.js';
import type { Outbound } from './outbound/outbound.js';
import type { TerminatingEngine } from './relay/engine.js';
import type { FlowFacts } from './relay/tcp-relay.js';
import type { RouteManager } from './routes/manager.js';
import type { HostProbe } from './routes/host.js';
import type { UpstreamChange } from './routes/net-change.js';
import type { Router } from './router/router.js';
import { formatKey } from './wireguard/keys.js';
import type { WireguardTunnel } from './wireguard/client-tunnel.js';

export interface ReloadSummary {
  readonly diff: ReloadDiff;
  readonly routes: { readonly added: number; readonly removed: number };
  /** Flows reset because their outbound was removed or changed, or the rules now send them elsewhere. */
  readonly reset: { readonly tcp: number; readonly udp: number };
}

/** One line for logs and for `tunroute reload`'s answer. */
export function describeReload(r: ReloadSummary): string {
  const o = r.diff.outbounds;
  if (!r.diff.any) return 'config unchanged: nothing to do';
  const parts = [
    `routes +${r.routes.added} -${r.routes.removed}`,
    ...(o.added.length > 0 ? [`outbounds added: ${o.added.join(', ')}`] : []),
    ...(o.removed.length > 0 ? [`removed: ${o.removed.join(', ')}`] : []),
    ...(o.changed.length > 0 ? [`changed: ${o.changed.join(', ')}`] : []),
    ...(r.diff.rules ? ['rules replaced'] : []),
    `${r.reset.tcp} TCP and ${r.reset.udp} UDP flows reset, the others kept`,
  ];
  return `reloaded: ${parts.join('; ')}`;
}

/** How a config becomes outbounds and a router: app.ts's builders, handed in (no import cycle). */
export interface Builders {
  outbounds(config: Config): Map<string, Outbound>;
  router(config: Config): Router;
}

export interface ReconfigureParts {
  readonly routes: RouteManager;
  /** The live outbounds the relays look up per new flow: replaced in place. */
  readonly outbounds: Map<string, Outbound>;
  readonly engine: TerminatingEngine;
  readonly tunnels: ReadonlyMap<string, WireguardTunnel>;
  readonly build: Builders;
  readonly log: Logger;
  readonly resolve?: HostProbe['resolve'];
}

/**
 * The rules in force, read per new flow. A reload swaps the router inside; the engine and the
 * DNS set-up keep calling the same functions.
 */
export class LiveRouter {
  constructor(public router: Router) {}
  readonly route = (dst: number, proto: number, port: number): string => this.router.route(dst, proto, port);
  readonly routeName = (name: string, proto: number, port: number): string | undefined => this.router.routeName(name, proto, port);
}

export class Reconfigurer {
  /** The config as it runs (tunnels expanded, endpoints pinned). */
  private running: Config;
  /** The config as given (tunnel endpoints by name): what a network change resolves again. */
  private given: Config;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly p: ReconfigureParts,
    private readonly live: LiveRouter,
    running: Config,
    given: Config,
  ) {
    this.running = running;
    this.given = given;
  }

  /**
   * Apply a new config: only the difference. Throws a TunrouteError with one sentence, and
   * changes nothing, when the config is refused. One at a time, in the order asked.
   */
  reload(input: Config, files?: ReadonlyMap<string, string>): Promise<ReloadSummary> {
    return this.enqueue(() => this.apply(input, files));
  }

  /**
   * A network change: an upstream whose source address changed has dead connections (RST them,
   * the apps reconnect at once instead of hanging); one whose name now resolves elsewhere is
   * rebuilt to connect there.
   */
  upstreamsMoved(changes: readonly UpstreamChange[], pinned: Config): void {
    const { outbounds, build, log } = this.p;
    const rebuilt = build.outbounds(pinned);
    const fresh = new Map<string, Outbound | undefined>();
    const movedOnly: Outbound[] = [];
    for (const c of changes) {
      const o = outbounds.get(c.upstream);
      if (o === undefined) continue; // a WireGuard tunnel: it roams by itself
      if (c.readdressed) fresh.set(c.upstream, rebuilt.get(c.upstream));
      else movedOnly.push(o);
    }
    for (const [n, o] of rebuilt) if (!fresh.has(n)) void o.close();
    const reset = this.swap(fresh, (f) => movedOnly.includes(f.outbound));
    if (reset.tcp + reset.udp > 0) log.info({ upstreams: changes.map((c) => c.upstream), ...reset }, 'flows through a moved upstream reset');
  }

  /**
   * A WireGuard endpoint given by name that now resolves elsewhere: keep the new address out of
   * the device instead of the old one (routes, journal first), then send the tunnel there.
   */
  async resolveAgain(): Promise<void> {
    const byName = this.given.outbounds.some((o) => o.type === 'wireguard' && o.peers.some((p) => p.endpoint?.kind === 'name'));
    if (!byName) return;
    const again = (await expandTunnels(this.given, this.p.resolve)).config;
    const endpointOf = (c: Config): Map<string, string> =>
      new Map(tunnelSpecsOf(c).flatMap((t) => t.peers.map((p): [string, string] => [`${t.name} ${formatKey(p.publicKey)}`, p.endpoint === undefined ? '' : `${p.endpoint.address}:${p.endpoint.port}`])));
    const was = endpointOf(this.running);
    const moved = [...endpointOf(again)].filter(([k, ep]) => was.get(k) !== ep && ep !== '');
    if (moved.length === 0) return;
    await this.enqueue(async () => {
      const { routes, tunnels, log } = this.p;
      await routes.reconfigure(again);
      this.running = again;
      for (const [k, ep] of moved) {
        const [tunnel, key] = k.split(' ');
        const [address, port] = ep.split(':');
        tunnels.get(tunnel)?.setPeerEndpoint(key, { address, port: Number(port) });
        routes.noteEvent('upstream', `tunnel ${tunnel} peer ${key.slice(0, 8)}… is now ${ep}`);
        log.info({ tunnel, peer: key, endpoint: ep }, `tunnel ${tunnel}: its endpoint name now resolves to ${ep}; the tunnel sends there, and that address is kept out of the device`);
      }
    });
  }

  private enqueue<T>(step: () => Promise<T>): Promise<T> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async apply(input: Config, files?: ReadonlyMap<string, string>): Promise<ReloadSummary> {
    const { routes, build, log } = this.p;
    const expandedNext = await expandTunnels(input, this.p.resolve);
    const next = expandedNext.config;
    const verdict = diffConfigs(this.running, next);
    if (!verdict.ok) throw new TunrouteError('TR_BAD_CONFIG', `Reload refused: ${verdict.reason}.`);
    const diff = verdict.diff;
    // Everything that can fail first (rules that do not build, routes that do not plan or apply), then the swap.
    const nextRouter = diff.rules ? build.router(next) : this.live.router;
    let routeChange = { added: 0, removed: 0 };
    let pinned = routes.config;
    if (diff.routes || diff.outbounds.added.length + diff.outbounds.removed.length + diff.outbounds.changed.length > 0) {
      const r = await routes.reconfigure(next, files);
      pinned = r.config;
      routeChange = { added: r.added, removed: r.removed };
    }
    const built = build.outbounds(pinned);
    const fresh = new Map<string, Outbound | undefined>();
    for (const n of [...diff.outbounds.added, ...diff.outbounds.changed]) fresh.set(n, built.get(n));
    for (const n of diff.outbounds.removed) fresh.set(n, undefined);
    for (const [n, o] of built) if (!fresh.has(n)) void o.close();
    this.live.router = nextRouter;
    const router = nextRouter;
    const routedElsewhere = (f: FlowFacts): boolean => {
      if (!diff.rules) return false;
      const proto = f.protocol;
      const now = (f.host === undefined ? undefined : router.routeName(f.host, proto, f.dstPort)) ?? router.route(f.dstIp, proto, f.dstPort);
      return now !== f.outbound.name;
    };
    const reset = this.swap(fresh, routedElsewhere);
    if (next.log.level !== this.running.log.level) log.level = next.log.level;
    this.running = next;
    this.given = input;
    for (const note of expandedNext.notes) log.warn(note);
    const summary: ReloadSummary = { diff, routes: routeChange, reset };
    routes.noteEvent('reload', describeReload(summary));
    log.info({ routes: routeChange, outbounds: diff.outbounds, rules: diff.rules, reset }, describeReload(summary));
    return summary;
  }

  /** Put `fresh` in place of the outbounds named, reset the flows `dead` picks, then close what was replaced. */
  private swap(fresh: ReadonlyMap<string, Outbound | undefined>, dead: (f: FlowFacts) => boolean): { tcp: number; udp: number } {
    const { outbounds, engine } = this.p;
    const old: Outbound[] = [];
    for (const [name, o] of fresh) {
      const was = outbounds.get(name);
      if (was !== undefined) old.push(was);
      if (o === undefined) outbounds.delete(name);
      else outbounds.set(name, o);
    }
    const reset = engine.resetFlows((f) => old.includes(f.outbound) || dead(f));
    for (const o of old) void o.close();
    return reset;
  }
}
