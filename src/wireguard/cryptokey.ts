/**
 * Cryptokey routing — WireGuard whitepaper §2: "a list of peers … each with a set of allowed
 * IPs". One table answers both directions:
 *   outbound  a packet for destination D is sealed to the peer whose AllowedIPs hold D (the
 *             longest prefix wins, as in wg);
 *   inbound   a packet a peer decrypted is accepted only if that same lookup of its *source*
 *             names that peer (else the Peer counts it as `disallowed_source`).
 * IPv4 only, as the rest of tunroute; an IPv6 inner packet never matches.
 */
import { CidrTrie } from '../net/cidr-trie.js';
import { getU32 } from '../wire/checksum.js';
import { normalizeCidr, type Cidr } from '../net/ipv4.js';

export class CryptokeyTable<P> {
  private readonly trie = new CidrTrie<P>();

  /** Give `cidr` (host bits ignored) to `owner`, replacing a previous owner of exactly that prefix. */
  add(cidr: Cidr, owner: P): void {
    const n = normalizeCidr(cidr);
    this.trie.insert(n.addr, n.prefix, owner);
  }

  /** The owner of exactly `cidr` (host bits ignored), if any. */
  owner(cidr: Cidr): P | undefined {
    const n = normalizeCidr(cidr);
    return this.trie.get(n.addr, n.prefix);
  }

  /** The owner of the longest prefix holding `addr` (uint32), if any. */
  lookup(addr: number): P | undefined {
    return this.trie.lookup(addr);
  }

  /** Build the lookup index now rather than after the first lookups (see CidrTrie). */
  optimize(): void {
    this.trie.optimize();
  }

  /** Number of prefixes. */
  get size(): number {
    return this.trie.size;
  }

  /** The check a Peer runs on each decrypted packet (PeerOptions.allowedSource). */
  sourceCheck(owner: P): (packet: Uint8Array) => boolean {
    return (packet) => packet.length >= 20 && packet[0] >>> 4 === 4 && this.trie.lookup(getU32(packet, 12)) === owner;
  }
}
