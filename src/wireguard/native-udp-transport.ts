/**
 * The tunnel's UDP socket on the addon's batched calls (native/udp.c), as wireguard-go's
 * `conn.StdNetBind` with its batched ReceiveIPv4/Send: one recvmmsg per wake-up hands the
 * tunnel a whole batch of datagrams, and everything the tunnel sends during one turn of the event
 * loop leaves in one sendmmsg. node:dgram costs a send() call, a libuv request and a callback
 * per datagram out, and a 'message' event, a Buffer and an rinfo object per datagram in.
 *
 *   send(data, to)   copies the datagram into a staging area (no allocation) and schedules one
 *                    flush per turn (a microtask: after the TUN batch or receive batch being
 *                    handled); a full staging area flushes at once
 *   flush            udpSendMany; what a full socket buffer refuses is dropped and counted in
 *                    sendDrops, like a full NIC queue (the apps' own TCP backs off)
 *   receive          the handler gets a view into the shared receive buffer, valid only during
 *                    the call (see DatagramHandler), and an Endpoint object that is reused while
 *                    the source stays the same (no string per datagram)
 *
 * IPv4 only, as the DgramTransport it replaces: a datagram to another kind of address is dropped.
 */
import { constants as osConstants } from 'node:os';
import { TunrouteError } from '../errors.js';
import type { NativeFd } from '../native/addon.js';
import type { NativeUdpAddon, NativeUdpReceiverHandle } from '../native/udp.js';
import type { Endpoint } from './endpoint.js';
import type { DatagramHandler, DgramTransportOptions, UdpTransport } from './transport.js';

export interface NativeUdpTransportOptions extends DgramTransportOptions {
  /**
   * Datagrams staged before a flush is forced (default 64). It also bounds a burst: wireguard-go
   * before 2023 reads one datagram per call from a 208 KiB receive buffer (about 90 datagrams
   * of 1,452 bytes), so bigger bursts are lost there.
   */
  maxBatch?: number;
  /** Datagrams taken per receive wake-up (default 64). */
  receiveBatch?: number;
  /**
   * Send runs of equal-size datagrams as UDP GSO messages when the kernel can: ~6x less sender
   * CPU per datagram over a veth. Off here unless asked; openUdpTransport asks (it measured
   * +15–40 % upload through wireguard-go on a quiet lab).
   */
  gso?: boolean;
  /** Bind the socket to this interface (SO_BINDTODEVICE): see native/udp.c. */
  device?: string;
}

/** The default slot: a WireGuard message for a tunnel MTU up to 2,000 bytes. */
const DEFAULT_MAX_DATAGRAM = 2048;
/** Bytes of staged datagrams before a flush is forced. */
const STAGING_BYTES = 256 * 1024;
/** Source endpoints remembered (then forgotten all at once: a new one costs one string). */
const ENDPOINT_CACHE_MAX = 4096;

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const e: NodeJS.ErrnoException = new Error(`${syscall} failed: ${code}`);
  e.code = code;
  e.errno = errno;
  e.syscall = syscall;
  return e;
}

/** '192.0.2.1' → 0xc0000201, or -1 when it is not a dotted IPv4 address. */
function parseIpv4(s: string): number {
  let v = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      part = part * 10 + (c - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return v * 256 + part;
}

function formatIpv4(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
}

/** Receive slot size for datagrams up to `max` bytes: a multiple of 64, at most 65,536. */
function slotSizeFor(max: number): number {
  return Math.min(65536, Math.max(64, Math.ceil(max / 64) * 64));
}

export class NativeUdpTransport implements UdpTransport {
  sendDrops = 0;
  /** Datagrams received and sendmmsg calls made (for tests and the benchmark). */
  readonly stats = { rxDatagrams: 0, rxBatches: 0, txDatagrams: 0, txFlushes: 0 };
  private handler: DatagramHandler | undefined;
  private closed = false;
  private receiver: NativeUdpReceiverHandle | undefined;

  // Receive: one buffer of slots, a view per slot reused while its length repeats.
  private readonly rxBuf: Buffer;
  private readonly rxViews: (Uint8Array | undefined)[];
  private readonly endpoints = new Map<number, Endpoint>();
  private lastKey = -1;
  private lastEndpoint: Endpoint | undefined;

  // Send: datagrams packed into one staging buffer, described by four parallel arrays.
  private readonly stage: Buffer;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  private readonly addrs: Uint32Array;
  private readonly ports: Uint32Array;
  private count = 0;
  private used = 0;
  private flushQueued = false;
  private flags: number;
  private lastTo: Endpoint | undefined;
  private lastAddr = -1;
  private readonly addrCache = new Map<string, number>();

  private constructor(
    private readonly native: NativeUdpAddon,
    private readonly fd: NativeFd,
    readonly port: number,
    private readonly maxBatch: number,
    receiveBatch: number,
    slotSize: number,
    gso: boolean,
    private readonly onError: ((err: Error) => void) | undefined,
  ) {
    this.flags = gso ? native.UDP_SEND_GSO : 0;
    this.stage = Buffer.allocUnsafe(Math.max(STAGING_BYTES, slotSize));
    this.offsets = new Uint32Array(maxBatch);
    this.lengths = new Uint32Array(maxBatch);
    this.addrs = new Uint32Array(maxBatch);
    this.ports = new Uint32Array(maxBatch);
    this.rxBuf = Buffer.allocUnsafe(receiveBatch * slotSize);
    this.rxViews = new Array<Uint8Array | undefined>(receiveBatch).fill(undefined);
    this.receiver = native.udpStartReceiver(fd, this.rxBuf, receiveBatch, slotSize, this.onBatch);
  }

  /**
   * Bind a UDP socket; fails in one sentence (opts.bindError, else the tunnel's) when the port
   * is taken or the address is not ours.
   */
  static open(native: NativeUdpAddon, opts: NativeUdpTransportOptions = {}): NativeUdpTransport {
    const wanted = opts.port ?? 0;
    let sock;
    try {
      sock = native.udpOpen(opts.address ?? '0.0.0.0', wanted, opts.bufferBytes ?? 4 * 1024 * 1024, opts.device);
    } catch (e) {
      const err: NodeJS.ErrnoException = e instanceof Error ? e : new Error(String(e));
      if (opts.bindError !== undefined) throw opts.bindError(err);
      const why = err.code === 'EADDRINUSE' ? 'is already in use' : `cannot be bound (${err.code ?? err.message})`;
      throw new TunrouteError('TR_UPSTREAM', `UDP port ${wanted} for the tunnel ${why}: pick another ListenPort (listenPort), or leave it out for any free port.`, err);
    }
    try {
      return new NativeUdpTransport(
        native,
        sock.fd,
        sock.port,
        Math.max(1, Math.min(1024, opts.maxBatch ?? 64)),
        Math.max(1, Math.min(1024, opts.receiveBatch ?? 64)),
        slotSizeFor(opts.maxDatagramBytes ?? DEFAULT_MAX_DATAGRAM),
        (opts.gso ?? false) && sock.gso,
        opts.onError,
      );
    } catch (e) {
      native.udpClose(sock.fd);
      throw e;
    }
  }

  onMessage(handler: DatagramHandler): void {
    this.handler = handler;
  }

  send(data: Uint8Array, to: Endpoint): boolean {
    if (this.closed) {
      this.sendDrops++;
      return false;
    }
    let addr: number;
    if (to === this.lastTo) addr = this.lastAddr;
    else {
      addr = this.addrOf(to.address);
      this.lastTo = to;
      this.lastAddr = addr;
    }
    const n = data.length;
    if (addr < 0 || n > this.stage.length) {
      this.sendDrops++;
      return false;
    }
    if (this.count === this.maxBatch || this.used + n > this.stage.length) this.flush();
    const i = this.count++;
    this.stage.set(data, this.used);
    this.offsets[i] = this.used;
    this.lengths[i] = n;
    this.addrs[i] = addr;
    this.ports[i] = to.port;
    this.used += n;
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
    return true;
  }

  private addrOf(address: string): number {
    let a = this.addrCache.get(address);
    if (a === undefined) {
      a = parseIpv4(address);
      if (this.addrCache.size >= ENDPOINT_CACHE_MAX) this.addrCache.clear();
      this.addrCache.set(address, a);
    }
    return a;
  }

  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  /** Send everything staged: one udpSendMany, more only after a refused datagram. */
  flush(): void {
    const count = this.count;
    if (count === 0) return;
    this.count = 0;
    this.used = 0;
    let i = 0;
    while (i < count) {
      const r =
        i === 0
          ? this.native.udpSendMany(this.fd, this.stage, this.offsets, this.lengths, this.addrs, this.ports, count, this.flags)
          : this.native.udpSendMany(
              this.fd,
              this.stage,
              this.offsets.subarray(i),
              this.lengths.subarray(i),
              this.addrs.subarray(i),
              this.ports.subarray(i),
              count - i,
              this.flags,
            );
      this.stats.txFlushes++;
      if (r < 0) {
        // This one datagram was refused (no route, too big, ...): drop it, go on with the rest.
        this.sendDrops++;
        i++;
        continue;
      }
      if (r === 0) break; // the socket buffer is full: the rest are dropped
      i += r;
      this.stats.txDatagrams += r;
    }
    this.sendDrops += count - i;
  }

  private readonly onBatch = (count: number, offsets: Uint32Array, lengths: Uint32Array, addrs: Uint32Array, ports: Uint32Array): void => {
    if (count < 0) {
      this.receiver = undefined; // it stopped itself
      this.onError?.(errnoError(-count, 'recvmmsg'));
      return;
    }
    this.stats.rxBatches++;
    this.stats.rxDatagrams += count;
    for (let i = 0; i < count; i++) {
      const h = this.handler;
      if (h === undefined || this.closed) return;
      const len = lengths[i];
      let view = this.rxViews[i];
      if (view === undefined || view.length !== len) {
        const off = offsets[i];
        view = this.rxBuf.subarray(off, off + len);
        this.rxViews[i] = view;
      }
      h(view, this.endpointOf(addrs[i], ports[i]));
    }
  };

  /** The Endpoint for addr:port, the same object while the source repeats. */
  private endpointOf(addr: number, port: number): Endpoint {
    const key = addr * 65536 + port;
    if (key === this.lastKey) return this.lastEndpoint!;
    let e = this.endpoints.get(key);
    if (e === undefined) {
      e = { address: formatIpv4(addr), port };
      if (this.endpoints.size >= ENDPOINT_CACHE_MAX) this.endpoints.clear();
      this.endpoints.set(key, e);
    }
    this.lastKey = key;
    this.lastEndpoint = e;
    return e;
  }

  close(): void {
    if (this.closed) return;
    this.flush(); // what this turn already sent (a last keepalive) still goes
    this.closed = true;
    this.handler = undefined;
    if (this.receiver !== undefined) this.native.udpStopReceiver(this.receiver);
    this.receiver = undefined;
    try {
      this.native.udpClose(this.fd);
    } catch (e) {
      this.onError?.(e instanceof Error ? e : new Error(String(e)));
    }
  }
}
