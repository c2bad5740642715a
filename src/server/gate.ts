/**
 * Where a packet a peer sent goes, once the tunnel has decrypted it and checked its source
 * against the peer's AllowedIPs:
 *
 *   destination held by a peer's AllowedIPs (not the server's own address)
 *       → forwarded to that peer as it is, TTL − 1 (peer to peer, as a router would)
 *   ICMP to anything but the server's own address
 *       → dropped and counted: the server cannot send an echo request from an ordinary
 *         socket, and answering in the destination's name would tell the peer "reachable"
 *         about a host nobody asked (see server.ts)
 *   anything else (TCP, UDP, ICMP to the server)
 *       → the userspace stack, which terminates it (answers ping, re-originates TCP/UDP
 *         through the direct outbound, refuses what the router blocks)
 */
import { checksumAdjust, getU16, getU32, internetChecksum, setU16 } from '../wire/checksum.js';
import { IP_PROTO_ICMP } from '../wire/ipv4.js';
import type { CryptokeyTable } from '../wireguard/cryptokey.js';

export interface GateCounters {
  /** Packets handed to the userspace stack. */
  local: number;
  /** Packets forwarded from one peer to another. */
  forwarded: number;
  /** ICMP for destinations other than the server's own address, dropped. */
  icmpNotOurs: number;
  /** Packets to forward whose TTL ran out (dropped; no ICMP time exceeded is sent). */
  ttlExpired: number;
  /** Packets to forward with a malformed IPv4 header (dropped). */
  badHeader: number;
}

export function newGateCounters(): GateCounters {
  return { local: 0, forwarded: 0, icmpNotOurs: 0, ttlExpired: 0, badHeader: 0 };
}

export interface PacketGateOptions<P> {
  /** The server's own tunnel address (uint32). */
  ownAddress: number;
  routes: CryptokeyTable<P>;
  /** Into the userspace stack (the pipe's deliver). */
  local(packet: Uint8Array): void;
  /** Seal to a peer. */
  forward(to: P, packet: Uint8Array): void;
}

export class PacketGate<P> {
  readonly counters: GateCounters = newGateCounters();

  constructor(private readonly o: PacketGateOptions<P>) {}

  /** One decrypted IPv4 packet (the tunnel checked version and source); the gate may modify and keep it. */
  readonly input = (packet: Uint8Array): void => {
    const c = this.counters;
    const dst = getU32(packet, 16);
    if (dst !== this.o.ownAddress) {
      const owner = this.o.routes.lookup(dst);
      if (owner !== undefined) return this.forward(owner, packet);
      if (packet[9] === IP_PROTO_ICMP) {
        c.icmpNotOurs++;
        return;
      }
    }
    c.local++;
    this.o.local(packet);
  };

  private forward(to: P, packet: Uint8Array): void {
    const c = this.counters;
    const hl = (packet[0] & 0x0f) << 2;
    if (hl < 20 || hl > packet.length || internetChecksum(packet, 0, hl) !== 0) {
      c.badHeader++;
      return;
    }
    const ttl = packet[8];
    if (ttl <= 1) {
      c.ttlExpired++;
      return;
    }
    // TTL shares a 16-bit word with the protocol: adjust the header checksum for that word.
    const old = getU16(packet, 8);
    packet[8] = ttl - 1;
    setU16(packet, 10, checksumAdjust(getU16(packet, 10), old, getU16(packet, 8)));
    c.forwarded++;
    this.o.forward(to, packet);
  }
}
