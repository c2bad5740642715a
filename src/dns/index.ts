/** DNS: the message view, the answer cache and the hijack resolver. */
export * from './message.js';
export { DNS_CACHE_DEFAULTS, DnsCache, dnsCacheKey, type DnsCacheOptions, type DnsCacheStats } from './cache.js';
export {
  DNS_RESOLVER_DEFAULTS,
  DnsResolver,
  type DnsResolveResult,
  type DnsResolverOptions,
  type DnsResolverStats,
  type DnsTransport,
} from './resolver.js';
