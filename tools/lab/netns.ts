/**
 * The lab: network namespaces joined by veth pairs, created for one test and always removed.
 *
 * Safety contract (the lab runs as root on a shared machine):
 * - nothing here changes the host's own interfaces, routes, rules or sysctls: every `ip`
 *   command that configures something runs with `-n <our namespace>` or inside
 *   `ip netns exec <our namespace>`, and veth pairs are created directly inside our namespaces
 *   (`ip -n A link add ... peer ... netns B`), so they never appear in the host namespace;
 * - every namespace and process is tracked and removed by `destroy()`, and again by
 *   process-level hooks (exit, SIGINT, SIGTERM, a crash) if a test never gets there;
 * - signals go only to PIDs we started.
 *
 * Names: a lab id is `tr-<pid base36>-<4 random chars>` (the owner PID lets
 * `scripts/lab-clean.sh` tell a crashed lab from a running one); a namespace is
 * `<id>-<role>`; veth names are `tr<rand><n>a|b`, at most 15 characters.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  describeCommand,
  LabError,
  LabProcess,
  runCommand,
  type ExecOptions,
  type ExecResult,
} from './process.js';

export interface LabOptions {
  /** Start of every name; must be `tr-` or `tr-<tag>-` (lab-clean.sh matches `^tr-`). */
  prefix?: string;
  /** Where warnings go (things destroy could not remove); default: stderr. */
  log?: (message: string) => void;
  /** Keep the lab's temp dir (configs, logs) after destroy; also with env TR_LAB_KEEP=1. */
  keepTmp?: boolean;
}

export interface NamespaceOptions {
  /** net.ipv4.ip_forward inside the namespace; default false. */
  ipForward?: boolean;
  /** net.ipv4.tcp_tw_reuse=1, for tests with thousands of short connections. */
  tcpTwReuse?: boolean;
  /** net.ipv4.ip_local_port_range = "1024 65535", for many concurrent connections. */
  wideLocalPortRange?: boolean;
  /** Any other sysctls to set inside the namespace, e.g. {'net.ipv4.conf.all.rp_filter': 0}. */
  sysctls?: Record<string, string | number>;
}

export interface LinkOptions {
  /** Address of the end in the first namespace, with prefix length: '10.99.0.1/24'. */
  cidrA: string;
  cidrB: string;
  mtu?: number;
  /** Interface names; default: short unique names. At most 15 characters. */
  nameA?: string;
  nameB?: string;
}

export interface LinkEnd {
  readonly ns: Namespace;
  readonly ifname: string;
  /** '10.99.0.1/24' */
  readonly cidr: string;
  /** '10.99.0.1' */
  readonly ip: string;
}

export interface VethLink {
  readonly a: LinkEnd;
  readonly b: LinkEnd;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  /** Also append the daemon's output to this file. */
  logFile?: string;
  /** Name for messages; default: the command's first word. */
  name?: string;
  /**
   * Run the daemon as PID 1 of its own PID namespace (`unshare --pid --fork`), so that workers
   * it forks are reaped by the kernel when it exits. Use for forking daemons (dante). Note: a
   * PID-namespace init ignores signals it has no handler for, so `stop()` then falls back to
   * SIGKILL after its grace period.
   */
  pidns?: boolean;
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const CIDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function isIPv4(s: string): boolean {
  const m = IPV4_RE.exec(s);
  return m !== null && m.slice(1, 5).every((o) => Number(o) <= 255);
}

function parseCidr(cidr: string): string {
  const m = CIDR_RE.exec(cidr);
  if (!m || !m.slice(1, 5).every((o) => Number(o) <= 255) || Number(m[5]) > 32) {
    throw new LabError(`bad CIDR ${JSON.stringify(cidr)}: expected an IPv4 address with prefix, like 10.99.0.1/24`);
  }
  return m.slice(1, 5).join('.');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One network namespace of a lab. Everything it runs goes through `ip netns exec NAME`. */
/**
 * A deleted namespace's tunroute state dir (/run/tunroute/netns/NAME: journals, the fake-IP
 * table, the device dir a tunroute that gave up root could not remove): nothing in it can be
 * undone any more, since the routes went with the namespace.
 */
function forgetTunrouteState(ns: string): void {
  try {
    rmSync(join('/run/tunroute/netns', ns), { recursive: true, force: true });
  } catch {
    // Best effort: a leftover dir here is harmless.
  }
}

export class Namespace {
  /** Addresses given to this namespace by `Lab.link`, like '10.99.0.2'. */
  readonly addresses: string[] = [];

  constructor(
    readonly lab: Lab,
    readonly name: string,
    readonly role: string,
  ) {}

  /** The argv that runs `cmd` inside this namespace. */
  argv(cmd: readonly string[]): string[] {
    if (cmd.length === 0) throw new LabError('empty command');
    return ['ip', 'netns', 'exec', this.name, ...cmd];
  }

  /** Run a command inside the namespace; rejects (with its stderr) on a non-zero exit. */
  exec(cmd: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return runCommand(this.argv(cmd), opts);
  }

  /** Run a bash script inside the namespace. */
  sh(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['bash', '-c', script], opts);
  }

  /** Start a background daemon inside the namespace; the lab stops it on destroy. */
  spawn(cmd: readonly string[], opts: SpawnOptions = {}): LabProcess {
    return this.lab.spawnIn(this, cmd, opts);
  }

  /** Set sysctls inside the namespace (only per-namespace keys such as net.ipv4.*). */
  async sysctl(settings: Record<string, string | number>): Promise<void> {
    const writes = Object.entries(settings).map(([k, v]) => {
      if (!/^net\.[a-z0-9_.-]+$/i.test(k)) throw new LabError(`refusing sysctl ${k}: only net.* keys are per-namespace`);
      return `${k}=${v}`;
    });
    if (writes.length > 0) await this.exec(['sysctl', '-q', '-w', ...writes], { timeoutMs: 10_000 });
  }
}

const liveLabs = new Set<Lab>();
let hooksInstalled = false;

/** A set of namespaces and daemons that `destroy()` removes completely. */
export class Lab {
  readonly id: string;
  /** Private temp dir for configs, scripts and logs; removed by destroy (unless kept). */
  readonly tmpDir: string;
  private readonly rand: string;
  private readonly log: (message: string) => void;
  private readonly keepTmp: boolean;
  private readonly nss: Namespace[] = [];
  private readonly procs = new Set<LabProcess>();
  private readonly etcDirs = new Set<string>();
  private linkCount = 0;
  private destroying: Promise<void> | undefined;

  private constructor(opts: LabOptions) {
    const prefix = opts.prefix ?? 'tr-';
    if (!/^tr-([a-z0-9]{1,8}-)?$/.test(prefix)) {
      throw new LabError(`bad lab prefix ${JSON.stringify(prefix)}: use 'tr-' or 'tr-<tag>-' (lowercase, up to 8 chars)`);
    }
    this.rand = randomBytes(4).readUInt32BE(0).toString(36).padStart(4, '0').slice(-4);
    this.id = `${prefix}${process.pid.toString(36)}-${this.rand}`;
    this.log = opts.log ?? ((m) => process.stderr.write(`[lab ${this.id}] ${m}\n`));
    this.keepTmp = opts.keepTmp ?? process.env.TR_LAB_KEEP === '1';
    this.tmpDir = mkdtempSync(join(tmpdir(), `${this.id}-`));
  }

  /** Root can create namespaces; everything in the lab needs it. */
  static isRoot(): boolean {
    return typeof process.getuid === 'function' && process.getuid() === 0;
  }

  static async create(opts: LabOptions = {}): Promise<Lab> {
    const avail = labAvailable();
    if (!avail.ok) throw new LabError(`the lab cannot run here: ${avail.reason}`);
    installProcessHooks();
    const lab = new Lab(opts);
    liveLabs.add(lab);
    return lab;
  }

  get destroyed(): boolean {
    return this.destroying !== undefined;
  }

  namespaces(): readonly Namespace[] {
    return this.nss;
  }

  processes(): readonly LabProcess[] {
    return [...this.procs];
  }

  private assertAlive(): void {
    if (this.destroying) throw new LabError(`lab ${this.id} has been destroyed`);
  }

  /** Create a namespace `<id>-<role>` with `lo` up and the asked sysctls. */
  async addNamespace(role: string, opts: NamespaceOptions = {}): Promise<Namespace> {
    this.assertAlive();
    const base = role.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 12) || 'ns';
    let name = `${this.id}-${base}`;
    for (let i = 2; this.nss.some((n) => n.name === name); i++) name = `${this.id}-${base}${i}`;
    await runCommand(['ip', 'netns', 'add', name], { timeoutMs: 10_000 });
    const ns = new Namespace(this, name, role);
    this.nss.push(ns);
    await runCommand(['ip', '-n', name, 'link', 'set', 'lo', 'up'], { timeoutMs: 10_000 });
    const settings: Record<string, string | number> = { 'net.ipv4.ip_forward': opts.ipForward ? 1 : 0 };
    if (opts.tcpTwReuse) settings['net.ipv4.tcp_tw_reuse'] = 1;
    if (opts.wideLocalPortRange) settings['net.ipv4.ip_local_port_range'] = '1024 65535';
    Object.assign(settings, opts.sysctls ?? {});
    await ns.sysctl(settings);
    return ns;
  }

  /** Join two namespaces (or one to itself) with a veth pair: addressed, up. */
  async link(a: Namespace, b: Namespace, opts: LinkOptions): Promise<VethLink> {
    this.assertAlive();
    for (const ns of [a, b]) {
      if (ns.lab !== this || !this.nss.includes(ns)) throw new LabError(`namespace ${ns.name} is not part of lab ${this.id}`);
    }
    const ipA = parseCidr(opts.cidrA);
    const ipB = parseCidr(opts.cidrB);
    const n = this.linkCount++;
    const ifA = opts.nameA ?? `tr${this.rand}${n}a`;
    const ifB = opts.nameB ?? `tr${this.rand}${n}b`;
    for (const ifname of [ifA, ifB]) {
      if (!IFNAME_RE.test(ifname)) throw new LabError(`bad interface name ${JSON.stringify(ifname)}: 1-15 of [A-Za-z0-9_.-]`);
    }
    const mtu = opts.mtu === undefined ? [] : ['mtu', String(opts.mtu)];
    // Created inside A, peer created directly inside B: never visible in the host namespace.
    const peerNs = a === b ? [] : ['netns', b.name];
    await runCommand(['ip', '-n', a.name, 'link', 'add', ifA, ...mtu, 'type', 'veth', 'peer', 'name', ifB, ...mtu, ...peerNs], {
      timeoutMs: 10_000,
    });
    await runCommand(['ip', '-n', a.name, 'addr', 'add', opts.cidrA, 'dev', ifA], { timeoutMs: 10_000 });
    await runCommand(['ip', '-n', b.name, 'addr', 'add', opts.cidrB, 'dev', ifB], { timeoutMs: 10_000 });
    await runCommand(['ip', '-n', a.name, 'link', 'set', ifA, 'up'], { timeoutMs: 10_000 });
    await runCommand(['ip', '-n', b.name, 'link', 'set', ifB, 'up'], { timeoutMs: 10_000 });
    a.addresses.push(ipA);
    b.addresses.push(ipB);
    return {
      a: { ns: a, ifname: ifA, cidr: opts.cidrA, ip: ipA },
      b: { ns: b, ifname: ifB, cidr: opts.cidrB, ip: ipB },
    };
  }

  /** Used by Namespace.spawn. */
  spawnIn(ns: Namespace, cmd: readonly string[], opts: SpawnOptions): LabProcess {
    this.assertAlive();
    const inner = opts.pidns ? ['unshare', '--pid', '--fork', '--kill-child', '--', ...cmd] : [...cmd];
    const proc = new LabProcess(ns.argv(inner), {
      name: opts.name ?? cmd[0],
      env: opts.env,
      logFile: opts.logFile,
      viaUnshare: opts.pidns ?? false,
    });
    if (proc.pid <= 0) {
      throw new LabError(`could not start ${describeCommand(cmd)} in ${ns.name}: ${proc.outputTail()}`);
    }
    this.procs.add(proc);
    void proc.waitForExit().then(() => this.procs.delete(proc));
    return proc;
  }

  /**
   * Overlay a file of /etc for processes started in `ns` from now on (iproute2 bind-mounts
   * /etc/netns/<ns>/<file> over /etc/<file> in `ip netns exec`). The file exists only while
   * the lab does. Used for a dante test user without creating a user on the host.
   */
  etcOverlayDir(ns: Namespace): string {
    this.assertAlive();
    const dir = join('/etc/netns', ns.name);
    this.etcDirs.add(dir);
    return dir;
  }

  /**
   * The resolver processes started in `ns` from now on see: /etc/netns/<ns>/resolv.conf with a
   * `nameserver` line for each server, then `options` if given (removed with the lab).
   */
  setResolvConf(ns: Namespace, servers: readonly string[], options?: string): void {
    const etc = this.etcOverlayDir(ns);
    mkdirSync(etc, { recursive: true, mode: 0o755 });
    const lines = [...servers.map((ip) => `nameserver ${ip}`), ...(options === undefined ? [] : [`options ${options}`])];
    writeFileSync(join(etc, 'resolv.conf'), `${lines.join('\n')}\n`, { mode: 0o644 });
  }

  /**
   * Stop every tracked process (SIGTERM, then SIGKILL), kill anything else left inside our
   * namespaces, delete the namespaces (which removes their veths), remove the temp dir.
   * Idempotent; never throws: what could not be removed is logged.
   */
  destroy(graceMs = 2000): Promise<void> {
    this.destroying ??= this.doDestroy(graceMs);
    return this.destroying;
  }

  private async doDestroy(graceMs: number): Promise<void> {
    try {
      await Promise.all(
        [...this.procs].map((p) =>
          p.stop('SIGTERM', graceMs).catch((e: unknown) => this.log(`could not stop ${p.name} (pid ${p.pid}): ${String(e)}`)),
        ),
      );
      for (const ns of [...this.nss].reverse()) {
        await this.killLeftovers(ns);
        const r = await runCommand(['ip', 'netns', 'del', ns.name], { timeoutMs: 10_000, allowFail: true }).catch(
          (e: unknown) => ({ code: -1, stderr: String(e) }),
        );
        if (r.code !== 0 && existsSync(`/run/netns/${ns.name}`)) {
          this.log(`could not delete namespace ${ns.name}: ${r.stderr.trim()}`);
        } else forgetTunrouteState(ns.name);
      }
      this.removeFiles();
    } catch (e) {
      this.log(`destroy failed part-way: ${String(e)}`);
    } finally {
      liveLabs.delete(this);
    }
  }

  /** Processes still inside a namespace (orphaned workers of a daemon): SIGKILL, by PID. */
  private async killLeftovers(ns: Namespace): Promise<void> {
    const r = await runCommand(['ip', 'netns', 'pids', ns.name], { timeoutMs: 5000, allowFail: true }).catch(() => undefined);
    const pids = (r?.stdout ?? '')
      .split(/\s+/)
      .map(Number)
      .filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
    if (pids.length === 0) return;
    this.log(`killing ${pids.length} leftover process(es) in ${ns.name}: ${pids.join(' ')} (they may linger as zombies)`);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    await sleep(100);
  }

  private removeFiles(): void {
    for (const dir of this.etcDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch (e) {
        this.log(`could not remove ${dir}: ${String(e)}`);
      }
    }
    if (this.etcDirs.size > 0) {
      try {
        rmdirSync('/etc/netns'); // only if now empty; another lab may still use it
      } catch {
        // Not empty, or gone.
      }
    }
    this.etcDirs.clear();
    if (this.keepTmp) {
      this.log(`kept ${this.tmpDir}`);
      return;
    }
    try {
      rmSync(this.tmpDir, { recursive: true, force: true });
    } catch (e) {
      this.log(`could not remove ${this.tmpDir}: ${String(e)}`);
    }
  }

  /**
   * Synchronous best effort, for process exit paths where nothing can be awaited: SIGKILL every
   * tracked process, delete the namespaces. Killed children cannot be reaped here.
   */
  destroySync(): void {
    this.destroying ??= Promise.resolve();
    try {
      for (const p of this.procs) p.killSync();
      for (const ns of [...this.nss].reverse()) {
        const pids = spawnSync('ip', ['netns', 'pids', ns.name], { encoding: 'utf8', timeout: 5000 });
        for (const pid of (pids.stdout ?? '').split(/\s+/).map(Number)) {
          if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // Gone already.
            }
          }
        }
        const r = spawnSync('ip', ['netns', 'del', ns.name], { encoding: 'utf8', timeout: 5000 });
        if (r.status !== 0 && existsSync(`/run/netns/${ns.name}`)) {
          this.log(`could not delete namespace ${ns.name}: ${(r.stderr ?? '').trim()}`);
        } else forgetTunrouteState(ns.name);
      }
      this.removeFiles();
    } catch (e) {
      this.log(`destroySync failed part-way: ${String(e)}`);
    } finally {
      liveLabs.delete(this);
    }
  }
}

/** Whether the lab can run here; `reason` says what is missing, for a visible skip. */
export function labAvailable(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `the lab needs Linux (this is ${process.platform})` };
  if (!Lab.isRoot()) return { ok: false, reason: 'the lab needs root (network namespaces); run the e2e tests with sudo' };
  const ip = spawnSync('ip', ['-V'], { encoding: 'utf8', timeout: 5000 });
  if (ip.error || ip.status !== 0) return { ok: false, reason: '`ip` (iproute2) is not on PATH: apt-get install iproute2' };
  if (!existsSync('/dev/net/tun')) return { ok: false, reason: '/dev/net/tun is missing (no TUN support in this kernel/container)' };
  return { ok: true };
}

/**
 * Wait until a TCP connect to host:port succeeds from inside `ns` (polls every 50 ms with
 * bash's /dev/tcp). Rejects after `timeoutMs`.
 */
export async function waitForPort(ns: Namespace, host: string, port: number, timeoutMs = 10_000): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new LabError(`bad port ${port}`);
  if (!/^[A-Za-z0-9.-]+$/.test(host)) throw new LabError(`bad host ${JSON.stringify(host)}`);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    try {
      const r = await ns.exec(['bash', '-c', 'exec 3<>"/dev/tcp/$1/$2"', 'waitForPort', host, String(port)], {
        timeoutMs: Math.max(200, Math.min(2000, left)),
        allowFail: true,
      });
      if (r.code === 0) return;
      last = r.stderr.trim();
    } catch (e) {
      last = String(e);
    }
    await sleep(50);
  }
  throw new LabError(`nothing accepted TCP connections on ${host}:${port} in ${ns.name} within ${timeoutMs} ms (${last})`);
}

/** Run a bash script inside `ns`. */
export function sh(ns: Namespace, script: string, opts: ExecOptions = {}): Promise<ExecResult> {
  return ns.sh(script, opts);
}

function signalNumber(sig: 'SIGINT' | 'SIGTERM'): number {
  return sig === 'SIGINT' ? 2 : 15;
}

/** Destroy every live lab, asynchronously (children are reaped), within 15 s at most. */
function destroyAllBounded(): Promise<void> {
  const all = Promise.all([...liveLabs].map((l) => l.destroy())).then(() => undefined);
  const cap = new Promise<void>((r) => setTimeout(r, 15_000).unref()).then(() => {
    for (const lab of [...liveLabs]) lab.destroySync();
  });
  return Promise.race([all, cap]);
}

/**
 * Once per process: clean up live labs on exit, SIGINT, SIGTERM and a crash, so an interrupted
 * test leaves nothing behind.
 *
 * Cleanup is asynchronous wherever the process can wait for it, because only then are the
 * killed children reaped (PID 1 here does not reap orphans). Only a plain `process.exit()`
 * gets the synchronous best effort ('exit' hook): namespaces are deleted and processes
 * SIGKILLed, but those children then linger as zombies.
 *
 * The hooks keep the process's behaviour otherwise: a signal still ends it (exit code
 * 128 + signal) unless someone else also listens for that signal; an uncaught exception still
 * prints and exits with code 1 unless someone else also handles it (a test runner does).
 */
function installProcessHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const lab of [...liveLabs]) lab.destroySync();
  });
  let cleaning = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      const code = 128 + signalNumber(sig);
      if (cleaning) {
        // A second signal during cleanup: finish synchronously and go.
        for (const lab of [...liveLabs]) lab.destroySync();
        process.exit(code);
      }
      cleaning = true;
      const alone = process.listenerCount(sig) === 1;
      void destroyAllBounded().then(() => {
        cleaning = false;
        if (alone) process.exit(code);
      });
    });
  }
  process.on('uncaughtException', (err: unknown, origin: string) => {
    if (process.listenerCount('uncaughtException') > 1) return; // someone else handles it
    const what = origin === 'unhandledRejection' ? 'Unhandled rejection' : 'Uncaught exception';
    process.stderr.write(`${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    if (cleaning) return;
    cleaning = true;
    process.stderr.write('[lab] removing the lab before exiting\n');
    void destroyAllBounded().then(() => process.exit(1));
  });
}
