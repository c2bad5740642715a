/**
 * The virtio-net header (virtio spec 1.1 §5.1.6, `struct virtio_net_hdr`) that a TUN device
 * opened with IFF_VNET_HDR puts before every packet, both ways. It is what lets the kernel hand
 * us 64 KiB TCP "super-packets" (GSO) and take them back to segment itself: one JS event per
 * 64 KiB instead of per 1.5 KiB. Fields are little-endian (TUNSETVNETLE is not needed on x86 /
 * little-endian hosts; this module assumes little-endian, as the kernel does by default there).
 *
 *   0      1         2          4          6            8             10
 *   +------+---------+----------+----------+------------+-------------+
 *   |flags |gso_type | hdr_len  | gso_size | csum_start | csum_offset |
 *   +------+---------+----------+----------+------------+-------------+
 */

export const VNET_HDR_LEN = 10;

/** flags: the transport checksum is partial (pseudo-header only); complete it at csum_start + csum_offset. */
export const VNET_F_NEEDS_CSUM = 1;
/** flags: the checksum was already verified (receive side). */
export const VNET_F_DATA_VALID = 2;

export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

export function vnetFlags(b: Uint8Array, off: number): number {
  return b[off];
}
export function vnetGsoType(b: Uint8Array, off: number): number {
  return b[off + 1];
}
export function vnetGsoSize(b: Uint8Array, off: number): number {
  return b[off + 4] | (b[off + 5] << 8);
}

function le16(b: Uint8Array, i: number, v: number): void {
  b[i] = v & 0xff;
  b[i + 1] = (v >>> 8) & 0xff;
}

/** A header that asks nothing of the kernel: the packet is complete as it is. */
export function writeVnetNone(b: Uint8Array, off: number): void {
  b.fill(0, off, off + VNET_HDR_LEN);
}

/**
 * A header for an IPv4/TCP packet whose TCP checksum holds only the pseudo-header sum: the
 * kernel completes it, and when `gsoSize` > 0 and the payload is longer, it cuts the packet
 * into `gsoSize`-byte segments first (each with its own headers and checksum).
 */
export function writeVnetTcp(b: Uint8Array, off: number, ipHeaderLen: number, tcpHeaderLen: number, gsoSize: number): void {
  b[off] = VNET_F_NEEDS_CSUM;
  b[off + 1] = gsoSize > 0 ? VNET_GSO_TCPV4 : VNET_GSO_NONE;
  le16(b, off + 2, ipHeaderLen + tcpHeaderLen);
  le16(b, off + 4, gsoSize);
  le16(b, off + 6, ipHeaderLen);
  le16(b, off + 8, 16); // TCP checksum offset within the TCP header
}
