/**
 * CPU accounting for the benchmark windows, from /proc:
 * - a process tree (tunroute; dante with its forked workers): utime + stime of every live
 *   process in the tree plus cutime + cstime (children already reaped), in clock ticks;
 * - the whole host: busy jiffies of all cores from /proc/stat (user, nice, system, irq, softirq),
 *   which also catches the kernel's own work on the direct path (and, on a shared machine,
 *   everybody else's: see the background figure the benchmark prints).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** sysconf(_SC_CLK_TCK), via getconf; 100 on every Linux this runs on. */
export function clockTicksPerSecond(): number {
  if (clkTck !== undefined) return clkTck;
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
  const n = Number((r.stdout ?? '').trim());
  clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  return clkTck;
}

/** Fields of /proc/PID/stat after the command name; undefined when the process is gone. */
function statFields(pid: number): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // fields[0] is field 3 (state) of proc(5): utime is field 14, so index 11.
  return text.slice(close + 2).trim().split(/\s+/);
}

/** utime + stime (+ cutime + cstime) of one process, in ticks; 0 when it is gone. */
export function processTicks(pid: number, withChildren = true): number {
  const f = statFields(pid);
  if (!f) return 0;
  const n = (i: number): number => Number(f[i] ?? 0) || 0;
  return n(11) + n(12) + (withChildren ? n(13) + n(14) : 0);
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) {
        const n = Number(c);
        if (c && Number.isInteger(n) && n > 0) out.push(n);
      }
    } catch {
      // Task gone.
    }
  }
  return out;
}

/** Ticks of `pid` and all its descendants (bounded walk: at most 10,000 processes). */
export function treeTicks(pid: number): number {
  let total = 0;
  const seen = new Set<number>();
  const todo = [pid];
  while (todo.length > 0 && seen.size < 10_000) {
    const p = todo.pop();
    if (p === undefined || seen.has(p)) continue;
    seen.add(p);
    total += processTicks(p, true);
    todo.push(...childrenOf(p));
  }
  return total;
}

export interface HostTicks {
  busy: number;
  total: number;
}

/** Aggregate jiffies of all cores: busy = user + nice + system + irq + softirq. */
export function hostTicks(): HostTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const g = (i: number): number => v[i] ?? 0;
  const busy = g(0) + g(1) + g(2) + g(5) + g(6);
  return { busy, total: busy + g(3) + g(4) + g(7) };
}

/** cutime + cstime of this process: the CPU of every child it has reaped (with their children). */
function reapedChildrenTicks(): number {
  const f = statFields(process.pid);
  return f ? (Number(f[13] ?? 0) || 0) + (Number(f[14] ?? 0) || 0) : 0;
}

export interface CpuTotals {
  /** Wall-clock seconds of the window. */
  wallS: number;
  /** CPU seconds spent by each watched process tree during the window. */
  procs: Record<string, number>;
  /**
   * CPU seconds of everything the lab runs: every daemon (servers, proxy, tunroute) and the
   * commands that ran to completion in the window (the measuring client), which this process
   * reaped. Other work on the host does not count; softirq time the kernel accounts apart does not
   * either.
   */
  labS: number;
  /** CPU seconds all cores of the host were busy during the window. */
  hostBusyS: number;
}

/**
 * Watches named process trees (by root PID), all the lab's daemons, the commands this process
 * runs to completion, and the host, across one measurement window.
 */
export class CpuWatch {
  private startWall = 0n;
  private startProcs = new Map<string, number>();
  private startLab = new Map<number, number>();
  private startReaped = 0;
  private startHost: HostTicks = { busy: 0, total: 0 };

  constructor(
    private readonly pids: Readonly<Record<string, number>>,
    private readonly labPids: readonly number[] = [],
  ) {}

  start(): void {
    this.startProcs = new Map(Object.entries(this.pids).map(([k, pid]) => [k, treeTicks(pid)]));
    this.startLab = new Map(this.labPids.map((pid) => [pid, treeTicks(pid)]));
    this.startReaped = reapedChildrenTicks();
    this.startHost = hostTicks();
    this.startWall = process.hrtime.bigint();
  }

  stop(): CpuTotals {
    const wallS = Number(process.hrtime.bigint() - this.startWall) / 1e9;
    const host = hostTicks();
    const hz = clockTicksPerSecond();
    const procs: Record<string, number> = {};
    for (const [k, pid] of Object.entries(this.pids)) {
      procs[k] = Math.max(0, treeTicks(pid) - (this.startProcs.get(k) ?? 0)) / hz;
    }
    let lab = Math.max(0, reapedChildrenTicks() - this.startReaped);
    for (const [pid, before] of this.startLab) {
      // A daemon that exited in the window was reaped by us: its CPU is in the line above.
      const now = treeTicks(pid);
      if (now > 0) lab += Math.max(0, now - before);
    }
    return { wallS, procs, labS: lab / hz, hostBusyS: (host.busy - this.startHost.busy) / hz };
  }
}
