/**
 * The device boundary. Everything above a Link sees batches of raw IPv4 packets; everything
 * below it is a TUN fd, an in-memory pipe or a fault injector.
 *
 * A batch is a view over one buffer that the link owns and reuses: the packets are only valid
 * during the receive callback (copy what you keep). This is what lets the TUN reader hand JS
 * dozens of packets per wake-up without allocating per packet.
 */
export interface PacketBatch {
  /** Shared buffer holding all packets of this batch. */
  readonly buf: Buffer;
  /** Start of packet i in buf. */
  readonly offsets: Uint32Array;
  /** Length of packet i. */
  readonly lengths: Uint32Array;
  /** Number of valid entries in offsets/lengths. */
  readonly count: number;
}

export type ReceiveHandler = (batch: PacketBatch) => void;

export interface LinkStats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  /** Writes the device refused (queue full, device gone). */
  txErrors: number;
}

export interface Link {
  readonly name: string;
  readonly mtu: number;
  /**
   * Every packet, received and sent, starts with the 10-byte virtio-net header (IFF_VNET_HDR):
   * received TCP may be a 64 KiB super-packet with a partial checksum, and sent packets may
   * ask the kernel to segment and checksum them (see src/wire/virtio-net.ts).
   */
  readonly vnetHdr: boolean;
  readonly stats: LinkStats;
  /** Set the one receiver of inbound batches; the link starts delivering once it is set. */
  onReceive(handler: ReceiveHandler): void;
  /** Send one packet (the bytes are copied or written before return; the caller may reuse them). */
  send(packet: Uint8Array): boolean;
  /** Send many packets; returns how many were accepted. */
  sendMany(packets: readonly Uint8Array[]): number;
  /**
   * Optional: send one packet given as head, body and an optional tail (written together with
   * one writev, none copied), so a 64 KiB payload need not be copied next to its header first.
   * Links without it get one packet through `send`.
   */
  sendParts?(head: Uint8Array, body: Uint8Array, tail?: Uint8Array): boolean;
  /**
   * Optional: answer plain A queries to port 53 at the device, without handing them up as
   * packets (the TUN link reads and writes them natively: native/fake_dns.c). `decide` gives
   * the answer's address for a canonical name, or 0: then the query goes up as any packet.
   * null turns it off. The link counts what it answers in its own stats.
   */
  answerQueries?(decide: LinkDnsDecide | null, ttl: number): void;
  /** Stop delivering and release the device; idempotent. */
  close(): void;
}

/** The address of an A answer for canonical `name` (0: not answered at the link); the sizes are of the DNS messages. */
export type LinkDnsDecide = (name: string, queryBytes: number, answerBytes: number) => number;

export function emptyLinkStats(): LinkStats {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, txErrors: 0 };
}
