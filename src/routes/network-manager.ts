/**
 * NetworkManager and tun0: where NetworkManager runs, it takes new devices over by default and
 * may give tun0 an address or routes of its own (or take it down) while tunroute runs it. So
 * `up` marks the device unmanaged (`nmcli device set DEV managed no`), journaled before it
 * runs, and stop, `down` and the watchdog hand it back (`managed yes`: harmless when the device
 * went with tunroute). Without nmcli on PATH, or with NetworkManager not running, nothing is
 * done and one debug line says so.
 */
import { runTool, type ToolResult } from './run-tool.js';
import { statSync } from 'node:fs';
import type { Logger } from '../logger.js';

export interface NmOptions {
  /** PATH to find nmcli on (tests put a fake one first); default the process's. */
  readonly path?: string;
  /** Deadline for one nmcli call (it asks NetworkManager over D-Bus). */
  readonly timeoutMs?: number;
  /** Tests: ask nmcli even outside PID 1's network namespace. */
  readonly anyNetns?: boolean;
}

function nmcli(args: readonly string[], opts: NmOptions): Promise<ToolResult> {
  return runTool('nmcli', args, opts);
}

/**
 * Whether this process shares PID 1's network namespace, where NetworkManager runs and whose
 * devices it manages: a tunroute in another namespace (the lab's) has a tun0 NetworkManager
 * never sees, and a `nmcli device set tun0` from there would name the host's tun0 instead.
 */
export function inInitNetns(): boolean {
  try {
    const self = statSync('/proc/self/ns/net');
    const init = statSync('/proc/1/ns/net');
    return self.dev === init.dev && self.ino === init.ino;
  } catch {
    return false; // cannot tell: leave NetworkManager alone
  }
}

/** Whether NetworkManager is present: nmcli on PATH and the daemon running. */
export async function networkManagerRunning(opts: NmOptions = {}): Promise<{ running: true } | { running: false; why: string }> {
  if (!(opts.anyNetns ?? false) && !inInitNetns()) return { running: false, why: "tunroute runs outside the host's network namespace" };
  const r = await nmcli(['-t', '-f', 'RUNNING', 'general'], opts);
  if (r.code === 127) return { running: false, why: 'nmcli is not installed' };
  if (r.code !== 0 || r.stdout !== 'running') return { running: false, why: `NetworkManager is not running (${r.stderr || r.stdout || `nmcli exit ${r.code}`})` };
  return { running: true };
}

/**
 * Mark `dev` unmanaged (NetworkManager runs: see networkManagerRunning, which the caller asked
 * before it journaled the intent). Resolves true when NetworkManager took it.
 */
export async function unmanageDevice(dev: string, log: Logger, opts: NmOptions = {}): Promise<boolean> {
  const r = await nmcli(['device', 'set', dev, 'managed', 'no'], opts);
  if (r.code !== 0) {
    log.warn({ dev, stderr: r.stderr }, `NetworkManager did not take ${dev} as unmanaged: it may change the device's addresses or routes; run nmcli device set ${dev} managed no`);
    return false;
  }
  log.info({ dev }, `NetworkManager: ${dev} is unmanaged while tunroute runs`);
  return true;
}

/** Hand the device back to NetworkManager (gone already, or no NetworkManager: nothing to do). */
export async function manageDevice(dev: string, log: Logger, opts: NmOptions = {}): Promise<void> {
  // Only where the device was marked: from another namespace the name would be another device.
  if (!(opts.anyNetns ?? false) && !inInitNetns()) return;
  const r = await nmcli(['device', 'set', dev, 'managed', 'yes'], opts);
  if (r.code !== 0) log.debug({ dev, stderr: r.stderr, code: r.code }, 'NetworkManager: the device is gone (or NetworkManager is): nothing to hand back');
}
