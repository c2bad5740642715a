/**
 * Undoing the TUN offloads before a packet is sealed — wireguard-go's tun/offload_linux.go
 * (`handleGSO`, `gsoSplit`) and tun/checksum.go, for IPv4.
 *
 * With IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4) the kernel hands tun0 packets that a NIC was
 * meant to finish (virtio spec 1.1 §5.1.6.2):
 *   - NEEDS_CSUM: the transport checksum field holds only the pseudo-header sum; the sum over
 *     the bytes from csum_start must still be added and the result stored at
 *     csum_start + csum_offset;
 *   - gso_type TCPV4: a TCP "super-packet" of up to 64 KiB, to be cut into segments of
 *     gso_size payload bytes, each with its own IPv4 and TCP header:
 *
 *       | IP | TCP | payload 0 .......................................... payload N |
 *       | IP' (len, id+0, csum) | TCP' (seq+0,      flags without FIN/PSH) | gso_size bytes |
 *       | IP' (len, id+1, csum) | TCP' (seq+g,      flags without FIN/PSH/CWR) | gso_size bytes |
 *       | IP' (len, id+k, csum) | TCP' (seq+k·g,    flags without CWR)     | the rest |
 *
 * The tunnel has no NIC: its peer must receive ordinary packets, so both are done here, and
 * every segment gets a full TCP checksum (RFC 9293 §3.1, over the pseudo-header).
 */
import { getU16, getU32, internetChecksum, pseudoHeaderSum, setU16, setU32, completePartialChecksum } from '../wire/checksum.js';
import { IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { TCP_CWR, TCP_FIN, TCP_PSH } from '../wire/tcp.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4 } from '../wire/virtio-net.js';

/** Why a packet could not be made ordinary: a GSO kind we never enable, or header fields that contradict the packet. */
export type OffloadRefusal = 'unsupported_gso' | 'bad_offload';

/** Receives each ordinary packet; the view is valid only during the call. */
export type PacketSink = (packet: Uint8Array) => void;

/**
 * The ordinary packets that the IPv4 packet at `buf[ipOff..ipOff+ipLen)`, read behind the
 * virtio-net header at `buf[vnetOff]`, stands for, one `emit` each. A packet that needs nothing
 * is emitted as it is; a partial checksum is completed in place; a super-packet is cut into
 * segments written one after another into `scratch` (which must hold the headers plus
 * gso_size bytes). Returns why nothing was emitted, or undefined.
 */
export function undoOffloads(
  buf: Uint8Array,
  vnetOff: number,
  ipOff: number,
  ipLen: number,
  scratch: Uint8Array,
  emit: PacketSink,
): OffloadRefusal | undefined {
  const flags = buf[vnetOff];
  const gsoType = buf[vnetOff + 1] & ~VNET_GSO_ECN;
  if (gsoType === VNET_GSO_TCPV4) {
    const gsoSize = buf[vnetOff + 4] | (buf[vnetOff + 5] << 8);
    return splitTcpV4(buf, ipOff, ipLen, gsoSize, scratch, emit);
  }
  if (gsoType !== VNET_GSO_NONE) return 'unsupported_gso';
  if ((flags & VNET_F_NEEDS_CSUM) !== 0) {
    const start = buf[vnetOff + 6] | (buf[vnetOff + 7] << 8);
    const field = buf[vnetOff + 8] | (buf[vnetOff + 9] << 8);
    if (!completeChecksum(buf, ipOff, ipLen, start, field)) return 'bad_offload';
  }
  emit(buf.subarray(ipOff, ipOff + ipLen));
  return undefined;
}

/**
 * Finish a partial checksum (the field holds the folded pseudo-header sum) over the bytes from
 * `start` to the end of the packet. UDP's all-zero result is sent as 0xffff (RFC 768: zero
 * means "no checksum"). False when the offsets do not fit the packet.
 */
export function completeChecksum(buf: Uint8Array, ipOff: number, ipLen: number, start: number, fieldOff: number): boolean {
  if (start < 20 || start + fieldOff + 2 > ipLen) return false;
  const at = ipOff + start + fieldOff;
  completePartialChecksum(buf, ipOff + start, ipLen - start, at);
  if (buf[ipOff + 9] === IP_PROTO_UDP && buf[at] === 0 && buf[at + 1] === 0) setU16(buf, at, 0xffff);
  return true;
}

/** Cut a TCP/IPv4 super-packet into segments of `gsoSize` payload bytes (see the diagram above). */
export function splitTcpV4(
  buf: Uint8Array,
  ipOff: number,
  ipLen: number,
  gsoSize: number,
  scratch: Uint8Array,
  emit: PacketSink,
): OffloadRefusal | undefined {
  const hl = (buf[ipOff] & 0x0f) << 2;
  if (buf[ipOff + 9] !== IP_PROTO_TCP || ipLen < hl + 20) return 'bad_offload';
  const tcp = ipOff + hl;
  const thl = (buf[tcp + 12] >>> 4) << 2;
  const hdr = hl + thl;
  if (thl < 20 || hdr > ipLen) return 'bad_offload';
  const payload = ipLen - hdr;
  const src = getU32(buf, ipOff + 12);
  const dst = getU32(buf, ipOff + 16);
  if (gsoSize === 0 || payload <= gsoSize) {
    // One segment already: only the checksum is left to do.
    setU16(buf, tcp + 16, 0);
    setU16(buf, tcp + 16, internetChecksum(buf, tcp, ipLen - hl, pseudoHeaderSum(src, dst, IP_PROTO_TCP, ipLen - hl)));
    emit(buf.subarray(ipOff, ipOff + ipLen));
    return undefined;
  }
  if (scratch.length < hdr + gsoSize) return 'bad_offload';
  const id0 = getU16(buf, ipOff + 4);
  const seq0 = getU32(buf, tcp + 4);
  const flags0 = buf[tcp + 13];
  for (let off = 0, i = 0; off < payload; off += gsoSize, i++) {
    const n = Math.min(gsoSize, payload - off);
    const last = off + n >= payload;
    scratch.set(buf.subarray(ipOff, ipOff + hdr), 0);
    scratch.set(buf.subarray(ipOff + hdr + off, ipOff + hdr + off + n), hdr);
    setU16(scratch, 2, hdr + n);
    setU16(scratch, 4, (id0 + i) & 0xffff);
    setU16(scratch, 10, 0);
    setU16(scratch, 10, internetChecksum(scratch, 0, hl));
    setU32(scratch, hl + 4, (seq0 + off) >>> 0);
    let f = flags0;
    if (!last) f &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) f &= ~TCP_CWR;
    scratch[hl + 13] = f;
    setU16(scratch, hl + 16, 0);
    setU16(scratch, hl + 16, internetChecksum(scratch, hl, thl + n, pseudoHeaderSum(src, dst, IP_PROTO_TCP, thl + n)));
    emit(scratch.subarray(0, hdr + n));
  }
  return undefined;
}
