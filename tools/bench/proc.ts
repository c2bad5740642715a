/**
 * What the benchmark reads of a process from /proc: memory, open files, children, limits. Every
 * reader answers undefined (or nothing) for a process that is gone, never throws.
 */
import { readdirSync, readFileSync } from 'node:fs';

/**
 * VmRSS and RssAnon of `pid` in KiB (from /proc/PID/status), or undefined when it is gone.
 * RssAnon leaves out file-backed pages: the node binary's own are ~31 MB of every Node process.
 */
export function rss(pid: number): { vm: number; anon: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const vm = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    const anon = /^RssAnon:\s+(\d+)\s+kB/m.exec(status)?.[1];
    return vm === undefined || anon === undefined ? undefined : { vm: Number(vm), anon: Number(anon) };
  } catch {
    return undefined;
  }
}

/** VmRSS of `pid` in KiB, or undefined when it is gone. */
export function rssKiB(pid: number): number | undefined {
  return rss(pid)?.vm;
}

/** Open file descriptors of `pid`, or undefined when it is gone. */
export function fdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

/** PIDs whose parent is `pid` (scanning /proc: no dependency on CONFIG_PROC_CHILDREN). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The soft limit on open files of this process (the lab's processes inherit it). */
export function openFilesLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m?.[1] === undefined ? 0 : m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return 0;
  }
}
