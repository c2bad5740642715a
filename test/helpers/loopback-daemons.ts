/**
 * Real SOCKS5 servers from Debian (dante's `danted`, `microsocks`) on 127.0.0.1 for the unit
 * suites: no namespace, no root needed. Started as our own children and stopped by PID. The
 * lab (tools/lab/servers.ts) starts the same programs inside network namespaces; the dante
 * config text is shared with it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { danteConfigText } from '../../tools/lab/servers.js';

export const LOOPBACK = '127.0.0.1';

/** Whether `name` is on PATH (suites that need it skip, and say so, when not). */
export function hasBinary(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it). */
export async function freeTcpPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, LOOPBACK, () => resolve()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface LoopbackDaemon {
  readonly child: ChildProcess;
  readonly port: number;
  /** `socks5://127.0.0.1:PORT` */
  readonly url: string;
  /** What it printed on stdout and stderr so far. */
  output(): string;
  /** SIGTERM by PID, wait for the exit (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

/** SIGTERM our own child by PID and wait for it to exit (SIGKILL after 5 s). */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(timer);
}

/** Start `cmd args` and resolve once it accepts TCP connections on 127.0.0.1:port (within 5 s). */
export async function startLoopbackDaemon(cmd: string, args: readonly string[], port: number): Promise<LoopbackDaemon> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, LOOPBACK);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return { child, port, url: `socks5://${LOOPBACK}:${port}`, output: () => out, stop: () => stopChild(child) };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stopChild(child);
  throw new Error(`${cmd} did not listen on ${LOOPBACK}:${port} within 5 s: ${out}`);
}

/**
 * danted on 127.0.0.1 (CONNECT, BIND, UDP ASSOCIATE, no authentication, one worker), its
 * config, log and pid file in `dir` (the caller's temp dir). `connectdst`: see DanteConfig
 * (default true, dante's own default).
 */
export async function startLoopbackDante(dir: string, opts: { connectdst?: boolean } = {}): Promise<LoopbackDaemon> {
  const port = await freeTcpPort();
  const conf = join(dir, `danted-${port}.conf`);
  writeFileSync(
    conf,
    danteConfigText({
      logFile: join(dir, `danted-${port}.log`),
      listen: LOOPBACK,
      port,
      external: LOOPBACK,
      auth: false,
      connectdst: opts.connectdst ?? true,
      privileged: process.getuid?.() === 0,
    }),
  );
  return startLoopbackDaemon('danted', ['-f', conf, '-N', '1', '-p', join(dir, `danted-${port}.pid`)], port);
}

/** microsocks on 127.0.0.1 (CONNECT only), with username/password when given. */
export async function startLoopbackMicrosocks(opts: { user?: string; pass?: string } = {}): Promise<LoopbackDaemon> {
  const port = await freeTcpPort();
  const auth = opts.user !== undefined && opts.pass !== undefined ? ['-u', opts.user, '-P', opts.pass] : [];
  return startLoopbackDaemon('microsocks', ['-i', LOOPBACK, '-p', String(port), ...auth], port);
}
