/**
 * Upstream sockets read into one shared buffer instead of a fresh one per read.
 *
 * Why: a net.Socket allocates a new 64 KiB buffer for every read, and that external memory
 * drove V8 into a major collection every ~64 MB of a download (perf: ~23 % of tunroute's CPU
 * during an iperf3 download through dante), the same churn recv-slabs.ts removed on the
 * upload side.
 *
 * How: every upstream socket is made with Node's documented `onread` option and one shared
 * buffer (reads happen one at a time on the event loop, and each is handed on before the next
 * begins). What a read brought is then copied:
 * - for a socket with a sink (the relay's flow, once the proxy's handshake is over), into a
 *   pooled slab (`readSlabs`): the sink gets the copy and its slab, holds one reference, and the
 *   send buffer that keeps the bytes holds another until the app acknowledges them;
 * - for any other socket (a handshake in progress, a DNS query to a resolver), into a fresh
 *   Buffer emitted as 'data', as Node would have: their listeners do not change.
 * Backpressure is unchanged: `pause()` on such a socket stops reading (Node's `onread` sockets
 * do readStop), `resume()` starts it again. EOF and errors come as before ('end', 'error').
 */
import type { OnReadOpts, Socket } from 'node:net';
import { RecvSlabs, type RecvSlab } from '../stack/tcp/recv-slabs.js';

/** Who takes a socket's reads once its setup is over. */
export interface ReadSink {
  /** `chunk` lives in `slab` (undefined: a buffer of its own); the sink owns one reference. */
  upstreamChunk(chunk: Uint8Array, slab: RecvSlab | undefined): void;
}

const SINK = Symbol('tunroute.readSink');
type SinkSocket = Socket & { [SINK]?: ReadSink };

/** 64 KiB: what a net.Socket reads at once by default. */
const READ_BUFFER = new Uint8Array(64 * 1024);

/** The pool the copies of upstream reads come from. */
export const readSlabs = new RecvSlabs();

function onRead(this: SinkSocket, nread: number, buf: Uint8Array): boolean {
  const bytes = buf.subarray(0, nread);
  const sink = this[SINK];
  if (sink !== undefined) {
    const chunk = readSlabs.copy(bytes);
    sink.upstreamChunk(chunk, readSlabs.lastSlab);
  } else {
    this.emit('data', Buffer.from(bytes));
  }
  return true;
}

/** Spread into a socket's constructor options: its reads go through the shared buffer. */
export const POOLED_READS: { onread: OnReadOpts } = { onread: { buffer: READ_BUFFER, callback: onRead } };

/** From now on the socket's reads go to `sink` as pooled copies, not as 'data' events. */
export function setReadSink(socket: Socket, sink: ReadSink | undefined): void {
  (socket as SinkSocket)[SINK] = sink;
}
