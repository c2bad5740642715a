/**
 * The daemon's side of the control socket (protocol in ./protocol.ts).
 *
 * The socket file is mode 0660, owned by the user running the daemon (root under `sudo
 * tunroute up`): `flows` lists every source and destination the host talks to, which is not
 * for every local user to read. It is created with that mode (bound under umask 0117), never
 * chmod-ed after: a chmod by path would follow a symlink someone put there meanwhile. bind()
 * itself never follows a symlink (an existing path, symlink or not, is EADDRINUSE), and a
 * symlink found at the path beforehand is refused as "not a socket".
 *
 * One path, one daemon: a socket file that a live process answers on is never taken over; one
 * left behind by a crash (nothing answers: ECONNREFUSED) is removed and replaced.
 *
 * Each connection reads at most MAX_REQUEST_BYTES of unframed input, answers requests in
 * order, stops reading while the client is not reading its answers (so a slow or hostile
 * client holds at most one reply in memory), and is closed after `idleTimeoutMs` of silence.
 */
import { lstat, mkdir, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { TunrouteError } from '../errors.js';
import type { Link } from '../link/link.js';
import type { Logger } from '../logger.js';
import type { TcpFlowInfo } from '../relay/tcp-relay.js';
import type { ProbeBook, ProbeSeen } from '../relay/probes.js';
import {
  MAX_REQUEST_BYTES,
  encodeResponse,
  errorResponse,
  okResponse,
  parseRequest,
  type ControlRequest,
  type NetworkEventInfo,
  type PingReply,
  type FakeIpReply,
  type ReloadReply,
  type SourceReply,
  type StatusSnapshot,
  type UdpFlowInfo,
  type TunnelStatus,
  type UdpStatus,
} from './protocol.js';

/** Linux `sun_path` is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;
const SOCKET_MODE = 0o660;
const DIR_MODE = 0o755;

export interface ControlServerOptions {
  path: string;
  /** Called once per `status` request; must not throw (if it does, that request gets an error). */
  snapshot: () => StatusSnapshot;
  /** For `flows`; the default takes them from `snapshot()`. */
  flows?: () => TcpFlowInfo[];
  /** For `probe` (`tunroute verify`): absent, the command is refused. */
  probes?: ProbeBook;
  /** For `fakeip NAME|ADDR`; absent: not in fake-IP mode. */
  fakeIp?: (arg: string) => FakeIpReply;
  /** For `source` (`up` only): where the config came from. */
  source?: () => SourceReply;
  /**
   * For `reload` (`up` only): apply a config that `tunroute reload` read and validated as root.
   * Rejects with a TunrouteError whose sentence the client prints; the running config stays.
   */
  reload?: (config: Record<string, unknown>, files: ReadonlyMap<string, string>) => Promise<ReloadReply>;
  logger: Logger;
  /** Longest request line read (default MAX_REQUEST_BYTES; `up` takes reloads of MAX_RELOAD_REQUEST_BYTES). */
  maxRequestBytes?: number;
  /** Close a connection after this long without a byte either way. Default 30 s. */
  idleTimeoutMs?: number;
  /** Most connections at once; more are refused by the kernel's accept. Default 64. */
  maxConnections?: number;
  /** How long to wait when asking whether an existing socket is alive. Default 1 s. */
  probeTimeoutMs?: number;
}

export interface ControlServer {
  readonly path: string;
  /** Stop answering, drop open connections, remove the socket file. Idempotent. */
  close(): Promise<void>;
}

function errno(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

function anotherRunning(path: string, cause?: unknown): TunrouteError {
  return new TunrouteError(
    'TR_CONTROL',
    `Another tunroute is running with control socket ${path}: stop it (tunroute down) or give this one another --control path.`,
    cause,
  );
}

type Probe = 'live' | 'stale' | 'gone';

/** Is something listening on the socket at `path`? */
function probe(path: string, timeoutMs: number): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const done = (r: Probe | Error): void => {
      clearTimeout(timer);
      sock.destroy();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    // A listener that does not accept in time (hung, or its backlog full) still owns the path.
    const timer = setTimeout(() => done('live'), timeoutMs);
    sock.once('connect', () => done('live'));
    sock.once('error', (e) => {
      const code = errno(e);
      if (code === 'ECONNREFUSED') done('stale');
      else if (code === 'ENOENT') done('gone');
      else if (code === 'EAGAIN') done('live');
      else done(e);
    });
  });
}

/** Make `path` free for our socket, or explain why it is not. */
async function claimPath(path: string, log: Logger, probeTimeoutMs: number): Promise<void> {
  const dir = dirname(path);
  try {
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
  } catch (e) {
    throw new TunrouteError('TR_CONTROL', `Cannot create the control socket directory ${dir} (${errno(e) ?? String(e)}): run as root, or give another --control path.`, e);
  }
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw new TunrouteError('TR_CONTROL', `Cannot inspect the control socket path ${path} (${errno(e) ?? String(e)}): run as root, or give another --control path.`, e);
  }
  if (!isSocket) {
    throw new TunrouteError('TR_CONTROL', `${path} exists and is not a socket: remove it, or give another --control path.`);
  }
  let state: Probe;
  try {
    state = await probe(path, probeTimeoutMs);
  } catch (e) {
    throw new TunrouteError('TR_CONTROL', `Cannot tell whether another tunroute is using control socket ${path} (${errno(e) ?? String(e)}): run as root, or give another --control path.`, e);
  }
  if (state === 'live') throw anotherRunning(path);
  if (state === 'stale') {
    try {
      await unlink(path);
    } catch (e) {
      if (errno(e) !== 'ENOENT') {
        throw new TunrouteError('TR_CONTROL', `Cannot remove the stale control socket ${path} (${errno(e) ?? String(e)}): remove it by hand, or give another --control path.`, e);
      }
    }
    log.warn({ path }, 'removed a stale control socket (a previous tunroute exited without closing it)');
  }
}

/** The umask that makes bind() create the socket file with SOCKET_MODE. */
const SOCKET_UMASK = 0o777 & ~SOCKET_MODE;

/**
 * `listen()` binds synchronously, so a umask set around the call applies to the socket file
 * alone. Worker threads may not change the umask: there the socket gets the process's umask,
 * and startControlServer refuses it if that leaves it wider than SOCKET_MODE.
 */
function listenPrivately(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      server.off('listening', onListening);
      reject(e);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    let old: number | undefined;
    try {
      old = process.umask(SOCKET_UMASK);
    } catch {
      old = undefined;
    }
    try {
      server.listen(path);
    } finally {
      if (old !== undefined) process.umask(old);
    }
  });
}

export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const { path, logger } = opts;
  const log = logger.child({ component: 'control' });
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
  const maxRequestBytes = opts.maxRequestBytes ?? MAX_REQUEST_BYTES;
  const flows = opts.flows ?? ((): TcpFlowInfo[] => opts.snapshot().flows);

  const pathBytes = Buffer.byteLength(path);
  if (pathBytes > MAX_SOCKET_PATH_BYTES) {
    throw new TunrouteError('TR_CONTROL', `The control socket path ${path} is ${pathBytes} bytes long and Linux allows at most ${MAX_SOCKET_PATH_BYTES}: give a shorter --control path.`);
  }
  await claimPath(path, log, opts.probeTimeoutMs ?? 1000);

  const unsupported = (cmd: string): Error => new TunrouteError('TR_CONTROL', `this daemon does not take "${cmd}" (only tunroute up does)`);
  const answer = (req: ControlRequest): unknown => {
    switch (req.cmd) {
      case 'status':
        return opts.snapshot();
      case 'flows':
        return flows();
      case 'ping': {
        const r: PingReply = { pid: process.pid };
        return r;
      }
      case 'probe': {
        if (opts.probes === undefined) throw new Error('this daemon carries no flows to probe');
        if (req.arm === undefined) return opts.probes.read();
        opts.probes.arm(req.arm);
        const r: ProbeSeen = { armed: true, tcp: [], dns: 0 };
        return r;
      }
      case 'fakeip': {
        const r: FakeIpReply = opts.fakeIp?.(req.arg ?? '') ?? { enabled: false };
        return r;
      }
      case 'source':
        if (opts.source === undefined) throw unsupported(req.cmd);
        return opts.source();
      case 'reload':
        if (opts.reload === undefined) throw unsupported(req.cmd);
        if (req.config === undefined) throw new TunrouteError('TR_CONTROL', 'a reload request carries the config: send it with tunroute reload');
        return opts.reload(req.config, new Map(Object.entries(req.files ?? {})));
    }
  };

  const failed = (cmd: string, e: unknown): string => {
    // A refusal (a bad config) is the daemon's answer, in its own sentence; anything else is a fault.
    if (e instanceof TunrouteError) return encodeResponse(errorResponse(e.message.replace(/\.$/, '')));
    log.error({ err: e, cmd }, 'control request failed');
    return encodeResponse(errorResponse(`internal error while answering "${cmd}": ${e instanceof Error ? e.message : String(e)}`));
  };

  /** The response line for one request line (a promise for a reload); never throws or rejects. */
  const respond = (line: string): string | Promise<string> => {
    const parsed = parseRequest(line);
    if (!parsed.ok) {
      log.debug({ error: parsed.error }, 'bad control request');
      return encodeResponse(errorResponse(parsed.error));
    }
    const cmd = parsed.request.cmd;
    try {
      const a = answer(parsed.request);
      if (a instanceof Promise) {
        return a.then(
          (v) => encodeResponse(okResponse(v)),
          (e: unknown) => failed(cmd, e),
        );
      }
      return encodeResponse(okResponse(a));
    } catch (e) {
      return failed(cmd, e);
    }
  };

  const conns = new Set<Socket>();
  const server = createServer({ allowHalfOpen: false }, (sock) => serve(sock));
  server.maxConnections = opts.maxConnections ?? 64;
  server.on('drop', () => log.warn({ max: server.maxConnections }, 'control connection refused: too many open'));

  function serve(sock: Socket): void {
    conns.add(sock);
    sock.setTimeout(idleTimeoutMs, () => sock.destroy());
    sock.on('close', () => conns.delete(sock));
    sock.on('error', (e) => log.debug({ err: e }, 'control connection error'));
    let pending: Buffer = Buffer.alloc(0);
    let done = false;
    /** A reply still being made (a reload): the next request waits for it, replies stay in order. */
    let busy = false;

    const pump = (): void => {
      while (!done && !busy && !sock.destroyed && !sock.writableNeedDrain) {
        const nl = pending.indexOf(0x0a);
        if (nl < 0) break;
        if (nl > maxRequestBytes) return tooLong();
        let line = pending.toString('utf8', 0, nl);
        pending = pending.subarray(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line.trim() === '') continue;
        const r = respond(line);
        if (typeof r === 'string') sock.write(r);
        else {
          busy = true;
          void r.then((out) => {
            busy = false;
            if (!sock.destroyed) sock.write(out);
            pump();
          });
          return;
        }
      }
      if (!done && pending.length > maxRequestBytes) return tooLong();
      if (sock.writableNeedDrain) sock.pause();
    };

    /** We can no longer tell where the next request starts: say so once and hang up. */
    const tooLong = (): void => {
      done = true;
      pending = Buffer.alloc(0);
      log.debug('control request line too long; closing the connection');
      sock.end(encodeResponse(errorResponse(`a request line is longer than ${maxRequestBytes} bytes: send one JSON object per line, like {"v":1,"cmd":"status"}`)));
    };

    sock.on('data', (chunk: Buffer) => {
      if (done) return;
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      pump();
    });
    sock.on('drain', () => {
      pump();
      if (!done && !sock.writableNeedDrain) sock.resume();
    });
  }

  try {
    await listenPrivately(server, path);
  } catch (e) {
    // Someone bound the path between our check and our listen.
    if (errno(e) === 'EADDRINUSE') throw anotherRunning(path, e);
    throw new TunrouteError('TR_CONTROL', `Cannot listen on control socket ${path} (${errno(e) ?? String(e)}): run as root, or give another --control path.`, e);
  }
  // Remember which file is ours, so close() never removes a socket another process put there.
  let ours: { dev: number; ino: number; mode: number };
  try {
    const st = await lstat(path);
    ours = { dev: st.dev, ino: st.ino, mode: st.mode & 0o777 };
  } catch (e) {
    server.close();
    throw new TunrouteError('TR_CONTROL', `Cannot inspect control socket ${path} after binding it (${errno(e) ?? String(e)}): give another --control path.`, e);
  }
  if ((ours.mode & ~SOCKET_MODE) !== 0) {
    // Only where the umask could not be set (a worker thread) and the process's is too loose.
    server.close();
    throw new TunrouteError(
      'TR_CONTROL',
      `Control socket ${path} came out mode 0${ours.mode.toString(8)}, wider than 0${SOCKET_MODE.toString(8)}, because this thread may not set the umask: start tunroute with umask 0117 or narrower (e.g. umask 077).`,
    );
  }
  log.info({ path }, 'control socket listening');

  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= (async () => {
        for (const s of conns) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        // libuv usually unlinks the file as the listener closes; this covers the rest.
        try {
          const st = await lstat(path);
          if (st.dev === ours.dev && st.ino === ours.ino) await unlink(path);
        } catch (e) {
          // A tunroute that gave up root may not remove a file of root's dir: the next start does.
          if (errno(e) === 'EACCES' || errno(e) === 'EPERM') log.debug({ path }, 'the control socket stays (no permission to remove it); the next tunroute replaces it');
          else if (errno(e) !== 'ENOENT') log.warn({ err: e, path }, 'could not remove the control socket');
        }
      })();
      return closing;
    },
  };
}

/** What a running instance offers for a snapshot (RunningTunroute has all of it). */
export interface SnapshotSource {
  readonly link: Pick<Link, 'name' | 'mtu' | 'stats'>;
  readonly plan: { readonly prefixes: readonly unknown[] };
  stats(): Pick<StatusSnapshot, 'packets' | 'tcp' | 'outbounds'> & { udp?: { relay: UdpStatus } };
  flows(): TcpFlowInfo[];
  udpFlows?(): UdpFlowInfo[];
  tunnels?(): TunnelStatus[];
  networkEvents?(): NetworkEventInfo[];
}

export interface SnapshotInfo {
  version: string;
  /** The device address as configured (e.g. 198.18.0.1/15). */
  address: string;
  startedAt: Date;
  /** Wall-clock now in ms (for uptime). Default Date.now. */
  now?: () => number;
  pid?: number;
}

/** Build the `status` reply from a running instance (the server serialises it at once). */
export function statusSnapshotOf(src: SnapshotSource, info: SnapshotInfo): StatusSnapshot {
  const s = src.stats();
  const tunnels = src.tunnels?.();
  const now = (info.now ?? Date.now)();
  return {
    version: info.version,
    pid: info.pid ?? process.pid,
    startedAt: info.startedAt.toISOString(),
    uptimeMs: Math.max(0, Math.round(now - info.startedAt.getTime())),
    device: { name: src.link.name, mtu: src.link.mtu, address: info.address },
    routes: src.plan.prefixes.length,
    link: { ...src.link.stats },
    packets: s.packets,
    tcp: s.tcp,
    outbounds: s.outbounds,
    flows: src.flows(),
    ...(s.udp === undefined ? {} : { udp: udpStatusOf(s.udp.relay) }),
    ...(src.udpFlows === undefined ? {} : { udpFlows: src.udpFlows() }),
    ...(tunnels === undefined || tunnels.length === 0 ? {} : { tunnels }),
    ...(src.networkEvents === undefined ? {} : { network: src.networkEvents() }),
  };
}

function udpStatusOf(r: UdpStatus): UdpStatus {
  return {
    flowsOpen: r.flowsOpen,
    flowsTotal: r.flowsTotal,
    datagramsUp: r.datagramsUp,
    datagramsDown: r.datagramsDown,
    bytesUp: r.bytesUp,
    bytesDown: r.bytesDown,
    dropped: r.dropped,
    dnsQueries: r.dnsQueries,
    dnsAnswered: r.dnsAnswered,
    dnsFailed: r.dnsFailed,
  };
}
