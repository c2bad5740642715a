/**
 * The tunnel address (wg-quick `Address`) on a shared device — a stateless 1:1 address
 * translation (RFC 3022 "Basic NAT", one address each way) with incremental checksum updates
 * (RFC 1624).
 *
 * tun0 carries SOCKS-bound and tunnel-bound traffic alike and has one address of its own (e.g.
 * 198.18.0.1), which the kernel picks as the source for everything routed into it. The
 * tunnel's peers know this host by its tunnel address (e.g. 10.8.0.2) and drop packets from any
 * other source (their AllowedIPs). So, for each tunnel:
 *
 *   out   src = device address  →  src = tunnel address     (IPv4 header, TCP/UDP pseudo-header)
 *   in    dst = tunnel address  →  dst = device address
 *         and inside an ICMP error from the tunnel, the quoted packet's src likewise, so the
 *         kernel can match the error (port unreachable, fragmentation needed) to its socket.
 *
 * Packets from any other source (a host this machine routes for) pass unchanged. Non-first
 * fragments carry no transport header; the first one carries the transport checksum, which
 * covers the whole datagram but changes by the same pseudo-header delta.
 */
import { checksumAdjust32, getU16, getU32, internetChecksum, setU16, setU32 } from '../wire/checksum.js';
import { IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { isIcmpErrorType } from '../wire/icmp.js';

const SRC = 12;
const DST = 16;

/** Replace the address at `field` (12 src, 16 dst) of the IPv4 packet at `off`, fixing the checksums it is part of. */
function rewriteAddress(p: Uint8Array, off: number, len: number, field: typeof SRC | typeof DST, to: number): void {
  const from = getU32(p, off + field);
  setU32(p, off + field, to);
  setU16(p, off + 10, checksumAdjust32(getU16(p, off + 10), from, to));
  const fragOff = getU16(p, off + 6) & 0x1fff;
  if (fragOff !== 0) return; // no transport header in this piece
  const hl = (p[off] & 0x0f) << 2;
  const proto = p[off + 9];
  let at = -1;
  if (proto === IP_PROTO_TCP && len >= hl + 18) at = off + hl + 16;
  else if (proto === IP_PROTO_UDP && len >= hl + 8) at = off + hl + 6;
  if (at < 0) return;
  const c = getU16(p, at);
  if (proto === IP_PROTO_UDP && c === 0) return; // no checksum: stays none
  const n = checksumAdjust32(c, from, to);
  setU16(p, at, proto === IP_PROTO_UDP && n === 0 ? 0xffff : n);
}

/** Outbound: a packet from `device` leaves with source `tunnel`. True when it was rewritten. */
export function natOutbound(p: Uint8Array, off: number, len: number, device: number, tunnel: number): boolean {
  if (getU32(p, off + SRC) !== device) return false;
  rewriteAddress(p, off, len, SRC, tunnel);
  return true;
}

/** Inbound: a packet to `tunnel` is delivered to `device` (and an ICMP error's quote is mapped back). */
export function natInbound(p: Uint8Array, off: number, len: number, device: number, tunnel: number): boolean {
  if (getU32(p, off + DST) !== tunnel) return false;
  rewriteAddress(p, off, len, DST, device);
  const hl = (p[off] & 0x0f) << 2;
  if (p[off + 9] !== IP_PROTO_ICMP || (getU16(p, off + 6) & 0x3fff) !== 0) return true;
  const icmp = off + hl;
  const q = icmp + 8; // the quoted packet: its header and 8 bytes of payload
  if (len < hl + 8 + 20 || !isIcmpErrorType(p[icmp]) || p[q] >>> 4 !== 4) return true;
  if (getU32(p, q + SRC) !== tunnel) return true;
  setU32(p, q + SRC, device);
  setU16(p, q + 10, checksumAdjust32(getU16(p, q + 10), tunnel, device));
  setU16(p, icmp + 2, 0);
  setU16(p, icmp + 2, internetChecksum(p, icmp, len - hl));
  return true;
}
