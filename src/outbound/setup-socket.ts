/**
 * The socket of a proxy handshake in progress (SOCKS5, HTTP CONNECT): its events go to the
 * handshake through four module-level listeners that find it as a property of the socket, not
 * through four closures per connect. Once the handshake is over, the relay takes the socket
 * (`release`), or a failed one is destroyed (`discard`).
 */
import { Socket } from 'node:net';
import { POOLED_READS } from './pooled-reads.js';

/** What a handshake hears from its socket. */
export interface SocketSetup {
  connected(): void;
  received(chunk: Buffer): void;
  socketError(err: NodeJS.ErrnoException): void;
  /** The proxy closed its side before the handshake was over. */
  socketEnd(): void;
}

export class SetupSocket extends Socket {
  setup: SocketSetup | undefined = undefined;
}

function onConnect(this: SetupSocket): void {
  this.setup?.connected();
}
function onData(this: SetupSocket, chunk: Buffer): void {
  this.setup?.received(chunk);
}
function onError(this: SetupSocket, err: NodeJS.ErrnoException): void {
  this.setup?.socketError(err);
}
function onEnd(this: SetupSocket): void {
  this.setup?.socketEnd();
}
function ignore(): void {}

/**
 * A socket whose events go to `setup`; not yet connected. allowHalfOpen: a destination that
 * half-closes (shutdown(SHUT_WR)) must still receive what the app sends afterwards; Node would
 * otherwise end our side on its FIN. Nagle off before the first byte: every handshake message
 * goes out at once. Reads go through the shared buffer of pooled-reads.ts.
 */
export function setupSocket(setup: SocketSetup): SetupSocket {
  const s = new SetupSocket({ allowHalfOpen: true, ...POOLED_READS });
  s.setup = setup;
  s.once('connect', onConnect);
  s.on('data', onData);
  s.on('error', onError);
  s.on('end', onEnd);
  s.setNoDelay(true);
  return s;
}

/** The handshake is done: the socket, paused, is the relay's (its listeners are gone). */
export function releaseSetupSocket(s: SetupSocket): void {
  s.setup = undefined;
  s.removeListener('data', onData);
  s.removeListener('error', onError);
  s.removeListener('end', onEnd);
  s.pause();
}

/** The handshake failed or was cancelled: destroy the socket, and hear nothing more from it. */
export function discardSetupSocket(s: SetupSocket): void {
  s.setup = undefined;
  s.removeListener('connect', onConnect);
  s.removeListener('data', onData);
  s.removeListener('end', onEnd);
  // An error may still be on its way from the destroyed socket.
  s.removeListener('error', onError);
  s.on('error', ignore);
  s.destroy();
}
