/**
 * TCP receive coalescing on the way into the device — what Linux GRO does for a NIC and
 * wireguard-go's tun/offload_linux.go (`tcpGRO`) does for its TUN: consecutive segments of one
 * TCP flow that the tunnel opened in the same turn of the event loop are written to tun0 as one
 * super-packet with a virtio header (gso_type TCPV4, gso_size = the segments' payload size,
 * partial checksum). The kernel takes one write and one pass through its stack instead of one
 * per 1.4 KB segment, and re-segments only if it has to forward the packet.
 *
 *   seg 0 | IP | TCP seq s       | g bytes |
 *   seg 1 | IP | TCP seq s+g     | g bytes |        →   | vnet | IP (len) | TCP seq s | 2g + k bytes |
 *   seg 2 | IP | TCP seq s+2g    | k ≤ g   |
 *
 * Segments are merged only when nothing but the payload and its position differs (Linux's
 * tcp_gro_receive rules, simplified): IPv4 without options, not a fragment, the same addresses,
 * ports, TOS, TTL and DF, the same ACK number, window and TCP options (timestamps), flags ACK
 * (PSH allowed on the last one, which closes the group), each segment starting where the last
 * one ended, and every segment but the last exactly gso_size long. Everything else is written
 * as it is, in order within its flow.
 */
import { getU16, getU32, internetChecksum, pseudoHeaderSum, setU16 } from '../wire/checksum.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { TCP_ACK, TCP_PSH } from '../wire/tcp.js';
import { VNET_HDR_LEN, writeVnetNone, writeVnetTcp } from '../wire/virtio-net.js';

/** Receives one frame for the device: virtio header then packet; valid only during the call. */
export type FrameSink = (frame: Uint8Array) => boolean;

interface Group {
  first: Uint8Array;
  segs: Uint8Array[];
  /** Payload bytes so far. */
  payload: number;
  /** Payload size of every segment but the last. */
  gso: number;
  hdr: number;
  closed: boolean;
}

/** Most flows tracked at once within one batch (a batch rarely holds more than a few). */
const MAX_GROUPS = 8;
const MAX_IP_LEN = 65535;

export interface GroStats {
  /** Frames written, and the packets they carried. */
  frames: number;
  packets: number;
  /** Frames that were super-packets of two or more segments. */
  superPackets: number;
}

export class TcpCoalescer {
  readonly stats: GroStats = { frames: 0, packets: 0, superPackets: 0 };
  private readonly groups: Group[] = [];
  private readonly buf = new Uint8Array(VNET_HDR_LEN + MAX_IP_LEN);
  private failed = 0;

  constructor(private readonly sink: FrameSink) {}

  /**
   * Write `packets` (whole IPv4 packets, in arrival order) to the sink, merging what can be
   * merged. Returns how many packets the sink refused.
   */
  write(packets: readonly Uint8Array[]): number {
    this.failed = 0;
    for (let i = 0; i < packets.length; i++) this.add(packets[i]);
    for (const g of this.groups) this.emit(g);
    this.groups.length = 0;
    return this.failed;
  }

  private add(p: Uint8Array): void {
    const hdr = mergeableHeaderLen(p);
    if (hdr === 0) {
      // Not mergeable: first whatever its flow holds, then the packet itself.
      const g = p.length >= 24 && p[9] === IP_PROTO_TCP ? this.findFlow(p) : -1;
      if (g >= 0) this.emit(this.groups.splice(g, 1)[0]);
      this.emitOne(p);
      return;
    }
    const gi = this.findFlow(p);
    if (gi >= 0) {
      const g = this.groups[gi];
      if (canAppend(g, p, hdr)) {
        const n = p.length - hdr;
        g.segs.push(p);
        g.payload += n;
        if (n < g.gso || (p[33] & TCP_PSH) !== 0) g.closed = true;
        return;
      }
      this.emit(this.groups.splice(gi, 1)[0]);
    }
    if (this.groups.length >= MAX_GROUPS) this.emit(this.groups.shift()!);
    this.groups.push({ first: p, segs: [p], payload: p.length - hdr, gso: p.length - hdr, hdr, closed: (p[33] & TCP_PSH) !== 0 });
  }

  /** The open group of `p`'s flow (same addresses and ports), or -1. */
  private findFlow(p: Uint8Array): number {
    const src = getU32(p, 12);
    const dst = getU32(p, 16);
    const ports = getU32(p, 20);
    for (let i = this.groups.length - 1; i >= 0; i--) {
      const f = this.groups[i].first;
      if (getU32(f, 12) === src && getU32(f, 16) === dst && getU32(f, 20) === ports) return i;
    }
    return -1;
  }

  private emitOne(p: Uint8Array): void {
    const b = this.buf;
    writeVnetNone(b, 0);
    b.set(p, VNET_HDR_LEN);
    this.stats.frames++;
    this.stats.packets++;
    if (!this.sink(b.subarray(0, VNET_HDR_LEN + p.length))) this.failed++;
  }

  private emit(g: Group): void {
    if (g.segs.length === 1) return this.emitOne(g.first);
    const b = this.buf;
    const o = VNET_HDR_LEN;
    b.set(g.first.subarray(0, g.hdr), o);
    let at = o + g.hdr;
    for (const s of g.segs) {
      b.set(s.subarray(g.hdr), at);
      at += s.length - g.hdr;
    }
    const total = g.hdr + g.payload;
    const last = g.segs[g.segs.length - 1];
    setU16(b, o + 2, total);
    setU16(b, o + 10, 0);
    setU16(b, o + 10, internetChecksum(b, o, 20));
    b[o + 33] = g.first[33] | (last[33] & TCP_PSH);
    // Partial checksum: the pseudo-header sum, folded, not inverted; the kernel finishes it.
    setU16(b, o + 36, pseudoHeaderSum(getU32(b, o + 12), getU32(b, o + 16), IP_PROTO_TCP, total - 20));
    writeVnetTcp(b, 0, 20, g.hdr - 20, g.gso);
    this.stats.frames++;
    this.stats.packets += g.segs.length;
    this.stats.superPackets++;
    if (!this.sink(b.subarray(0, o + total))) this.failed += g.segs.length;
  }
}

/**
 * The IP + TCP header length of a packet that may start or join a group (IPv4 without options,
 * TCP, not a fragment, data with flags ACK or ACK|PSH), else 0.
 */
function mergeableHeaderLen(p: Uint8Array): number {
  if (p.length < 40 || p[0] !== 0x45 || p[9] !== IP_PROTO_TCP || (getU16(p, 6) & 0x3fff) !== 0) return 0;
  const thl = (p[32] >>> 4) << 2;
  const hdr = 20 + thl;
  if (thl < 20 || p.length <= hdr || getU16(p, 2) !== p.length) return 0;
  const flags = p[33];
  if (flags !== TCP_ACK && flags !== (TCP_ACK | TCP_PSH)) return 0;
  return hdr;
}

function canAppend(g: Group, p: Uint8Array, hdr: number): boolean {
  if (g.closed || hdr !== g.hdr) return false;
  const n = p.length - hdr;
  if (n > g.gso || hdr + g.payload + n > MAX_IP_LEN) return false;
  const f = g.first;
  const last = g.segs[g.segs.length - 1];
  if (getU32(p, 24) !== ((getU32(last, 24) + last.length - hdr) >>> 0)) return false; // seq follows on
  if (getU32(p, 28) !== getU32(f, 28) || getU16(p, 34) !== getU16(f, 34)) return false; // ack, window
  if (p[1] !== f[1] || p[8] !== f[8] || (p[6] & 0x40) !== (f[6] & 0x40)) return false; // TOS, TTL, DF
  for (let i = 40; i < hdr; i++) if (p[i] !== f[i]) return false; // TCP options (timestamps)
  return true;
}
