/**
 * `mode: tun`: the server as a kernel WireGuard server would be — decrypted packets are written
 * into a TUN device and the kernel takes it from there (answers for its own addresses, forwards
 * the rest if net.ipv4.ip_forward is on, NATs them if the operator set that up); what the kernel
 * routes into the device is sealed to the peer whose AllowedIPs hold the destination.
 *
 *   peers ══ UDP ══► runtime ─ AllowedIPs source check ─► TUN device ─► kernel
 *   peers ◄═ UDP ══ runtime ◄─ cryptokey routing ◄─────── TUN device ◄─ kernel
 *
 * Needs root (CAP_NET_ADMIN) for the device. The device gets the config's address (and so the
 * subnet's route) and MTU; it disappears when the server exits. Forwarding and NAT are the
 * host's policy, not ours: without ip_forward, peers reach this host only (we say so at start).
 */
import { readFileSync } from 'node:fs';
import { TunrouteError } from '../errors.js';
import type { Link } from '../link/link.js';
import type { Logger } from '../logger.js';
import type { IpRunner } from '../routes/apply.js';
import type { TunnelRuntime } from '../wireguard/runtime.js';

export interface TunModeOptions {
  name: string;
  /** The device address with its prefix (the server's tunnel address and subnet). */
  address: string;
  mtu: number;
  tunnel: TunnelRuntime;
  logger: Logger;
  /** Opens the device; default the native TUN link. */
  openLink?: (name: string, mtu: number, logger: Logger) => Promise<Link>;
  /** Runs `ip -batch` lines; default the real iproute2. */
  ipRunner?: IpRunner;
  /** Reads net.ipv4.ip_forward; default /proc. */
  ipForward?: () => boolean;
}

export interface TunModeCounters {
  /** Decrypted packets the device did not take. (What no peer owns is counted by the tunnel.) */
  txErrors: number;
}

export interface TunMode {
  readonly link: Link;
  readonly counters: TunModeCounters;
  close(): void;
}

async function openTun(name: string, mtu: number, logger: Logger): Promise<Link> {
  const { TunLink } = await import('../link/tun.js');
  return TunLink.open({ name, mtu, vnetHdr: false, logger });
}

function kernelForwards(): boolean {
  try {
    return readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

export async function startTunMode(o: TunModeOptions): Promise<TunMode> {
  const link = await (o.openLink ?? openTun)(o.name, o.mtu, o.logger);
  const runner = o.ipRunner ?? (await import('../routes/apply.js')).ipBatchRunner;
  const r = await runner.batch([`address add ${o.address} dev ${link.name}`, `link set dev ${link.name} mtu ${o.mtu} up`], false);
  if (!r.ok) {
    link.close();
    throw new TunrouteError('TR_ROUTE_APPLY', `Cannot give ${link.name} the address ${o.address} and bring it up (${r.stderr || 'ip failed'}): check that the address is not used by another interface.`);
  }
  if (!(o.ipForward ?? kernelForwards)()) {
    o.logger.warn(
      { dev: link.name },
      'net.ipv4.ip_forward is 0: peers reach this host only; enable it (and NAT, e.g. nft masquerade) to let them through, or use mode: userspace',
    );
  }
  const counters: TunModeCounters = { txErrors: 0 };
  const tunnel = o.tunnel;
  tunnel.onPacket((p) => {
    if (!link.send(p)) counters.txErrors++;
  });
  link.onReceive((batch) => {
    const { buf, offsets, lengths, count } = batch;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      // A view into the device's reused buffer: the tunnel seals it now or copies it to queue
      // it. IPv6 (router solicitations the kernel sends into every device) counts as notIpv4.
      const packet = buf.subarray(off, off + lengths[i]);
      tunnel.sendPacket(packet);
    }
  });
  return { link, counters, close: () => link.close() };
}
