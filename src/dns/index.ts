/** DNS: the message view, the answer cache and the hijack resolver. */
export * from './message.js';
export { DNS_CACHE_DEFAULTS, DnsCache, dnsCacheKey, type DnsCacheOptions, type DnsCacheStats } from './cache.js';
export {
  DNS_RESOLVER_DEFAULTS,
  DnsResolver,
  type DnsAnswerer,
  type DnsResolveResult,
  type DnsResolverOptions,
  type DnsResolverStats,
  type DnsTransport,
} from './resolver.js';
export { FAKE_IP_DEFAULT_CIDR, FakeIpPool, type FakeIpPersisted, type FakeIpStats } from './fake-ip.js';
export { FAKE_IP_TTL_S, FakeIpResolver, type FakeIpResolverOptions, type FakeIpResolverStats } from './fake-ip-resolver.js';
