/**
 * The composition root: the only place that builds the real TUN link, the route runner, the
 * logger and the clock. Everything below receives them, so tests pass fakes. `startTunroute`
 * is also the embedding API for other Node programs.
 */
import type { Config } from './config/schema.js';
import { createLogger, type Logger } from './logger.js';
import type { Link } from './link/link.js';
import { planUp, type RoutePlan } from './routes/plan.js';
import { applyPlan, removePlan, ipBatchRunner, type IpRunner } from './routes/apply.js';
import { PacketDispatcher, type DispatcherStats } from './stack/dispatcher.js';

export interface TunrouteDeps {
  logger?: Logger;
  /** Opens the device; the default opens the real TUN through the native addon. */
  openLink?: (config: Config, logger: Logger) => Promise<Link>;
  ipRunner?: IpRunner;
}

export interface RunningTunroute {
  readonly link: Link;
  readonly plan: RoutePlan;
  stats(): DispatcherStats;
  /** Removes the routes this instance added, then closes the device. Idempotent. */
  stop(): Promise<void>;
}

async function openTunLink(config: Config, logger: Logger): Promise<Link> {
  const { TunLink } = await import('./link/tun.js');
  return TunLink.open({ name: config.tun.name, mtu: config.tun.mtu, logger });
}

export async function startTunroute(config: Config, deps: TunrouteDeps = {}): Promise<RunningTunroute> {
  const log = deps.logger ?? createLogger(config.log.level);
  const runner = deps.ipRunner ?? ipBatchRunner;
  const link = await (deps.openLink ?? openTunLink)(config, log);
  const plan = planUp(config);
  try {
    await applyPlan(plan, runner, log);
  } catch (e) {
    link.close();
    throw e;
  }
  const dispatcher = new PacketDispatcher({ link, icmp: config.icmp, logger: log });
  link.onReceive((batch) => dispatcher.onBatch(batch));
  log.info({ dev: link.name, mtu: link.mtu, address: config.tun.address, routes: plan.prefixes.length }, 'tunroute is up');

  let stopping: Promise<void> | undefined;
  return {
    link,
    plan,
    stats: () => dispatcher.stats(),
    stop() {
      stopping ??= (async () => {
        await removePlan(plan, runner, log);
        link.close();
        log.info({ link: link.stats, ...dispatcher.stats() }, 'tunroute stopped; packet counters');
      })();
      return stopping;
    },
  };
}

/** `tunroute up`: run until SIGINT or SIGTERM, then give the host back as it was. */
export async function runUp(config: Config): Promise<void> {
  const log = createLogger(config.log.level);
  const running = await startTunroute(config, { logger: log });
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      log.info({ signal: sig }, 'stopping');
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      running.stop().then(resolve, (e: unknown) => {
        log.error({ err: e }, 'teardown failed');
        process.exitCode = 1;
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
