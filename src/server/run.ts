/**
 * `tunroute server -c FILE`: start the server and its control socket, run until SIGINT or
 * SIGTERM, then reset the flows, erase the keys and leave (a TUN device of mode: tun goes with
 * the process).
 */
import { serverControlPath, type ServerConfig } from '../config/server-schema.js';
import { startControlServer } from '../control/server.js';
import { createLogger } from '../logger.js';
import { runUntilSignal } from '../run-until-signal.js';
import { TUNROUTE_VERSION } from '../version.js';
import { startServer } from './server.js';
import { serverStatusSnapshot } from './status.js';
import { formatEndpoint } from '../net/endpoint.js';
import { cidrToString } from '../net/ipv4.js';
import { dirname } from 'node:path';
import type { ApiSource } from '../api/index.js';
import type { RunningServer } from './server.js';

/** What the dashboard and the Clash API read from a running server (src/api/source.ts). */
export function serverApiSource(srv: RunningServer, config: ServerConfig, startedAt: Date): ApiSource {
  return {
    role: 'server',
    version: TUNROUTE_VERSION,
    startedAt,
    logLevel: config.log.level,
    snapshot: () => serverStatusSnapshot(srv, config, { version: TUNROUTE_VERSION, startedAt }),
    flows: () => srv.flows(),
    udpFlows: () => srv.udpFlows(),
    counters: () => {
      const s = srv.stats();
      return {
        bytesUp: (s.tcp?.bytesUp ?? 0) + (s.udp?.bytesUp ?? 0),
        bytesDown: (s.tcp?.bytesDown ?? 0) + (s.udp?.bytesDown ?? 0),
        routeReplans: 0,
        routeChanges: 0,
        handshakes: srv.peers().reduce((n, p) => n + p.counters.handshakesCompleted, 0),
      };
    },
    outbounds: () => Object.keys(srv.stats().outbounds).map((name) => ({ name, kind: name === 'block' ? 'block' : 'direct', udp: name !== 'block' })),
    outboundStats: () => srv.stats().outbounds,
    rules: () => ({ rules: [], defaultOutbound: 'direct' }),
    closeFlow: (proto, id) => srv.closeFlow(proto, id),
  };
}

export async function runServer(config: ServerConfig, opts: { file?: string } = {}): Promise<void> {
  const log = createLogger(config.log.level, config.log.format);
  const startedAt = new Date();
  const controlPath = serverControlPath(config, { uid: process.getuid?.(), xdgRuntimeDir: process.env.XDG_RUNTIME_DIR, file: opts.file });
  // The dashboard's module is loaded only when it is enabled; its log tap sees the start lines.
  const api = config.ui.listen === undefined ? undefined : await import('../api/index.js');
  const logTap = api?.startLogTap(log);
  const srv = await startServer(config, { logger: log, file: opts.file });
  let control: Awaited<ReturnType<typeof startControlServer>>;
  try {
    control = await startControlServer({
      path: controlPath,
      logger: log,
      snapshot: () => serverStatusSnapshot(srv, config, { version: TUNROUTE_VERSION, startedAt }),
      flows: () => srv.flows(),
    });
  } catch (e) {
    await srv.stop();
    throw e;
  }
  let ui: Awaited<ReturnType<NonNullable<typeof api>['startUi']>> | undefined;
  try {
    // A generated secret is kept beside the control socket: a dir this user owns, as root or not.
    ui = await api?.startUi({ ui: config.ui, stateDir: dirname(controlPath), source: serverApiSource(srv, config, startedAt), logger: log, logs: logTap });
  } catch (e) {
    await control.close();
    await srv.stop();
    throw e;
  }
  log.info(
    { listen: formatEndpoint(config.listen), port: srv.port, publicKey: srv.publicKey, address: cidrToString(config.address), peers: config.peers.length, mode: config.mode, dev: srv.link.name, control: controlPath, uid: process.getuid?.() },
    'tunroute server is up',
  );
  await runUntilSignal({
    logger: log,
    failure: 'shutdown failed',
    stop: async () => {
      await ui?.close();
      await control.close();
      await srv.stop();
      const s = srv.stats();
      log.info({ link: s.link, packets: s.packets, tcp: s.tcp, udp: s.udp, tunnel: s.tunnel, gate: s.gate, deviceDrops: s.deviceDrops }, 'tunroute server stopped; counters');
    },
  });
}
