/**
 * A TCP relay that adds latency, for a kernel without netem (FACTS.md): run inside a lab
 * namespace as
 *
 *   node dist-tools/tools/lab/delay-relay.js LISTEN_IP LISTEN_PORT TARGET_IP TARGET_PORT DELAY_MS
 *
 * it accepts, connects onward, and holds every chunk DELAY_MS in each direction before
 * forwarding it. Each direction is a timer queue: chunks leave in arrival order, each no sooner
 * than DELAY_MS after it arrived, and a half-close (FIN) is held like a chunk. Backpressure is
 * kept: while the receiving side is full, or more than HIGH_WATER bytes wait in the queue, the
 * sending side is paused. Prints `listening IP:PORT` when ready; SIGTERM ends it.
 *
 * The lab's client connects to the relay without delay (the kernel completes the handshake),
 * so a connection pays DELAY_MS per direction of application data, not for SYN/SYN-ACK; the
 * benchmark puts the same relay in front of both paths it compares.
 */
import net from 'node:net';

/** Bytes waiting in one direction's queue beyond which the sender is paused. */
const HIGH_WATER = 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;

interface Held {
  /** null: the sender's FIN. */
  chunk: Buffer | null;
  /** process.hrtime in ms at which it may leave. */
  dueMs: number;
}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** One direction of a relayed connection: `from`'s data, held, then written to `to`. */
class DelayedPipe {
  private readonly queue: Held[] = [];
  private head = 0;
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  /** `to` reported a full buffer: wait for 'drain'. */
  private blocked = false;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly delayMs: number,
  ) {
    from.on('data', (chunk: Buffer) => this.hold(chunk));
    from.on('end', () => this.hold(null));
    to.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
  }

  private hold(chunk: Buffer | null): void {
    this.queue.push({ chunk, dueMs: nowMs() + this.delayMs });
    if (chunk) {
      this.queuedBytes += chunk.length;
      if (this.queuedBytes > HIGH_WATER) this.from.pause();
    }
    if (!this.timer && !this.blocked) this.arm();
  }

  private arm(): void {
    const next = this.queue[this.head];
    if (!next) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, Math.max(0, next.dueMs - nowMs()));
  }

  /** Write every chunk that is due, in order, until `to` is full. */
  private flush(): void {
    if (this.timer || this.to.destroyed) return;
    const t = nowMs();
    while (this.head < this.queue.length) {
      const h = this.queue[this.head];
      if (!h || h.dueMs > t) break;
      this.head++;
      if (h.chunk === null) {
        this.to.end();
        continue;
      }
      this.queuedBytes -= h.chunk.length;
      if (!this.to.write(h.chunk)) {
        this.blocked = true;
        break;
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (this.queuedBytes <= HIGH_WATER / 2 && this.from.isPaused()) this.from.resume();
    if (!this.blocked) this.arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function main(argv: string[]): void {
  const [listenIp, listenPortArg, targetIp, targetPortArg, delayArg] = argv;
  const listenPort = Number(listenPortArg);
  const targetPort = Number(targetPortArg);
  const delayMs = Number(delayArg);
  if (!listenIp || !targetIp || !Number.isInteger(listenPort) || !Number.isInteger(targetPort) || !Number.isFinite(delayMs) || delayMs < 0) {
    process.stderr.write('usage: delay-relay LISTEN_IP LISTEN_PORT TARGET_IP TARGET_PORT DELAY_MS\n');
    process.exit(2);
  }
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    const upstream = net.connect({ host: targetIp, port: targetPort, allowHalfOpen: true });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pipes: DelayedPipe[] = [];
    let closed = 0;
    const giveUp = setTimeout(() => upstream.destroy(new Error('connect timeout')), CONNECT_TIMEOUT_MS);
    const teardown = (): void => {
      clearTimeout(giveUp);
      for (const p of pipes) p.stop();
      client.destroy();
      upstream.destroy();
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    // A connection ends when both directions have delivered their FIN (or on any error).
    const onClose = (): void => {
      if (++closed === 2) teardown();
    };
    client.on('close', onClose);
    upstream.on('close', onClose);
    upstream.on('connect', () => {
      clearTimeout(giveUp);
      if (client.destroyed) return teardown();
      pipes.push(new DelayedPipe(client, upstream, delayMs), new DelayedPipe(upstream, client, delayMs));
      client.resume();
    });
  });
  server.on('error', (e) => {
    process.stderr.write(`delay-relay: ${e.message}\n`);
    process.exit(1);
  });
  server.listen({ host: listenIp, port: listenPort, backlog: 1024 }, () => {
    process.stdout.write(`listening ${listenIp}:${listenPort}\n`);
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

main(process.argv.slice(2));
