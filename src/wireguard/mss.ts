/**
 * MSS clamping (RFC 9293 §3.7.1 Maximum Segment Size Option; what `iptables -j TCPMSS
 * --clamp-mss-to-pmtu` does on a router in front of a smaller link): a SYN crossing the tunnel
 * announces at most tunnel MTU − 40 bytes, so neither end sends segments that the tunnel would
 * have to refuse. tun0's MTU (1500 by default, for the SOCKS path) is larger than the
 * tunnel's (1420), and without this the first full-sized segments of every connection would
 * be lost to path-MTU discovery.
 *
 *   kind=2 | len=4 | MSS (16 bits)         among the options after the 20-byte TCP header
 */
import { checksumAdjust, getU16, setU16 } from '../wire/checksum.js';
import { IP_PROTO_TCP } from '../wire/ipv4.js';
import { TCP_OPT_EOL, TCP_OPT_MSS, TCP_OPT_NOP, TCP_SYN } from '../wire/tcp.js';

/**
 * Lower the MSS option of the TCP SYN (or SYN-ACK) in the IPv4 packet at `off` to `maxMss`,
 * updating the TCP checksum incrementally. Anything else (not TCP, not a SYN, a fragment, no
 * MSS option, malformed options) is left alone. True when the packet changed.
 */
export function clampMss(p: Uint8Array, off: number, len: number, maxMss: number): boolean {
  if (p[off + 9] !== IP_PROTO_TCP || (getU16(p, off + 6) & 0x3fff) !== 0) return false;
  const hl = (p[off] & 0x0f) << 2;
  const tcp = off + hl;
  if (len < hl + 20 || (p[tcp + 13] & TCP_SYN) === 0) return false;
  const thl = (p[tcp + 12] >>> 4) << 2;
  if (thl <= 20 || hl + thl > len) return false;
  let i = tcp + 20;
  const end = tcp + thl;
  while (i < end) {
    const kind = p[i];
    if (kind === TCP_OPT_EOL) return false;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return false;
    const olen = p[i + 1];
    if (olen < 2 || i + olen > end) return false;
    if (kind === TCP_OPT_MSS && olen === 4) {
      const mss = getU16(p, i + 2);
      if (mss <= maxMss) return false;
      setU16(p, i + 2, maxMss);
      // An option at an odd offset straddles two 16-bit words: its bytes count swapped.
      const odd = ((i + 2 - tcp) & 1) === 1;
      setU16(p, tcp + 16, checksumAdjust(getU16(p, tcp + 16), odd ? swap16(mss) : mss, odd ? swap16(maxMss) : maxMss));
      return true;
    }
    i += olen;
  }
  return false;
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}
