/** Addresses as values: IPv4 prefixes, the set of CIDRs a plan routes, the longest-prefix trie. */
export { CidrTrie, type CidrEntry } from './cidr-trie.js';
export * from './cidr-set.js';
