/**
 * IPv4 fragmentation (RFC 791 §2.3 "Fragmentation", §3.2 "An Example Fragmentation
 * Procedure"; RFC 1122 §3.3.2), for the replies we build that are larger than the link MTU.
 *
 *   original:  | hdr | data 0 ............................................ data N |
 *   fragment:  | hdr' (MF=1, off=0)   | data 0 .. k-1 |          k = ⌊(MTU − hl) / 8⌋ × 8
 *              | hdr'' (MF=1, off=k/8) | data k .. 2k-1 |
 *              | hdr'' (MF=orig, off=…) | the rest     |
 *
 * Every fragment but the last carries a multiple of 8 data bytes (the offset field counts
 * 8-byte units) and has MF set; the last one keeps the original MF (so a fragment can be
 * re-fragmented). DF is cleared in the fragments. The first fragment keeps all options; the
 * others only the options whose "copied" flag (bit 0x80 of the type) is set, padded with
 * End-of-Options to a multiple of 4 (RFC 791, "Options").
 *
 * A datagram with DF set is never fragmented: the caller gets 'frag_needed' and does what the
 * kernel does for its own DF datagram (IP_PMTUDISC_DO): refuse it (EMSGSIZE), or send ICMP
 * "fragmentation needed" with the MTU (type 3 code 4, RFC 1191) back to its source when it is
 * forwarding someone else's datagram.
 */
import { getU16 as rd16, internetChecksum, setU16 as wr16 } from './checksum.js';
import { IPV4_HEADER_LEN } from './ipv4.js';

const LENGTH = 2;
const FLG_OFF = 6;
const CHECKSUM = 10;
const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const OFFSET_MASK = 0x1fff;

/** RFC 791: every module must be able to forward a 68-byte datagram without fragmenting it. */
export const IPV4_MIN_MTU = 68;

export type FragmentRefusal =
  /** DF is set and the datagram is larger than the MTU. */
  | 'frag_needed'
  /** Not a sane IPv4 datagram, or an MTU below 68. */
  | 'frag_bad';

/** Number of data bytes every fragment but the last carries. */
function dataPerFragment(headerLen: number, mtu: number): number {
  return ((mtu - headerLen) >>> 3) << 3;
}

/**
 * The options of `packet`'s header that go into every fragment after the first (those with the
 * copied flag), as bytes padded to a multiple of 4. Malformed options end the walk: what was
 * understood so far is kept (a header we built has none).
 */
function copiedOptions(packet: Uint8Array, headerLen: number): Uint8Array {
  const out: number[] = [];
  let i = IPV4_HEADER_LEN;
  while (i < headerLen) {
    const type = packet[i];
    if (type === 0) break; // End of Option List
    if (type === 1) {
      i++; // No Operation: never copied (bit 7 clear)
      continue;
    }
    if (i + 1 >= headerLen) break;
    const len = packet[i + 1];
    if (len < 2 || i + len > headerLen) break;
    if ((type & 0x80) !== 0) for (let k = 0; k < len; k++) out.push(packet[i + k]);
    i += len;
  }
  while ((out.length & 3) !== 0) out.push(0);
  return Uint8Array.from(out);
}

/**
 * Total bytes `fragmentIpv4` writes for a datagram of `totalLen` bytes with a `headerLen`-byte
 * header at `mtu`: an upper bound (later fragments may carry fewer option bytes).
 */
export function fragmentedSize(totalLen: number, headerLen: number, mtu: number): number {
  if (totalLen <= mtu) return totalLen;
  const per = dataPerFragment(headerLen, mtu);
  if (per <= 0) return 0;
  const data = totalLen - headerLen;
  const n = Math.ceil(data / per);
  return data + n * headerLen;
}

/**
 * Write `packet` (one whole, valid IPv4 datagram: header checksum right, Total Length equal to
 * its bytes) as fragments of at most `mtu` bytes, end to end at `out[outOff]`, and push each
 * fragment's length onto `lengths`. A datagram that fits is copied as it is (one entry).
 * Returns the bytes written, or why it was refused (nothing written). `out` must have room for
 * `fragmentedSize(...)` bytes and must not overlap `packet`. Never throws.
 */
export function fragmentIpv4(
  packet: Uint8Array,
  mtu: number,
  out: Uint8Array,
  outOff: number,
  lengths: number[],
): number | FragmentRefusal {
  if (packet.length < IPV4_HEADER_LEN || packet[0] >>> 4 !== 4) return 'frag_bad';
  const hl = (packet[0] & 0x0f) << 2;
  const total = rd16(packet, LENGTH);
  if (hl < IPV4_HEADER_LEN || total < hl || total > packet.length) return 'frag_bad';
  if (total <= mtu) {
    out.set(packet.subarray(0, total), outOff);
    lengths.push(total);
    return total;
  }
  if (!(mtu >= IPV4_MIN_MTU)) return 'frag_bad';
  const flagsOff = rd16(packet, FLG_OFF);
  if ((flagsOff & FLAG_DF) !== 0) return 'frag_needed';
  const baseUnits = flagsOff & OFFSET_MASK;
  const lastMf = (flagsOff & FLAG_MF) !== 0;
  const reserved = flagsOff & 0x8000;

  const dataLen = total - hl;
  const opts = hl > IPV4_HEADER_LEN ? copiedOptions(packet, hl) : new Uint8Array(0);
  let o = outOff;
  let sent = 0; // data bytes written so far
  let first = true;
  while (sent < dataLen) {
    const fhl = first ? hl : IPV4_HEADER_LEN + opts.length;
    const per = dataPerFragment(fhl, mtu);
    const n = Math.min(per, dataLen - sent);
    const last = sent + n === dataLen;
    // Header: the original's fixed 20 bytes, then all options (first) or the copied ones.
    out.set(packet.subarray(0, IPV4_HEADER_LEN), o);
    if (first) {
      if (hl > IPV4_HEADER_LEN) out.set(packet.subarray(IPV4_HEADER_LEN, hl), o + IPV4_HEADER_LEN);
    } else if (opts.length > 0) {
      out.set(opts, o + IPV4_HEADER_LEN);
    }
    out[o] = 0x40 | (fhl >>> 2);
    wr16(out, o + LENGTH, fhl + n);
    const units = baseUnits + (sent >>> 3);
    wr16(out, o + FLG_OFF, reserved | (last && !lastMf ? 0 : FLAG_MF) | (units & OFFSET_MASK));
    out[o + CHECKSUM] = 0;
    out[o + CHECKSUM + 1] = 0;
    wr16(out, o + CHECKSUM, internetChecksum(out, o, fhl));
    out.set(packet.subarray(hl + sent, hl + sent + n), o + fhl);
    lengths.push(fhl + n);
    o += fhl + n;
    sent += n;
    first = false;
  }
  return o - outOff;
}
