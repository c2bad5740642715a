/**
 * Packet-trace helpers for the TCP tests (smoltcp style): the test plays the remote peer,
 * builds its segments with named fields, and checks what the connection emits at a given time.
 * No sleeps, no clock: every call takes the time `t` (ms) explicitly.
 */
import { expect } from 'vitest';
import {
  ACK,
  SYN,
  TcpConnection,
  flagsToString,
  type CloseReason,
  type TcpConnectionOptions,
  type TcpSegment,
  type TcpSegmentOptions,
} from '../../src/stack/tcp/index.js';

export const LOCAL_PORT = 80;
export const REMOTE_PORT = 49152;

/** The connection's (local) ISS and the peer's (remote) ISS of one test family. */
export interface IssPair {
  name: string;
  local: number;
  remote: number;
}

/** Every window/sequence test runs twice: plain, and with both ISSs just below 2^32. */
export const ISS_FAMILIES: IssPair[] = [
  { name: 'plain ISS', local: 10_000, remote: 5_000_000 },
  { name: 'ISS near 2^32', local: 0xffff_fff0, remote: 0xffff_ff00 },
];

export interface SegSpec {
  flags?: number;
  seq?: number;
  ack?: number;
  window?: number;
  options?: TcpSegmentOptions;
  payload?: Uint8Array | string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function bytes(p: Uint8Array | string | undefined): Uint8Array {
  if (p === undefined) return new Uint8Array(0);
  return typeof p === 'string' ? enc.encode(p) : p;
}

export function text(p: Uint8Array): string {
  return dec.decode(p);
}

/** A segment from the remote peer to us. */
export function seg(spec: SegSpec): TcpSegment {
  return {
    srcPort: REMOTE_PORT,
    dstPort: LOCAL_PORT,
    seq: (spec.seq ?? 0) >>> 0,
    ack: (spec.ack ?? 0) >>> 0,
    flags: spec.flags ?? ACK,
    window: spec.window ?? 65535,
    options: spec.options ?? {},
    payload: bytes(spec.payload),
  };
}

export function send(c: TcpConnection, t: number, spec: SegSpec): void {
  c.input(t, seg(spec));
}

/** Everything the connection emits when polled at `t`. */
export function recv(c: TcpConnection, t: number): TcpSegment[] {
  const out: TcpSegment[] = [];
  c.poll(t, (s) => out.push(s));
  return out;
}

export function describeSeg(s: TcpSegment): string {
  const opts = Object.keys(s.options).length > 0 ? ` opts=${JSON.stringify(s.options)}` : '';
  return `[${flagsToString(s.flags)} seq=${s.seq} ack=${s.ack} win=${s.window} len=${s.payload.length}${opts}]`;
}

/** Poll at `t` and check the emitted segments field by field (only the fields given). */
export function expectSegments(c: TcpConnection, t: number, expected: SegSpec[]): TcpSegment[] {
  const got = recv(c, t);
  const trace = got.map(describeSeg).join(' ');
  expect(got.length, `segments at t=${t}: ${trace}`).toBe(expected.length);
  expected.forEach((e, i) => {
    const s = got[i];
    const where = `segment ${i} at t=${t}: ${describeSeg(s)}`;
    expect(s.srcPort, where).toBe(LOCAL_PORT);
    expect(s.dstPort, where).toBe(REMOTE_PORT);
    if (e.flags !== undefined) expect(flagsToString(s.flags), where).toBe(flagsToString(e.flags));
    if (e.seq !== undefined) expect(s.seq, where).toBe(e.seq >>> 0);
    if (e.ack !== undefined) expect(s.ack, where).toBe(e.ack >>> 0);
    if (e.window !== undefined) expect(s.window, where).toBe(e.window);
    if (e.options !== undefined) expect(s.options, where).toEqual(e.options);
    if (e.payload !== undefined) expect(Array.from(s.payload), where).toEqual(Array.from(bytes(e.payload)));
  });
  return got;
}

export function expectNothing(c: TcpConnection, t: number): void {
  expectSegments(c, t, []);
}

/** Records the listener events in order. */
export class EventLog {
  events: string[] = [];
  data: Uint8Array[] = [];
  closed: CloseReason | undefined;
  autoConsume = false;
  conn: TcpConnection | undefined;

  readonly listener = {
    onEstablished: (): void => void this.events.push('established'),
    onData: (chunk: Uint8Array): void => {
      this.events.push(`data:${chunk.length}`);
      // Consumed bytes may be reused by the stack (recv-slabs.ts): keep a copy of those.
      this.data.push(this.autoConsume ? chunk.slice() : chunk);
      if (this.autoConsume) this.conn?.consumed(chunk.length);
    },
    onPeerFin: (): void => void this.events.push('peer-fin'),
    onWritable: (free: number): void => void this.events.push(`writable:${free}`),
    onClosed: (reason: CloseReason): void => {
      this.events.push(`closed:${reason}`);
      this.closed = reason;
    },
  };

  /** All delivered bytes as a string. */
  received(): string {
    return this.data.map(text).join('');
  }

  receivedBytes(): number {
    return this.data.reduce((n, d) => n + d.length, 0);
  }
}

/** Options of the fixtures: small numbers, no options beyond MSS unless a test turns them on. */
export function baseOpts(iss: number, extra: Partial<TcpConnectionOptions> = {}): TcpConnectionOptions {
  return {
    iss,
    mss: 1000,
    rcvBufSize: 8000,
    sndBufSize: 16000,
    windowScaling: false,
    sack: false,
    timestamps: false,
    delayedAckMs: 40,
    timeWaitMs: 1000,
    ...extra,
  };
}

/** A fixture: the connection, its event log, and sequence helpers for both sides. */
export interface Fx {
  c: TcpConnection;
  ev: EventLog;
  /** Our sequence number at offset n from our ISS. */
  L: (n: number) => number;
  /** The peer's sequence number at offset n from its ISS. */
  R: (n: number) => number;
  iss: IssPair;
}

function fx(c: TcpConnection, ev: EventLog, iss: IssPair): Fx {
  ev.conn = c;
  return {
    c,
    ev,
    iss,
    L: (n) => (iss.local + n) >>> 0,
    R: (n) => (iss.remote + n) >>> 0,
  };
}

export interface FixtureOpts {
  opts?: Partial<TcpConnectionOptions>;
  /** Options of the peer's SYN. */
  synOptions?: TcpSegmentOptions;
  /** The peer's window field (after the SYN). */
  window?: number;
}

/** Passive: the peer's SYN arrived at t=0; accept still pending. */
export function acceptPending(iss: IssPair, f: FixtureOpts = {}): Fx {
  const ev = new EventLog();
  const syn = seg({ flags: SYN, seq: iss.remote, window: f.window ?? 65535, options: f.synOptions ?? { mss: 1000 } });
  const c = TcpConnection.accept(0, syn, { ...baseOpts(iss.local, f.opts), listener: ev.listener });
  return fx(c, ev, iss);
}

/** Passive: SYN-ACK sent at t=0. */
export function synReceived(iss: IssPair, f: FixtureOpts = {}): Fx {
  const x = acceptPending(iss, f);
  x.c.completeAccept(0);
  const out = recv(x.c, 0);
  expect(out.map(describeSeg)).toHaveLength(1);
  expect(out[0].flags).toBe(SYN | ACK);
  return x;
}

/** Passive: handshake completed at t=0 (the peer's ACK arrived). */
export function established(iss: IssPair, f: FixtureOpts = {}): Fx {
  const x = synReceived(iss, f);
  send(x.c, 0, { flags: ACK, seq: x.R(1), ack: x.L(1), window: f.window ?? 65535 });
  expect(x.c.state).toBe('ESTABLISHED');
  expect(recv(x.c, 0)).toHaveLength(0);
  x.ev.events.length = 0;
  return x;
}

/** Active: SYN sent at t=0. */
export function synSent(iss: IssPair, f: FixtureOpts = {}): Fx {
  const ev = new EventLog();
  const c = TcpConnection.connect(0, {
    ...baseOpts(iss.local, f.opts),
    localPort: LOCAL_PORT,
    remotePort: REMOTE_PORT,
    listener: ev.listener,
  });
  const out = recv(c, 0);
  expect(out).toHaveLength(1);
  expect(out[0].flags).toBe(SYN);
  return fx(c, ev, iss);
}

/** n bytes of a recognisable pattern starting at stream offset `from`. */
export function pattern(n: number, from = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (from + i) % 251;
  return b;
}
