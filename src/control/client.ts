/**
 * The asking side of the control socket (protocol in ./protocol.ts): one connection, one
 * request, one reply line, validated, then hang up. Every failure is a TunrouteError
 * ('TR_CONTROL') whose message says what to do.
 */
import { createConnection } from 'node:net';
import { TunrouteError } from '../errors.js';
import { MAX_RESPONSE_BYTES, encodeRequest, parseResponse, type ControlCommand, type ControlReplies, type ControlRequest } from './protocol.js';
import type { ProbeArm } from '../relay/probes.js';

export interface QueryOptions {
  /** Deadline for connect + reply. Default 3 s. */
  timeoutMs?: number;
  /** What a `reload` carries. */
  payload?: Pick<ControlRequest, 'config' | 'files'>;
}

function errno(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

/** The sentence for a failed connect to the control socket at `path`. */
export function connectError(path: string, e: unknown): TunrouteError {
  const code = errno(e);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'ECONNREFUSED':
      return new TunrouteError('TR_CONTROL', `No tunroute is running with control socket ${path}: start one with \`sudo tunroute up\`, or pass the --control path it uses.`, e);
    case 'EACCES':
    case 'EPERM':
      return new TunrouteError('TR_CONTROL', `The control socket ${path} is for root only (it lists where every connection goes), so this needs root: run it with sudo.`, e);
    case 'ENOTSOCK':
      return new TunrouteError('TR_CONTROL', `${path} is not a socket: pass the --control path the running tunroute uses.`, e);
    default:
      return new TunrouteError('TR_CONTROL', `Cannot reach the control socket ${path} (${code ?? (e instanceof Error ? e.message : String(e))}): check the --control path.`, e);
  }
}

/** Ask the daemon listening on `path`; resolves with the reply's data, checked against the protocol. */
export function queryControl<C extends ControlCommand>(path: string, cmd: C, opts: QueryOptions & { arm?: ProbeArm; arg?: string } = {}): Promise<ControlReplies[C]> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const chunks: Buffer[] = [];
    let size = 0;
    let connected = false;
    let settled = false;
    const finish = (r: { data: ControlReplies[C] } | TunrouteError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (r instanceof TunrouteError) reject(r);
      else resolve(r.data);
    };
    const fail = (message: string, cause?: unknown): void => finish(new TunrouteError('TR_CONTROL', message, cause));

    const timer = setTimeout(() => {
      fail(
        connected
          ? `The tunroute on control socket ${path} did not answer "${cmd}" within ${timeoutMs} ms: it may be hung or overloaded; check its logs, or try again with a longer timeout.`
          : `Connecting to control socket ${path} took longer than ${timeoutMs} ms: the tunroute there may be hung; check its logs.`,
      );
    }, timeoutMs);

    sock.once('connect', () => {
      connected = true;
      sock.write(encodeRequest(cmd, { arm: opts.arm, arg: opts.arg, ...opts.payload }));
    });
    sock.on('data', (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      const part = nl < 0 ? chunk : chunk.subarray(0, nl);
      chunks.push(part);
      size += part.length;
      if (size > MAX_RESPONSE_BYTES) {
        return fail(`The reply on control socket ${path} is longer than ${MAX_RESPONSE_BYTES} bytes: is another program listening there?`);
      }
      if (nl < 0) return;
      const r = parseResponse(cmd, Buffer.concat(chunks, size).toString('utf8'));
      if (r.ok === true) return finish({ data: r.data });
      if (r.ok === false) return fail(`The tunroute on control socket ${path} refused "${cmd}": ${r.error}.`);
      fail(`The control socket ${path} answered with something that is not a tunroute reply (${r.problem}): is another program listening there, or a tunroute of an incompatible version?`);
    });
    sock.once('end', () => {
      fail(`The tunroute on control socket ${path} closed the connection without answering "${cmd}": it may be stopping; try again.`);
    });
    sock.once('error', (e) => {
      if (connected) fail(`The connection to control socket ${path} failed before the reply (${errno(e) ?? e.message}): try again.`, e);
      else finish(connectError(path, e));
    });
  });
}
