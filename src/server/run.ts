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

export async function runServer(config: ServerConfig, opts: { file?: string } = {}): Promise<void> {
  const log = createLogger(config.log.level, config.log.format);
  const startedAt = new Date();
  const controlPath = serverControlPath(config, { uid: process.getuid?.(), xdgRuntimeDir: process.env.XDG_RUNTIME_DIR, file: opts.file });
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
  log.info(
    { listen: formatEndpoint(config.listen), port: srv.port, publicKey: srv.publicKey, address: cidrToString(config.address), peers: config.peers.length, mode: config.mode, dev: srv.link.name, control: controlPath, uid: process.getuid?.() },
    'tunroute server is up',
  );
  await runUntilSignal({
    logger: log,
    failure: 'shutdown failed',
    stop: async () => {
      await control.close();
      await srv.stop();
      const s = srv.stats();
      log.info({ link: s.link, packets: s.packets, tcp: s.tcp, udp: s.udp, tunnel: s.tunnel, gate: s.gate, deviceDrops: s.deviceDrops }, 'tunroute server stopped; counters');
    },
  });
}
