/**
 * `tunroute up` as a daemon: the running instance (app.ts `startTunroute`) plus what only the
 * command has: the control socket, the dashboard, the privilege drop once everything that needs
 * root is done, SIGHUP as a reload, and the wait for SIGINT/SIGTERM.
 */
import { userInfo } from 'node:os';
import type { Config } from './config/schema.js';
import { loadConfig, parseConfigInput, type FlagValues } from './config/load.js';
import { TunrouteError } from './errors.js';
import { createLogger, resolveLogFormat, type Logger } from './logger.js';
import { dropPrivileges, resolveRunAs } from './privileges.js';
import { resolveStateDir } from './routes/journal.js';
import { describePlanLines } from './routes/plan.js';
import { cidrToString } from './net/ipv4.js';
import { runUntilSignal } from './run-until-signal.js';
import { TUNROUTE_VERSION } from './version.js';
import { upSummary } from './up-summary.js';
import { DEFAULT_CONTROL_PATH, startControlServer, statusSnapshotOf } from './control/index.js';
import { MAX_RELOAD_REQUEST_BYTES } from './control/protocol.js';
import type { ApiSource, LogTap } from './api/index.js';
import { buildRouter, startTunroute, type RunningTunroute } from './app.js';
import { describeReload } from './reconfigure.js';

/** What the dashboard and the Clash API read from a running `up` (src/api/source.ts). */
export function upApiSource(up: RunningTunroute, config: Config, info: { startedAt: Date }): ApiSource {
  const snapshot = (): ReturnType<ApiSource['snapshot']> =>
    statusSnapshotOf(up, { version: TUNROUTE_VERSION, address: cidrToString(config.tun.address), startedAt: info.startedAt });
  const defaultOutbound = buildRouter(up.config).defaultOutbound;
  return {
    role: 'up',
    version: TUNROUTE_VERSION,
    startedAt: info.startedAt,
    logLevel: config.log.level,
    snapshot,
    flows: () => up.flows(),
    udpFlows: () => up.udpFlows(),
    counters: () => {
      const s = up.stats();
      const tunnels = Object.values(s.tunnels);
      const f = up.routeFollows();
      return {
        bytesUp: s.tcp.bytesUp + s.udp.relay.bytesUp + tunnels.reduce((n, t) => n + t.txBytes, 0),
        bytesDown: s.tcp.bytesDown + s.udp.relay.bytesDown + tunnels.reduce((n, t) => n + t.rxBytes, 0),
        routeReplans: f.replans,
        routeChanges: f.added + f.removed,
        handshakes: tunnels.reduce((n, t) => n + t.peers.reduce((m, p) => m + p.counters.handshakesCompleted, 0), 0),
      };
    },
    outbounds: () => up.outbounds(),
    outboundStats: () => up.stats().outbounds,
    rules: () => ({ rules: up.config.rules, defaultOutbound }),
    closeFlow: (proto, id) => up.closeFlow(proto, id),
    planLines: () => [...describePlanLines(up.plan)],
    why: (addr, proto) => up.why(addr, proto),
    dnsAnswers: () => up.dnsAnswers(),
  };
}

/** Where `up`'s config came from: what SIGHUP reads again, and what `tunroute reload` asks for. */
export interface ConfigSource {
  /** The config file, absolute. */
  readonly file?: string;
  readonly flags: FlagValues;
}

/**
 * SIGHUP: read the config again and reload. After the start the process is no longer root and
 * may not read root's files: then it says so in one sentence, and `tunroute reload` (run as
 * root) is the way; the running config stays either way.
 */
async function reloadFromFiles(up: RunningTunroute, source: ConfigSource, log: Logger): Promise<void> {
  let next: Config;
  try {
    next = loadConfig({ file: source.file, flags: source.flags, log });
  } catch (e) {
    const denied = e instanceof TunrouteError && /\((EACCES|EPERM)\)/.test(e.message);
    if (denied) log.error({ file: source.file }, `SIGHUP: this process (user ${userName()}) may not read the config or a file it names, since it gave up root after start: run \`sudo tunroute reload\`, which reads them as root; the running config stays`);
    else log.error({ err: e }, `SIGHUP: the new config is refused (${e instanceof Error ? e.message : String(e)}); the running config stays`);
    return;
  }
  try {
    await up.reload(next);
  } catch (e) {
    const denied = e instanceof TunrouteError && /\((EACCES|EPERM)\)/.test(e.message);
    if (denied) log.error({ file: source.file }, `SIGHUP: this process (user ${userName()}) may not read a file the config names, since it gave up root after start: run \`sudo tunroute reload\`, which reads them as root; the running config stays`);
    else log.error({ err: e }, `SIGHUP: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function userName(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '?');
  }
}

/** `tunroute up`: run until SIGINT or SIGTERM (SIGHUP reloads), then give the host back as it was. */
export async function runUp(config: Config, source: ConfigSource = { flags: {} }): Promise<void> {
  const log = createLogger(config.log.level, config.log.format);
  const startedAt = new Date();
  // The dashboard's module is loaded only when it is enabled; its log tap sees the start lines.
  const api = config.ui.listen === undefined ? undefined : await import('./api/index.js');
  const logTap: LogTap | undefined = api?.startLogTap(log);
  // The device first: its errors (not root, no /dev/net/tun, name taken) are the ones a user
  // needs to see. A control socket already served by another tunroute then undoes this one.
  const runAs = resolveRunAs(config, log);
  const up = await startTunroute(config, { logger: log, runAs });
  let control: Awaited<ReturnType<typeof startControlServer>>;
  try {
    control = await startControlServer({
      path: config.control.socket,
      logger: log,
      snapshot: () => statusSnapshotOf(up, { version: TUNROUTE_VERSION, address: cidrToString(config.tun.address), startedAt }),
      flows: () => up.flows(),
      probes: up.probes,
      fakeIp: (arg) => up.fakeIpEntry(arg),
      maxRequestBytes: MAX_RELOAD_REQUEST_BYTES,
      source: () => ({ ...(source.file === undefined ? {} : { file: source.file }), flags: { ...source.flags }, cwd: process.cwd() }),
      reload: async (input, files) => ({ summary: describeReload(await up.reload(parseConfigInput(input), files)) }),
    });
  } catch (e) {
    await up.stop();
    throw e;
  }
  // The dashboard and API (off unless ui.listen): its secret file is written now, as root.
  let ui: Awaited<ReturnType<NonNullable<typeof api>['startUi']>> | undefined;
  try {
    ui = await api?.startUi({ ui: config.ui, stateDir: resolveStateDir(config.stateDir), source: upApiSource(up, config, { startedAt }), logger: log, logs: logTap });
  } catch (e) {
    await control.close();
    await up.stop();
    throw e;
  }
  // Everything that needs root is done: the device is open, the routes are in, the control
  // socket and the dashboard listen. From here on, packets are carried without root.
  if (runAs !== undefined) {
    try {
      dropPrivileges(runAs, log);
    } catch (e) {
      await ui?.close();
      await control.close();
      await up.stop();
      throw e;
    }
  }
  const summary = upSummary(up.config, up.plan);
  log.info(
    {
      dev: up.link.name,
      mtu: up.link.mtu,
      address: cidrToString(config.tun.address),
      routes: up.plan.prefixes.length,
      mode: summary.mode,
      outbounds: summary.outbounds,
      defaultOutbound: summary.defaultOutbound,
      control: config.control.socket,
      ...(ui === undefined ? {} : { ui: `${ui.url}/ui/` }),
    },
    'tunroute is up',
  );
  // For a person at the terminal, the same in words; JSON lines carry it as the fields above.
  if (resolveLogFormat(config.log.format) === 'pretty') {
    for (const l of summary.lines) log.info(`  ${l}`);
    if (ui !== undefined) log.info(`  dashboard: ${ui.url}/ui/`);
    log.info(`  watch it: tunroute status --watch${config.control.socket === DEFAULT_CONTROL_PATH ? '' : ` --control ${config.control.socket}`}`);
  }
  const onHup = (): void => {
    log.info('SIGHUP: reloading the config');
    void reloadFromFiles(up, source, log);
  };
  process.on('SIGHUP', onHup);
  await runUntilSignal({
    logger: log,
    failure: 'teardown failed',
    stop: async () => {
      await ui?.close();
      await control.close();
      await up.stop();
    },
  });
  process.off('SIGHUP', onHup);
}
