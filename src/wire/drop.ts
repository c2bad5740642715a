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
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

/** Counters by reason, allocated once; increments are plain property writes. */
export type DropCounters = Record<DropReason, number>;

export function newDropCounters(): DropCounters {
  const c = {} as DropCounters;
  for (const r of DROP_REASONS) c[r] = 0;
  return c;
}
