/**
 * Why a packet was dropped. Malformed input is never thrown: a parser returns one of these and
 * the caller counts it, so a burst of garbage costs a counter increment, not a crash.
 */
export const DROP_REASONS = [
  'too_short',
  'bad_version',
  'bad_ihl',
  'bad_total_length',
  'bad_header_checksum',
  'fragment',
  'bad_tcp_offset',
  'bad_tcp_checksum',
  'bad_tcp_options',
  'bad_udp_length',
  'bad_udp_checksum',
  'bad_icmp_checksum',
  'unsupported_protocol',
  'unsupported_icmp',
  'no_route',
  'no_handler',
  'ipv6',
  'martian',
  // IPv4 reassembly (src/stack/ip-reassembly.ts): a fragment overlapping another one of the
  // same datagram (the whole datagram is discarded, RFC 5722's rule applied to IPv4); an exact
  // duplicate (only the copy is dropped); a datagram that would exceed 65,535 bytes; a fragment
  // whose fields contradict the others (unaligned length, a second end); memory or count caps.
  'frag_overlap',
  'frag_duplicate',
  'frag_too_big',
  'frag_bad',
  'frag_limit',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

/** Counters by reason, allocated once; increments are plain property writes. */
export type DropCounters = Record<DropReason, number>;

export function newDropCounters(): DropCounters {
  const c = {} as DropCounters;
  for (const r of DROP_REASONS) c[r] = 0;
  return c;
}
