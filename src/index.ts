/**
 * tunroute's public API, for Node programs that embed it (`import { startTunroute } from
 * 'tunroute'`). The command line is one user of it; everything else under src/ is internal
 * and may change between versions.
 *
 *   const config = loadConfig({ file: 'tunroute.yaml' });
 *   const running = await startTunroute(config);        // real TUN device and routes: needs root
 *   …  running.stats()  …
 *   await running.stop();                               // routes removed, device closed
 *
 * Every host resource comes in through `TunrouteDeps`, so a program (or its tests) can run an
 * instance with no root at all: an in-memory link (`createMemoryLinkPair`), an `ip` runner
 * that records instead of running, a fake `HostProbe`, a `ManualClock`. Errors meant for
 * users are `TunrouteError`s with a stable `code` (listed in the README, "Error codes").
 */

// The client (`tunroute up`) as a library.
export { startTunroute, type RunningTunroute, type TunrouteDeps, type TunrouteStats } from './app.js';
export { describeReload, type ReloadSummary } from './reconfigure.js';
import type { TunrouteStats } from './app.js';

/** What one part of a running instance counts; the parts of `TunrouteStats`. */
export type PacketStats = TunrouteStats['packets'];
export type TcpStats = TunrouteStats['tcp'];
export type UdpStats = TunrouteStats['udp'];
export type OutboundStats = TunrouteStats['outbounds'][string];
export type TunnelStats = TunrouteStats['tunnels'][string];

// Configuration: one schema for files and flags; `loadConfig` validates and fills defaults.
export { loadConfig } from './config/load.js';
import type { loadConfig } from './config/load.js';
/** What `loadConfig` reads: a YAML/JSON file, flags (as the command line names them), or both. */
export type LoadConfigOptions = Parameters<typeof loadConfig>[0];
export type { Config, ConfigInput } from './config/schema.js';

// Errors: one base class, stable codes.
export { ERROR_CODES, TunrouteError, isTunrouteError, type ErrorCode } from './errors.js';

// The device boundary, and the in-memory link for tests and simulations.
export type { Link, LinkStats, PacketBatch, ReceiveHandler } from './link/link.js';
export { createMemoryLinkPair, MemoryLink, type MemoryFaults, type MemoryLinkOptions } from './link/memory.js';

// Host access an embedder may replace: the `ip` runner and what the route planner reads.
export type { BatchResult, IpRunner } from './routes/apply.js';
export type { CommandResult, HostProbe, NetworkView } from './routes/host.js';

// Time and logs.
export { ManualClock, monotonicClock, type Clock } from './clock.js';
export { createLogger, silentLogger, type Logger } from './logger.js';

// The tunnel server (`tunroute server`) as a library.
export { startServer, type RunningServer, type ServerDeps, type ServerStats } from './server/server.js';
export { loadServerConfig, parseServerConfig, type ServerConfig, type ServerConfigInput } from './config/server-schema.js';
