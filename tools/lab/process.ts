/**
 * Child processes of the lab: one-shot commands (`runCommand`) and background daemons
 * (`LabProcess`).
 *
 * Two rules shape this file:
 * - Every process we start is waited for. PID 1 on the lab machines does not reap orphans, so a
 *   child that nobody waits for stays a zombie; Node's child_process reaps its own children, so
 *   we always keep the ChildProcess until its 'exit' event and never detach.
 * - Signals go to the PID we started, and nothing else. A daemon that forks (dante, with its
 *   worker processes) runs as PID 1 of its own PID namespace (`unshare --pid --fork`): when it
 *   exits, the kernel kills and reaps everything left in that namespace, so no worker outlives
 *   it as an orphan. `unshare` ignores SIGTERM, so a stop signal goes to its one child, the
 *   daemon, found in /proc/<unshare>/task/<unshare>/children.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';

export class LabError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LabError';
  }
}

export interface ExitStatus {
  /** Exit code, or null when the process ended by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface ExecOptions {
  /** Kill the command (SIGKILL) and reject after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string | Uint8Array;
  /** Added to (and overriding) the parent's environment. */
  env?: Record<string, string>;
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFail?: boolean;
  /** Keep at most this many bytes of stdout and of stderr (the tail); default 16 MiB. */
  maxBuffer?: number;
}

export interface ExecResult {
  /** Exit code; 128 + signal number when the command was killed by a signal. */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
const DEFAULT_EXEC_MAX_BUFFER = 16 * 1024 * 1024;
/** Captured output kept per daemon stream (the tail). */
const DAEMON_OUTPUT_CAP = 4 * 1024 * 1024;

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

export function describeCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function tail(text: string, max: number): string {
  return text.length > max ? text.slice(text.length - max) : text;
}

/**
 * Run a command to completion and collect its output. The child is always waited for, also
 * after a timeout (it is killed, then reaped, then the promise rejects).
 */
export function runCommand(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  const maxBuffer = opts.maxBuffer ?? DEFAULT_EXEC_MAX_BUFFER;
  const started = Date.now();
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new LabError('runCommand: empty command'));
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let spawnError: Error | undefined;
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      stdout = tail(stdout + s, maxBuffer);
    });
    child.stderr.on('data', (s: string) => {
      stderr = tail(stderr + s, maxBuffer);
    });
    child.stdin.on('error', () => {
      // The command may exit without reading its input (EPIPE); its exit status tells the story.
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const durationMs = Date.now() - started;
      const cmd = describeCommand(argv);
      if (spawnError && code === null && signal === null) {
        reject(new LabError(`cannot run ${cmd}: ${spawnError.message}`));
        return;
      }
      if (timedOut) {
        reject(
          new LabError(`${cmd} timed out after ${timeoutMs} ms and was killed; stderr: ${tail(stderr, 2000).trim()}`),
        );
        return;
      }
      const exitCode = code ?? 128 + (signal ? (SIGNAL_NUMBERS[signal] ?? 0) : 0);
      const result: ExecResult = { code: exitCode, signal, stdout, stderr, durationMs };
      if (exitCode !== 0 && !opts.allowFail) {
        const why = signal ? `was killed by ${signal}` : `exited with code ${exitCode}`;
        reject(new LabError(`${cmd} ${why}; stderr: ${tail(stderr, 2000).trim() || '(empty)'}`));
        return;
      }
      resolve(result);
    });
  });
}

export interface LabProcessOptions {
  /** A short name for messages; default: the command's first word. */
  name?: string;
  env?: Record<string, string>;
  /** Also append everything the process prints to this file. */
  logFile?: string;
  /**
   * The process was started as `unshare --pid --fork -- CMD`: signals go to its child, the real
   * daemon, which is PID 1 of the new PID namespace.
   */
  viaUnshare?: boolean;
}

type Stream = 'stdout' | 'stderr';
type LineListener = (line: string, stream: Stream) => void;

class OutputTail {
  text = '';
  partial = '';

  push(chunk: string, emit: (line: string) => void): void {
    this.text = tail(this.text + chunk, DAEMON_OUTPUT_CAP);
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    if (this.partial.length > 64 * 1024) this.partial = this.partial.slice(-64 * 1024);
    for (const line of parts) emit(line);
  }

  completeLines(): string[] {
    const lines = this.text.split('\n');
    lines.pop();
    return lines;
  }
}

/**
 * A background daemon started by the lab. It is always waited for: `stop()` signals the PID it
 * started, waits, escalates to SIGKILL, and resolves only once the process has been reaped.
 */
export class LabProcess {
  readonly pid: number;
  readonly name: string;
  readonly argv: readonly string[];
  private readonly child: ChildProcess;
  private readonly viaUnshare: boolean;
  private readonly out = new OutputTail();
  private readonly err = new OutputTail();
  private readonly listeners = new Set<LineListener>();
  private readonly exitWaiters = new Set<(s: ExitStatus) => void>();
  private status: ExitStatus | undefined;
  private closed = false;
  private readonly closeWaiters = new Set<() => void>();
  private spawnError: Error | undefined;
  private log: WriteStream | undefined;

  constructor(argv: readonly string[], opts: LabProcessOptions = {}) {
    const [file, ...args] = argv;
    if (file === undefined) throw new LabError('LabProcess: empty command');
    this.argv = argv;
    this.viaUnshare = opts.viaUnshare ?? false;
    this.child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    this.pid = this.child.pid ?? -1;
    this.name = opts.name ?? file;
    if (opts.logFile) {
      this.log = createWriteStream(opts.logFile, { flags: 'a' });
      this.log.on('error', () => {
        this.log = undefined;
      });
    }
    const onData = (stream: Stream, t: OutputTail) => (chunk: string) => {
      this.log?.write(chunk);
      t.push(chunk, (line) => {
        for (const l of this.listeners) l(line, stream);
      });
    };
    this.child.stdout?.setEncoding('utf8');
    this.child.stderr?.setEncoding('utf8');
    this.child.stdout?.on('data', onData('stdout', this.out));
    this.child.stderr?.on('data', onData('stderr', this.err));
    this.child.on('error', (e) => {
      this.spawnError = e;
      // A process that could not be spawned never emits 'exit'.
      if (this.pid === -1) this.finish({ code: null, signal: null });
    });
    // 'exit', not 'close': the process has been reaped, even if a grandchild it left behind
    // still holds its stdout open. Output arriving later is still captured.
    this.child.on('exit', (code, signal) => this.finish({ code, signal }));
    this.child.on('close', () => {
      this.log?.end();
      this.log = undefined;
      this.closed = true;
      for (const w of this.closeWaiters) w();
      this.closeWaiters.clear();
    });
  }

  private finish(s: ExitStatus): void {
    if (this.status) return;
    this.status = s;
    // Flush a last line printed without a newline.
    for (const [t, stream] of [
      [this.out, 'stdout'],
      [this.err, 'stderr'],
    ] as const) {
      if (t.partial) for (const l of this.listeners) l(t.partial, stream);
    }
    for (const w of this.exitWaiters) w(s);
    this.exitWaiters.clear();
  }

  get exited(): boolean {
    return this.status !== undefined;
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  /** Everything printed so far (the last 4 MiB of each stream). */
  output(): { stdout: string; stderr: string } {
    return { stdout: this.out.text, stderr: this.err.text };
  }

  /** The last `max` characters of both streams, for error messages. */
  outputTail(max = 2000): string {
    const { stdout, stderr } = this.output();
    const parts: string[] = [];
    if (stdout.trim()) parts.push(`stdout: ${tail(stdout, max).trim()}`);
    if (stderr.trim()) parts.push(`stderr: ${tail(stderr, max).trim()}`);
    if (this.spawnError) parts.push(`spawn error: ${this.spawnError.message}`);
    return parts.join('\n') || '(no output)';
  }

  /**
   * Resolve with the first line (already printed or still to come, on stdout or stderr) that
   * matches `re`. Rejects when the process exits first or after `timeoutMs`.
   */
  waitForLine(re: RegExp, timeoutMs = 10_000): Promise<string> {
    const printed = (): string | undefined =>
      [...this.out.completeLines(), ...this.err.completeLines()].find((l) => re.test(l)) ??
      (this.status ? [this.out.partial, this.err.partial].find((p) => p && re.test(p)) : undefined);
    const now = printed();
    if (now !== undefined) return Promise.resolve(now);
    const status = this.status;
    if (status) {
      return this.drained(500).then(() => {
        const late = printed();
        if (late !== undefined) return late;
        throw new LabError(`${this.name} (pid ${this.pid}) exited (${fmtStatus(status)}) before printing ${re}\n${this.outputTail()}`);
      });
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(onLine);
        this.exitWaiters.delete(onExit);
      };
      const onLine: LineListener = (line) => {
        if (!re.test(line)) return;
        done();
        resolve(line);
      };
      const onExit = (s: ExitStatus): void => {
        // Output can still arrive after 'exit': give the pipes a moment to drain, then decide.
        void this.drained(500).then(() => {
          if (!this.listeners.has(onLine)) return; // a late line matched
          done();
          reject(new LabError(`${this.name} (pid ${this.pid}) exited (${fmtStatus(s)}) before printing ${re}\n${this.outputTail()}`));
        });
      };
      const timer = setTimeout(() => {
        done();
        reject(new LabError(`${this.name} (pid ${this.pid}) did not print ${re} within ${timeoutMs} ms\n${this.outputTail()}`));
      }, timeoutMs);
      this.listeners.add(onLine);
      this.exitWaiters.add(onExit);
    });
  }

  /** Resolve when the output pipes have closed, or after `maxMs`. */
  private drained(maxMs: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.closeWaiters.delete(finish);
        resolve();
      }, maxMs);
      const finish = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.closeWaiters.add(finish);
    });
  }

  /** Resolve once the process has exited and been reaped; reject after `timeoutMs` if given. */
  waitForExit(timeoutMs?: number): Promise<ExitStatus> {
    if (this.status) return Promise.resolve(this.status);
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onExit = (s: ExitStatus): void => {
        if (timer) clearTimeout(timer);
        resolve(s);
      };
      this.exitWaiters.add(onExit);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.exitWaiters.delete(onExit);
          reject(new LabError(`${this.name} (pid ${this.pid}) still running after ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /** The daemon's own PID when it runs under `unshare --fork`; undefined when not (yet) known. */
  private innerPid(): number | undefined {
    if (!this.viaUnshare || this.status || this.pid <= 0) return undefined;
    try {
      const first = readFileSync(`/proc/${this.pid}/task/${this.pid}/children`, 'utf8').trim().split(/\s+/)[0];
      const n = first ? Number(first) : NaN;
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  }

  /** Send `signal` to the daemon: the PID we started, or the one child of our `unshare`. */
  signal(signal: NodeJS.Signals): void {
    if (this.status || this.pid <= 0) return;
    const target = this.innerPid() ?? this.pid;
    try {
      process.kill(target, signal);
    } catch {
      // ESRCH: it exited between the check and the signal; 'close' will follow.
    }
  }

  /**
   * Stop the daemon: send `signal`, wait up to `graceMs`, then SIGKILL. Resolves once the process
   * has been reaped; rejects only if it survives SIGKILL for 5 s (uninterruptible sleep).
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<ExitStatus> {
    if (this.status) return this.status;
    this.signal(signal);
    try {
      return await this.waitForExit(graceMs);
    } catch {
      // Escalate below.
    }
    this.signal('SIGKILL');
    try {
      return await this.waitForExit(2000);
    } catch {
      // Under unshare: killing the daemon makes unshare exit; if it has not, kill unshare too.
    }
    this.killOuter();
    return await this.waitForExit(5000);
  }

  private killOuter(): void {
    if (this.status || this.pid <= 0) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }

  /** Best effort for process exit paths where nothing can be awaited: SIGKILL, no waiting. */
  killSync(): void {
    this.signal('SIGKILL');
    this.killOuter();
  }
}

export function fmtStatus(s: ExitStatus): string {
  return s.signal ? `signal ${s.signal}` : `code ${s.code}`;
}
