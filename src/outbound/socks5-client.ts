/**
 * Our SOCKS5 client (RFC 1928, username/password RFC 1929): a small state machine on a
 * net.Socket, driven by the socket's events, shared by CONNECT (socks5.ts) and UDP ASSOCIATE
 * (socks5-udp.ts). It replaces the npm `socks` package, whose per-connection machinery
 * (promises per step, a timer it never cleared, closures, message strings we had to parse)
 * cost more than the handshake itself.
 *
 * Per connection it holds one socket, one Socks5Handshake object and the caller's owner
 * object: the socket's listeners are module-level functions that find the handshake through
 * the socket (no closures), and all handshakes of one proxy share one deadline timer (the
 * Socks5Connector's sweep), not one timer each.
 *
 * Pipelining (fewer round trips). With a single method offered, the proxy's choice is known
 * in advance (no-auth without credentials, username/password with them), so the greeting,
 * the credentials and the request can leave in ONE write:
 *
 *   step by step:  greeting → method reply → (auth → auth reply) → request → reply   2–3 RTT
 *   pipelined:     greeting + (auth) + request → method reply, (auth reply), reply    1 RTT
 *
 * Not every proxy reads that: microsocks handles the greeting and drops the rest of the
 * segment, then waits for a request that never comes (FACTS.md). We learn it per proxy
 * (host:port) and start OPTIMISTIC: the first attempt to an unknown proxy is pipelined.
 * Why optimistic: the conservative start (step by step until proven otherwise) can never
 * prove anything — a proxy has to be tried pipelined once to know — and a proxy that breaks
 * costs the learning attempt only one probe window (PIPELINE_PROBE_MIN_MS, ~0.1 s on loopback
 * against microsocks, measured in test/unit/socks5-client.test.ts), once per process. While
 * the verdict is open, one attempt at a time is the pipelined probe and the others go step by
 * step. Signs that point at the pipelining, seen by the probe:
 *   - the proxy closes or resets the connection before its last reply;
 *   - the method reply arrives, but no further reply within the probe window;
 *   - with credentials, the proxy refuses the single method offered (0xff): it may want the
 *     method we did not offer (a proxy without auth, given credentials anyway).
 * Then the attempt starts over on a new connection, step by step, within the same deadline,
 * and if that succeeds the proxy is remembered as "breaks" (for a silent proxy only when the
 * step-by-step CONNECT came back within the probe window, so that a slow destination does
 * not teach us a wrong verdict). A pipelined attempt that gets any CONNECT reply (success or
 * failure) proves the proxy reads pipelined requests: "works", and no more probing.
 */
import type { Socket } from 'node:net';
import { discardSetupSocket, releaseSetupSocket, setupSocket, type SetupSocket, type SocketSetup } from './setup-socket.js';
import { PROXY_DOWN_CODES, type UpstreamReason } from './outbound.js';
import { DeadlineSweep } from './deadline-sweep.js';
import {
  SOCKS5_METHOD_NO_AUTH,
  SOCKS5_METHOD_NONE_ACCEPTABLE,
  SOCKS5_METHOD_USER_PASS,
  Socks5WireError,
  emitGreeting,
  emitUserPassRequest,
  parseAuthReply,
  parseMethodReply,
  parseReply,
  replyLength,
  requestLength,
  writeRequest,
  type Socks5Address,
} from './socks5-wire.js';

/** SOCKS5 reply codes (RFC 1928 §6) and what each means to the stack. */
export const SOCKS5_REPLY_REASONS: ReadonlyMap<number, UpstreamReason> = new Map<number, UpstreamReason>([
  [0x01, 'unreachable'], // general SOCKS server failure (microsocks: any other errno)
  [0x02, 'not_allowed'], // connection not allowed by ruleset
  [0x03, 'unreachable'], // network unreachable
  [0x04, 'unreachable'], // host unreachable
  [0x05, 'refused'], // connection refused
  [0x06, 'timeout'], // TTL expired (microsocks and dante send it when their connect times out)
  [0x07, 'protocol'], // command not supported
  [0x08, 'protocol'], // address type not supported
]);

const SOCKS5_REPLY_TEXT: readonly string[] = [
  'succeeded',
  'general SOCKS server failure',
  'connection not allowed by ruleset',
  'network unreachable',
  'host unreachable',
  'connection refused',
  'TTL expired',
  'command not supported',
  'address type not supported',
];

/**
 * How long a learning (pipelined, verdict unknown) attempt waits after the method reply for
 * the next reply before it suspects the pipelining: this floor, or 4× the time the method
 * reply took, whichever is longer (the proxy's own connect to the destination has to fit).
 */
export const PIPELINE_PROBE_MIN_MS = 100;

export type Socks5PipelineMode = 'learn' | 'on' | 'off';
export type Socks5PipelineVerdict = 'works' | 'breaks';

/** What we learnt about each proxy (key host:port). One per process by default. */
export class Socks5PipelineMemory {
  private readonly verdicts = new Map<string, Socks5PipelineVerdict>();
  get(key: string): Socks5PipelineVerdict | undefined {
    return this.verdicts.get(key);
  }
  set(key: string, v: Socks5PipelineVerdict): void {
    this.verdicts.set(key, v);
  }
  clear(): void {
    this.verdicts.clear();
  }
}

export const socks5PipelineMemory = new Socks5PipelineMemory();

/** Why a handshake failed: the reason for the stack and a sentence for the UpstreamError. */
export interface Socks5Failure {
  readonly reason: UpstreamReason;
  readonly detail: string;
  /** The reply code, when the proxy sent a failure reply. */
  readonly replyCode?: number;
  readonly cause?: unknown;
}

/** The caller's side of one handshake (one object per attempt, so no closures are needed). */
export interface Socks5HandshakeOwner {
  /**
   * The proxy granted the request. The socket is paused, with bytes that came after the reply
   * put back in its read buffer, and has no listeners of ours left. `bound` is the reply's
   * address (parsed only when the handshake was started with wantBound).
   */
  handshakeDone(socket: Socket, bound: Socks5Address | undefined): void;
  /** The handshake failed; the socket is already destroyed. */
  handshakeFailed(failure: Socks5Failure): void;
}

export interface Socks5ConnectorOptions {
  readonly host: string;
  readonly port: number;
  readonly auth?: { readonly username: string; readonly password: string };
  /** 'learn' (default): pipeline unless this proxy was seen to break it; 'on'/'off': always/never. */
  readonly pipeline?: Socks5PipelineMode;
  readonly memory?: Socks5PipelineMemory;
}

type Step = 'connect' | 'method' | 'auth' | 'reply' | 'done';
type FallbackWhy = 'none' | 'closed' | 'silent' | 'method';

/** One proxy's settings and the deadline sweep shared by all its handshakes. */
export class Socks5Connector {
  readonly host: string;
  readonly port: number;
  /** host:port, the key of the pipelining memory. */
  readonly key: string;
  readonly mode: Socks5PipelineMode;
  readonly memory: Socks5PipelineMemory;
  /** The greeting when pipelining: one method, the one we will use. */
  readonly pipelinedGreeting: Buffer;
  /** The greeting step by step: with credentials, both methods (the proxy may not want them). */
  readonly stepwiseGreeting: Buffer;
  /** The RFC 1929 request, built once; undefined without credentials. */
  readonly authRequest: Buffer | undefined;
  /** Handshakes in flight, and the one timer of their deadlines. */
  readonly deadlines = new DeadlineSweep<Socks5Handshake>();
  /**
   * Whether a learning (pipelined, verdict unknown) handshake is in flight. One probe at a
   * time: the others go step by step meanwhile, so that a burst of connects to a new proxy
   * (1,000 at once) cannot turn into 1,000 probe timeouts and retries when it is slow.
   */
  probing = false;

  constructor(opts: Socks5ConnectorOptions) {
    this.host = opts.host;
    this.port = opts.port;
    this.key = `${opts.host}:${opts.port}`;
    this.mode = opts.pipeline ?? 'learn';
    this.memory = opts.memory ?? socks5PipelineMemory;
    this.authRequest = opts.auth === undefined ? undefined : emitUserPassRequest(opts.auth.username, opts.auth.password);
    this.pipelinedGreeting = emitGreeting([this.authRequest === undefined ? SOCKS5_METHOD_NO_AUTH : SOCKS5_METHOD_USER_PASS]);
    this.stepwiseGreeting = this.authRequest === undefined ? this.pipelinedGreeting : emitGreeting([SOCKS5_METHOD_NO_AUTH, SOCKS5_METHOD_USER_PASS]);
  }

  /** What we know about this proxy and pipelining. */
  get pipelineVerdict(): Socks5PipelineVerdict | undefined {
    return this.memory.get(this.key);
  }

  /** Whether the next handshake starts pipelined, and whether it is the probe (see `probing`). */
  pipelines(): 'no' | 'yes' | 'probe' {
    if (this.mode !== 'learn') return this.mode === 'on' ? 'yes' : 'no';
    const v = this.memory.get(this.key);
    if (v !== undefined) return v === 'works' ? 'yes' : 'no';
    if (this.probing) return 'no';
    this.probing = true;
    return 'probe';
  }

  /**
   * Connect to the proxy and run the handshake for `cmd` to `dst`; `owner` hears the outcome
   * once. The returned handshake can be aborted with fail().
   */
  open(cmd: number, dst: Socks5Address, timeoutMs: number, owner: Socks5HandshakeOwner, wantBound = false): Socks5Handshake {
    const h = new Socks5Handshake(this, cmd, dst, performance.now() + timeoutMs, timeoutMs, owner, wantBound);
    this.deadlines.add(h);
    h.start();
    return h;
  }

  /** Fail every handshake in flight (the outbound is closing). */
  failAll(failure: Socks5Failure): void {
    for (const h of [...this.deadlines.pending]) h.fail(failure);
  }
}

/** One handshake (and, after a fallback, its step-by-step retry on a fresh connection). */
export class Socks5Handshake implements SocketSetup {
  private socket: SetupSocket | undefined;
  private step: Step = 'connect';
  private pipelined = false;
  private fallbackWhy: FallbackWhy = 'none';
  /** Received bytes not yet consumed (only when a message arrived split). */
  private buf: Buffer | undefined;
  private connectedAt = 0;
  private probeAt = Infinity;
  private probeWindowMs = 0;
  /** Whether the method reply picked username/password. */
  private authing = false;
  /** Whether this is the connector's one learning probe (pipelined while the verdict is open). */
  private probe = false;

  constructor(
    private readonly connector: Socks5Connector,
    private readonly cmd: number,
    private readonly dst: Socks5Address,
    readonly deadline: number,
    private readonly timeoutMs: number,
    private readonly owner: Socks5HandshakeOwner,
    private readonly wantBound: boolean,
  ) {}

  /** Whether this attempt went out pipelined (for tests and counters). */
  get wasPipelined(): boolean {
    return this.pipelined;
  }

  /** Why it fell back to step by step, if it did. */
  get fallback(): FallbackWhy {
    return this.fallbackWhy;
  }

  wakeAt(): number {
    return Math.min(this.deadline, this.probeAt);
  }

  start(): void {
    // (Nagle is off before the first byte, no cork, no MSG_MORE: FACTS.md's 200 ms stall.)
    const s = setupSocket(this);
    this.socket = s;
    this.step = 'connect';
    this.buf = undefined;
    s.connect({ host: this.connector.host, port: this.connector.port });
  }

  connected(): void {
    const s = this.socket;
    if (s === undefined || this.step !== 'connect') return;
    this.connectedAt = performance.now();
    this.step = 'method';
    const c = this.connector;
    const how = this.fallbackWhy === 'none' ? c.pipelines() : 'no';
    this.pipelined = how !== 'no';
    this.probe = how === 'probe';
    if (!this.pipelined) {
      s.write(c.stepwiseGreeting);
      return;
    }
    const g = c.pipelinedGreeting;
    const a = c.authRequest;
    const out = Buffer.allocUnsafe(g.length + (a?.length ?? 0) + requestLength(this.dst));
    g.copy(out, 0);
    if (a !== undefined) a.copy(out, g.length);
    writeRequest(out, g.length + (a?.length ?? 0), this.cmd, this.dst);
    s.write(out);
  }

  received(chunk: Buffer): void {
    if (this.step === 'done') return;
    let b = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = undefined;
    try {
      for (;;) {
        if (this.step === 'method') {
          const m = parseMethodReply(b);
          if (m === undefined) break;
          b = b.subarray(m.length);
          if (!this.onMethod(m.method)) return;
        } else if (this.step === 'auth') {
          const a = parseAuthReply(b);
          if (a === undefined) break;
          b = b.subarray(a.length);
          if (a.status !== 0) {
            this.fail({ reason: 'auth_failed', detail: 'the proxy rejected the user name or password' });
            return;
          }
          this.step = 'reply';
          if (!this.pipelined) this.sendRequest();
        } else if (this.step === 'reply') {
          const n = replyLength(b);
          if (n < 0) break;
          this.onReply(b, n);
          return;
        } else return;
      }
    } catch (e) {
      if (!(e instanceof Socks5WireError)) throw e;
      this.fail({ reason: 'protocol', detail: `the proxy does not speak SOCKS5 (${e.message})`, cause: e });
      return;
    }
    if (b.length > 0) this.buf = Buffer.from(b);
  }

  /** The method reply; false when the handshake is over (failed or restarted). */
  private onMethod(method: number): boolean {
    const c = this.connector;
    const haveAuth = c.authRequest !== undefined;
    if (method === SOCKS5_METHOD_NONE_ACCEPTABLE) {
      if (this.pipelined && haveAuth && c.mode === 'learn') {
        this.restart('method');
        return false;
      }
      this.fail({ reason: 'auth_failed', detail: 'the proxy accepts none of our authentication methods (a user name and password may be required)' });
      return false;
    }
    const offered = method === SOCKS5_METHOD_USER_PASS ? haveAuth : method === SOCKS5_METHOD_NO_AUTH && !(this.pipelined && haveAuth);
    if (!offered) {
      this.fail({ reason: 'protocol', detail: `the proxy chose authentication method 0x${method.toString(16).padStart(2, '0')}, which we did not offer` });
      return false;
    }
    this.authing = method === SOCKS5_METHOD_USER_PASS;
    this.step = this.authing ? 'auth' : 'reply';
    if (this.pipelined) {
      if (this.learning()) {
        this.probeWindowMs = Math.max(PIPELINE_PROBE_MIN_MS, 4 * (performance.now() - this.connectedAt));
        this.probeAt = performance.now() + this.probeWindowMs;
        c.deadlines.wakeBy(this.probeAt);
      }
    } else if (this.authing) this.socket?.write(c.authRequest as Buffer);
    else this.sendRequest();
    return true;
  }

  private sendRequest(): void {
    const b = Buffer.allocUnsafe(requestLength(this.dst));
    writeRequest(b, 0, this.cmd, this.dst);
    this.socket?.write(b);
  }

  private onReply(b: Buffer, n: number): void {
    const c = this.connector;
    const rep = b[1];
    this.probeAt = Infinity;
    if (this.pipelined) {
      if (c.mode === 'learn') c.memory.set(c.key, 'works');
      this.releaseProbe();
    } else if (this.fallbackWhy !== 'none' && rep === 0) {
      const quick = this.fallbackWhy !== 'silent' || performance.now() - this.connectedAt < this.probeWindowMs;
      if (quick) c.memory.set(c.key, 'breaks');
    }
    if (rep !== 0) {
      const text = SOCKS5_REPLY_TEXT[rep] ?? 'unknown reply code';
      this.fail({ reason: SOCKS5_REPLY_REASONS.get(rep) ?? 'protocol', replyCode: rep, detail: `the proxy replied 0x${rep.toString(16).padStart(2, '0')} (${text})` });
      return;
    }
    const bound = this.wantBound ? parseReply(b)?.bound : undefined;
    const s = this.socket as SetupSocket;
    this.finish();
    this.socket = undefined;
    releaseSetupSocket(s);
    // Bytes the destination sent right behind the reply (an SSH or SMTP banner): back to the
    // front of the read buffer, for the caller to read once it resumes the socket.
    if (b.length > n) s.unshift(Buffer.from(b.subarray(n)));
    this.owner.handshakeDone(s, bound);
  }

  socketError(err: NodeJS.ErrnoException): void {
    if (this.step === 'done') return;
    if (this.step === 'connect') {
      const code = err.code ?? 'unknown error';
      const known = PROXY_DOWN_CODES.has(code) ? '' : ' (unexpected error)';
      this.fail({ reason: 'proxy_down', detail: `cannot reach the proxy: ${code}${known}`, cause: err });
      return;
    }
    this.hungUp(err);
  }

  socketEnd(): void {
    if (this.step !== 'done') this.hungUp(undefined);
  }

  /** The proxy closed or reset the connection in the middle of the handshake. */
  private hungUp(cause: unknown): void {
    // While learning, any hang-up of a pipelined handshake may be the pipelining's fault; the
    // step-by-step retry tells (a proxy that is really down fails it too, and teaches nothing).
    if (this.learning()) {
      this.restart('closed');
      return;
    }
    this.fail({ reason: 'proxy_down', detail: 'the proxy closed the connection during the SOCKS5 handshake', cause });
  }

  /** The probe, while the verdict on this proxy is still open. */
  private learning(): boolean {
    const c = this.connector;
    return this.probe && c.memory.get(c.key) === undefined;
  }

  private releaseProbe(): void {
    if (!this.probe) return;
    this.probe = false;
    this.connector.probing = false;
  }

  wake(now: number): void {
    if (this.step === 'done') return;
    if (now >= this.deadline) {
      // A proxy that does not even complete the TCP handshake is down (or black-holed), which
      // says more than 'timeout'; once it accepted, a slow answer is a timeout.
      if (this.step === 'connect') this.fail({ reason: 'proxy_down', detail: `the proxy did not accept a TCP connection within ${this.timeoutMs} ms` });
      else this.fail({ reason: 'timeout', detail: `the SOCKS5 handshake took longer than ${this.timeoutMs} ms` });
      return;
    }
    if (now >= this.probeAt) {
      if (this.learning()) this.restart('silent');
      else this.probeAt = Infinity;
    }
  }

  /** Give up the pipelined connection and start over step by step, within the same deadline. */
  private restart(why: FallbackWhy): void {
    this.releaseProbe();
    this.dropSocket();
    this.fallbackWhy = why;
    this.probeAt = Infinity;
    this.pipelined = false;
    this.start();
  }

  /** End with `failure` (idempotent; also the abort path). */
  fail(failure: Socks5Failure): void {
    if (this.step === 'done') return;
    this.finish();
    this.dropSocket();
    this.owner.handshakeFailed(failure);
  }

  private finish(): void {
    this.releaseProbe();
    this.step = 'done';
    this.probeAt = Infinity;
    this.buf = undefined;
    this.connector.deadlines.pending.delete(this);
    if (this.socket !== undefined) this.socket.setup = undefined;
  }

  private dropSocket(): void {
    const s = this.socket;
    if (s === undefined) return;
    this.socket = undefined;
    discardSetupSocket(s);
  }
}
