/**
 * The system's resolvers, as /etc/resolv.conf names them (`nameserver ADDR` lines, resolv.conf(5)):
 * the addresses a split tunnel routes into the device so that every query of the system
 * reaches tunroute (dns.routeSystemResolvers). Inside `ip netns exec NS`, /etc/resolv.conf is
 * the namespace's own (/etc/netns/NS/resolv.conf bound over it).
 */
import { isIPv4, isIPv6 } from 'node:net';

export const RESOLV_CONF = '/etc/resolv.conf';
/** resolv.conf is a few lines; anything larger is not one. */
export const RESOLV_CONF_MAX_BYTES = 64 * 1024;

export interface ResolvConf {
  /** IPv4 nameservers in file order, each once. */
  readonly ipv4: string[];
  /** IPv6 nameservers (tunroute carries IPv4 only: reported, not routed). */
  readonly ipv6: string[];
}

/** The nameservers of resolv.conf text; `#` and `;` start comments, other lines are ignored. */
export function parseResolvConf(text: string): ResolvConf {
  const ipv4: string[] = [];
  const ipv6: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (m === null) continue;
    const addr = m[1];
    if (isIPv4(addr)) {
      if (!ipv4.includes(addr)) ipv4.push(addr);
    } else if (isIPv6(addr.replace(/%.*$/, '')) && !ipv6.includes(addr)) ipv6.push(addr);
  }
  return { ipv4, ipv6 };
}
