/**
 * The Linux TUN device as a Link: /dev/net/tun through the native addon, read in batches (one
 * uv_poll wake-up → up to `batchSize` packets in one reused Buffer → one JS call), written one
 * write() per packet.
 *
 * Only the device is opened here. Address, MTU and link state belong to the routes layer (`ip`).
 * With `vnetHdr`, every packet read starts with the 10-byte virtio-net header and every packet
 * sent must start with one too.
 *
 * A packet longer than `slotSize` (the device MTU was raised above `mtu`) is read cut to
 * `slotSize` bytes; its IPv4 total length then exceeds the bytes, and the wire layer drops it.
 */
import { constants as osConstants } from 'node:os';
import { TunrouteError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { emptyLinkStats, type Link, type LinkDnsDecide, type LinkStats, type PacketBatch, type ReceiveHandler } from './link.js';
import { ReusedBatch } from './reused-batch.js';
import { IPV4_HEADER_LEN } from '../wire/ipv4.js';
import { UDP_HEADER_LEN } from '../wire/udp.js';
import { VNET_HDR_LEN } from '../wire/virtio-net.js';
import { isNativeErrnoError, loadNative, type NativeFd, type NativeReaderHandle, type NativeTunAddon } from '../native/addon.js';

export interface TunLinkOptions {
  /** Device name, e.g. 'tun0'; '' lets the kernel choose (tun0, tun1, …). */
  name: string;
  /** The MTU the device will be given; sizes the receive slots. */
  mtu: number;
  /** IFF_VNET_HDR (+ TUNSETVNETHDRSZ 10): packets carry a virtio-net header, GSO becomes possible. Default: `offload`. */
  vnetHdr?: boolean;
  /**
   * Checksum and TCP segmentation offload (TUNSETOFFLOAD CSUM|TSO4; needs vnetHdr): the kernel
   * hands over TCP super-packets of up to 64 KiB with partial checksums and segments the ones
   * sent back. Default false.
   */
  offload?: boolean;
  /** IFF_MULTI_QUEUE: several TunLinks may open the same name, the kernel spreads flows over them. */
  multiQueue?: boolean;
  /** Most packets handed to JS per wake-up (default 64). */
  batchSize?: number;
  logger?: Logger;
}

/** Largest IPv4 packet plus the virtio-net header. */
const MAX_GSO_PACKET = 65535 + 10;

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));
/** The empty tail of a packet written in two pieces. */
const EMPTY = new Uint8Array(0);

/** Turns an error of the addon's open() into a TunrouteError naming the cause and the fix. */
export function tunOpenError(e: unknown, name: string): TunrouteError {
  const code = isNativeErrnoError(e) ? e.code : undefined;
  switch (code) {
    case 'EPERM':
    case 'EACCES':
      return new TunrouteError(
        'TR_NOT_ROOT',
        'Opening /dev/net/tun needs root or CAP_NET_ADMIN: run tunroute with sudo.',
        e,
      );
    case 'ENOENT':
    case 'ENODEV':
      return new TunrouteError(
        'TR_NO_TUN',
        '/dev/net/tun does not exist: load the tun module (modprobe tun) or run in a container with /dev/net/tun.',
        e,
      );
    case 'EBUSY':
      return new TunrouteError(
        'TR_TUN_BUSY',
        `The TUN device name ${name} is already in use: choose another with --tun or stop the program that holds it.`,
        e,
      );
    default:
      return new TunrouteError(
        'TR_TUN_OPEN',
        `The TUN device ${name || '(any name)'} could not be opened (${e instanceof Error ? e.message : String(e)}).`,
        e,
      );
  }
}

export class TunLink implements Link {
  readonly name: string;
  readonly mtu: number;
  readonly stats: LinkStats = emptyLinkStats();
  readonly vnetHdr: boolean;
  /** Whether the kernel was told to offload checksums and TCP segmentation (TunLinkOptions.offload). */
  readonly offload: boolean;
  /** Bytes per receive slot: the largest packet the reader accepts. */
  readonly slotSize: number;
  readonly batchSize: number;

  private readonly native: NativeTunAddon;
  private readonly fd: NativeFd;
  private readonly logger: Logger;
  private readonly batch: ReusedBatch;
  private handler: ReceiveHandler | undefined;
  private reader: NativeReaderHandle | undefined;
  /** answerQueries' decide (counted in stats), kept until the reader starts. */
  private dnsDecide: { decide: LinkDnsDecide; ttl: number } | undefined;
  private closed = false;
  // sendMany scratch: grown on demand, reused.
  private txOffsets = new Uint32Array(64);
  private txLengths = new Uint32Array(64);
  /** writeMany's out-parameter: the errno of the write that stopped a batch. */
  private readonly txErrno = new Uint32Array(1);
  private txArrayBuffer: ArrayBufferLike | undefined;
  private txView: Uint8Array | undefined;

  /** Opens (creates, or attaches to) the TUN device, with the offloads asked for. Throws TunrouteError (TR_NOT_ROOT, TR_NO_TUN, TR_TUN_BUSY, TR_TUN_OPEN, TR_NATIVE_MISSING). */
  static open(opts: TunLinkOptions): TunLink {
    const { mtu } = opts;
    const batchSize = opts.batchSize ?? 64;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`mtu must be 68..65535, got ${mtu}`);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 65536) {
      throw new RangeError(`batchSize must be 1..65536, got ${batchSize}`);
    }
    const offload = opts.offload ?? false;
    const vnetHdr = opts.vnetHdr ?? offload;
    if (offload && !vnetHdr) throw new RangeError('offload needs vnetHdr: the kernel marks offloaded packets in the virtio-net header');
    const native = loadNative();
    let opened: { fd: NativeFd; name: string };
    try {
      opened = native.open(opts.name, { vnetHdr, multiQueue: opts.multiQueue ?? false });
    } catch (e) {
      throw tunOpenError(e, opts.name);
    }
    if (offload) {
      // TSO4 needs CSUM; with both, the kernel hands us up to 64 KiB TCP super-packets and
      // segments the ones we send back.
      const flags = native.TUN_F_CSUM | native.TUN_F_TSO4;
      try {
        native.setOffload(opened.fd, flags);
      } catch (e) {
        native.close(opened.fd);
        throw new TunrouteError(
          'TR_TUN_OPEN',
          `The kernel refused checksum and TCP segmentation offload (flags 0x${flags.toString(16)}) on ${opened.name} (${e instanceof Error ? e.message : String(e)}): run with --no-offload (tun.offload: false).`,
          e,
        );
      }
    }
    return new TunLink(native, opened.fd, opened.name, mtu, vnetHdr, offload, batchSize, opts.logger ?? silentLogger());
  }

  private constructor(
    native: NativeTunAddon,
    fd: NativeFd,
    name: string,
    mtu: number,
    vnetHdr: boolean,
    offload: boolean,
    batchSize: number,
    logger: Logger,
  ) {
    this.native = native;
    this.fd = fd;
    this.name = name;
    this.mtu = mtu;
    this.vnetHdr = vnetHdr;
    this.offload = offload;
    this.batchSize = batchSize;
    this.slotSize = vnetHdr ? Math.max(mtu, MAX_GSO_PACKET) : mtu;
    this.logger = logger.child({ link: name });
    // Untouched pages of this buffer are never faulted in, so a large slot costs little. The
    // reader fills it in place and brings its own offsets/lengths (set on every wake-up).
    this.batch = new ReusedBatch(Buffer.allocUnsafeSlow(this.slotSize * batchSize));
  }

  onReceive(handler: ReceiveHandler): void {
    this.handler = handler;
    if (this.reader === undefined && !this.closed) {
      this.reader = this.native.startReader(this.fd, this.batch.buf, this.batchSize, this.slotSize, this.onRead);
      this.applyDnsDecide();
    }
  }

  /**
   * Link.answerQueries: plain A queries are answered by the native reader (native/fake_dns.c)
   * with decide's address, and counted here as a packet read and one written. A build of the
   * addon without it leaves every query to the stack, as before.
   */
  answerQueries(decide: LinkDnsDecide | null, ttl: number): void {
    if (decide === null) {
      this.dnsDecide = undefined;
    } else {
      // What the device carries: the virtio-net header, IPv4 and UDP around each DNS message.
      const around = (this.vnetHdr ? VNET_HDR_LEN : 0) + IPV4_HEADER_LEN + UDP_HEADER_LEN;
      const stats = this.stats;
      const counted: LinkDnsDecide = (name, queryBytes, answerBytes) => {
        const ip = decide(name, queryBytes, answerBytes);
        if (ip !== 0) {
          stats.rxPackets++;
          stats.rxBytes += around + queryBytes;
          stats.txPackets++;
          stats.txBytes += around + answerBytes;
        }
        return ip;
      };
      this.dnsDecide = { decide: counted, ttl };
    }
    this.applyDnsDecide();
  }

  private applyDnsDecide(): void {
    if (this.reader === undefined || this.native.setDnsResponder === undefined) return;
    const d = this.dnsDecide;
    this.native.setDnsResponder(this.reader, d?.decide ?? null, this.vnetHdr ? VNET_HDR_LEN : 0, d?.ttl ?? 0);
  }

  private readonly onRead = (count: number, offsets: Uint32Array, lengths: Uint32Array): void => {
    if (count < 0) {
      // The reader stopped itself: the device is gone or the fd broke.
      this.reader = undefined;
      this.logger.error({ errno: errnoNames.get(-count) ?? -count }, 'reading the TUN device failed; receiving stopped');
      return;
    }
    const batch = this.batch;
    batch.offsets = offsets;
    batch.lengths = lengths;
    batch.count = count;
    let bytes = 0;
    for (let i = 0; i < count; i++) bytes += lengths[i];
    this.stats.rxPackets += count;
    this.stats.rxBytes += bytes;
    this.handler?.(batch);
  };

  send(packet: Uint8Array): boolean {
    if (this.closed) {
      this.stats.txErrors++;
      return false;
    }
    return this.sent(this.native.write(this.fd, packet, 0, packet.byteLength), packet.byteLength);
  }

  sendParts(head: Uint8Array, body: Uint8Array, tail: Uint8Array = EMPTY): boolean {
    if (this.closed) {
      this.stats.txErrors++;
      return false;
    }
    return this.sent(this.native.writeParts(this.fd, head, body, tail), head.byteLength + body.byteLength + tail.byteLength);
  }

  /** Count one write of `wanted` bytes that returned `n` (bytes, or -errno). */
  private sent(n: number, wanted: number): boolean {
    if (n === wanted) {
      this.stats.txPackets++;
      this.stats.txBytes += n;
      return true;
    }
    // ENOBUFS/EAGAIN (queue full), EINVAL (malformed), EIO (device down): count and drop.
    this.stats.txErrors++;
    if (this.logger.isLevelEnabled('debug')) {
      this.logger.debug({ errno: n < 0 ? (errnoNames.get(-n) ?? -n) : `short write ${n}` }, 'TUN write dropped');
    }
    return false;
  }

  /**
   * Sends packets in order. When they all live in one ArrayBuffer (an arena, a Buffer pool slab)
   * this is one native call; otherwise one per packet. A packet the kernel refuses is counted
   * in txErrors and skipped; returns how many were written.
   */
  sendMany(packets: readonly Uint8Array[]): number {
    const n = packets.length;
    if (n === 0) return 0;
    if (this.closed) {
      this.stats.txErrors += n;
      return 0;
    }
    const ab = packets[0].buffer;
    for (let i = 1; i < n; i++) {
      if (packets[i].buffer !== ab) {
        let sent = 0;
        for (const p of packets) if (this.send(p)) sent++;
        return sent;
      }
    }
    if (this.txOffsets.length < n) {
      const size = Math.max(n, this.txOffsets.length * 2);
      this.txOffsets = new Uint32Array(size);
      this.txLengths = new Uint32Array(size);
    }
    for (let i = 0; i < n; i++) {
      this.txOffsets[i] = packets[i].byteOffset;
      this.txLengths[i] = packets[i].byteLength;
    }
    if (this.txArrayBuffer !== ab || this.txView === undefined) {
      this.txArrayBuffer = ab;
      this.txView = new Uint8Array(ab);
    }
    return this.writeRun(this.txView, this.txOffsets, this.txLengths, n);
  }

  /** Sends the packets of a batch (e.g. one received from another link, or built in place). */
  sendBatch(batch: PacketBatch): number {
    if (this.closed) {
      this.stats.txErrors += batch.count;
      return 0;
    }
    return this.writeRun(batch.buf, batch.offsets, batch.lengths, batch.count);
  }

  private writeRun(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    let i = 0;
    let sent = 0;
    let bytes = 0;
    let lastErrno = 0;
    while (i < count) {
      const w =
        i === 0
          ? this.native.writeMany(this.fd, buf, offsets, lengths, count, this.txErrno)
          : this.native.writeMany(this.fd, buf, offsets.subarray(i), lengths.subarray(i), count - i, this.txErrno);
      for (let j = i; j < i + w; j++) bytes += lengths[j];
      sent += w;
      i += w;
      if (i < count) {
        // Packet i was refused: count it, skip it, go on with the rest.
        this.stats.txErrors++;
        lastErrno = this.txErrno[0];
        i++;
      }
    }
    this.stats.txPackets += sent;
    this.stats.txBytes += bytes;
    if (sent < count && this.logger.isLevelEnabled('debug')) {
      this.logger.debug({ dropped: count - sent, errno: errnoNames.get(lastErrno) ?? lastErrno }, 'TUN writes dropped');
    }
    return sent;
  }

  /** Stops the reader and closes the fd (a non-persistent device disappears); idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reader !== undefined) {
      this.native.stopReader(this.reader);
      this.reader = undefined;
    }
    this.handler = undefined;
    this.native.close(this.fd);
  }
}
