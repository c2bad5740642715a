/** Addresses as values: IPv4 addresses and CIDRs, endpoints, the set of CIDRs a plan routes, the longest-prefix trie. */
export * from './ipv4.js';
export * from './endpoint.js';
export { CidrTrie, type CidrEntry } from './cidr-trie.js';
export * from './cidr-set.js';
