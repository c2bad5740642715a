/**
 * Run a system tool that answers over D-Bus (resolvectl, nmcli) with a bounded output and a
 * deadline. Never rejects: a missing tool is code 127, a failure to start -1, so callers turn
 * each into one sentence of their own.
 */
import { spawn } from 'node:child_process';

export interface ToolOptions {
  /** PATH for the tool (tests: a PATH without it). */
  readonly path?: string;
  /** Deadline for one call (default 5 s). */
  readonly timeoutMs?: number;
}

export interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Keep at most this much of each stream: the tools answer in a few lines. */
const MAX_OUTPUT = 4096;

export function runTool(cmd: string, args: readonly string[], opts: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve) => {
    const env = opts.path === undefined ? process.env : { ...process.env, PATH: opts.path };
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, timeout: opts.timeoutMs ?? 5000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d.slice(0, MAX_OUTPUT)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, MAX_OUTPUT)));
    child.on('error', (e: NodeJS.ErrnoException) => resolve({ code: e.code === 'ENOENT' ? 127 : -1, stdout, stderr: e.message }));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: stdout.trim(), stderr: stderr.trim() }));
  });
}
