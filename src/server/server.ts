/**
 * The composition root of `tunroute server`: a WireGuard responder whose decrypted traffic is
 * terminated by tunroute's own userspace stack and re-originated as ordinary sockets of this
 * host — no TUN device, no routes, no root (DESIGN.md).
 *
 *   peers ══ UDP (listen) ══► TunnelRuntime (src/wireguard) ─ decrypt, AllowedIPs source check
 *                                │
 *                            PacketGate ─ to another peer ──► TunnelRuntime (forwarded, TTL − 1)
 *                                │        ICMP not for us ──► dropped, counted
 *                                ▼
 *                  PacketPipe (a Link whose device is the tunnel)
 *                                │
 *      TerminatingEngine: PacketDispatcher ─ ICMP echo to the server's address ─► reply
 *                         │            │
 *                      TcpStack     UdpStack
 *                         │            │
 *                      TcpRelay     UdpRelay ─ Router: own address, tunnel subnet, deny, this
 *                                                host's addresses and LANs (less allow) → block
 *                         └─────┬──────┘
 *                        DirectOutbound ─ net.connect / dgram from this host
 *
 * Replies built by the stacks leave through the pipe's transmit: sealed to the peer whose
 * AllowedIPs hold their destination (cryptokey routing), dropped and counted if none does.
 *
 * ICMP echo to destinations other than the server's own address is dropped (counted as
 * `icmpNotOurs`): an ordinary socket cannot send an echo request (that needs a raw socket or
 * the kernel's ping sockets, neither of which Node offers), and answering on the destination's
 * behalf would report hosts as reachable that nobody asked. In `mode: tun` (root) decrypted
 * packets go to a TUN device instead and the kernel answers and forwards them (tun-mode.ts).
 */
import type { Clock } from '../clock.js';
import { monotonicClock } from '../clock.js';
import type { ServerConfig } from '../config/server-schema.js';
import { serverPrivateKey } from '../config/server-schema.js';
import type { Link, LinkStats } from '../link/link.js';
import { PacketPipe } from '../link/packet-pipe.js';
import { createLogger, type Logger } from '../logger.js';
import { BlockOutbound } from '../outbound/block.js';
import { DirectOutbound } from '../outbound/direct.js';
import type { Outbound, OutboundStats } from '../outbound/outbound.js';
import type { DeviceDropReason } from '../wireguard/device.js';
import { parseKey, type RandomSource } from '../wireguard/keys.js';
import { TerminatingEngine } from '../relay/engine.js';
import { deriveFlowLimits, flowLimitsFields, flowLimitsMessage } from '../relay/flow-limits.js';
import { raiseNofile } from '../native/limits.js';
import type { TcpFlowInfo, TcpRelayStats } from '../relay/tcp-relay.js';
import type { UdpFlowInfo, UdpRelayStats } from '../relay/udp-relay.js';
import { Router } from '../router/router.js';
import type { DispatcherStats } from '../stack/dispatcher.js';
import type { ReassemblyStats } from '../stack/ip-reassembly.js';
import { cidrToString, normalizeCidr, u32ToIp, type Cidr } from '../net/ipv4.js';
import { denyListText, HOST_NETWORKS_REFRESH_MS, hostDenyList, readHostNetworks, type HostNetworks, type HostNetworksReader } from './host-networks.js';
import { PacketGate, type GateCounters } from './gate.js';
import { TunnelRuntime, type TunnelCounters, type TunnelPeerConfig, type TunnelPeerStatus } from '../wireguard/runtime.js';
import type { UdpTransport } from '../wireguard/transport.js';
import { openServerTransport } from './udp-transport.js';
import { startTunMode, type TunModeOptions } from './tun-mode.js';
import type { IpRunner } from '../routes/apply.js';

export const DIRECT_OUTBOUND = 'direct';
export const SERVER_BLOCK_OUTBOUND = 'block';

export interface ServerDeps {
  logger?: Logger;
  /** Time for everything, the tunnel's timer included when the clock has timers (ManualClock). */
  clock?: Clock;
  /** The UDP socket; default: bind config.listen. */
  transport?: UdpTransport;
  /** Where TCP and UDP are re-originated; default a DirectOutbound named 'direct'. */
  outbound?: Outbound;
  /** The config file's path, for error messages. */
  file?: string;
  /** For repeatable tests. */
  random?: RandomSource;
  wallClock?: () => number;
  /** mode: tun — the device and the `ip` runner (default: the native TUN, iproute2). */
  openTun?: TunModeOptions['openLink'];
  ipRunner?: IpRunner;
  /** userspace: this host's addresses and connected networks (default: read from the kernel, see host-networks.ts). */
  hostNetworks?: HostNetworksReader;
  /** How often hostNetworks is read again (default HOST_NETWORKS_REFRESH_MS; 0: never). */
  hostNetworksRefreshMs?: number;
}

/** Everything a running server counts, for logs and `status`. The stack's counters exist in userspace mode only. */
export interface ServerStats {
  link: LinkStats;
  packets?: DispatcherStats;
  tcp?: TcpRelayStats;
  udp?: UdpRelayStats;
  fragments?: ReassemblyStats;
  gate?: GateCounters;
  outbounds: Record<string, OutboundStats>;
  tunnel: TunnelCounters;
  /** Datagrams the WireGuard device dropped before any peer (unknown peer, bad mac1, …). */
  deviceDrops: Record<DeviceDropReason, number>;
}

export interface RunningServer {
  readonly mode: ServerConfig['mode'];
  readonly publicKey: string;
  /** The UDP port actually bound. */
  readonly port: number;
  /** Userspace: the pipe into our stack; tun: the TUN device. */
  readonly link: Link;
  readonly tunnel: TunnelRuntime;
  stats(): ServerStats;
  peers(): TunnelPeerStatus[];
  flows(): TcpFlowInfo[];
  udpFlows(): UdpFlowInfo[];
  /** Close one flow by its id (TCP: RST to the peer's app); false when none is open (or mode tun). */
  closeFlow(proto: 'tcp' | 'udp', id: number): boolean;
  /** Reset every flow (RST to the peers), close the sockets, erase the keys. Idempotent. */
  stop(): Promise<void>;
}

/** The peers as the tunnel wants them; names default to the start of the key, like `wg show`. */
export function tunnelPeersOf(config: ServerConfig): (TunnelPeerConfig & { name: string })[] {
  return config.peers.map((p, i) => ({
    name: p.name ?? `peer${i} ${p.publicKey.trim().slice(0, 8)}…`,
    publicKey: parseKey(p.publicKey, `peers[${i}].publicKey`),
    presharedKey: p.presharedKey === undefined ? undefined : parseKey(p.presharedKey, `peers[${i}].presharedKey`),
    allowedIPs: p.allowedIPs,
  }));
}

/** Why a destination was refused, by the index of the rule serverRouter built. */
const DENY_REASONS = ["the server's tunnel address or an unowned part of the tunnel subnet", 'the deny list', "this host's own address or directly connected network (not in allow)"] as const;

/**
 * What the server refuses to re-originate: its own address (nothing listens there: TCP gets
 * RST), the rest of the tunnel subnet that no peer owns, the config's deny list, and this
 * host's own addresses and directly connected networks less the config's allow list
 * (`hostDeny`, see host-networks.ts). Rule i is refused for DENY_REASONS[i].
 */
export function serverRouter(config: ServerConfig, direct: string, hostDeny: readonly Cidr[] = []): Router {
  const own = config.address;
  const tunnel = [`${cidrToString({ addr: own.addr, prefix: 32 })}`, cidrToString(normalizeCidr(own))];
  const deny = config.deny.map((d) => cidrToString(normalizeCidr(d)));
  const host = hostDeny.map(cidrToString);
  // A rule needs at least one CIDR: an empty list keeps its place with the tunnel's own address.
  const rules = [tunnel, deny, host].map((cidrs) => ({ cidrs: cidrs.length > 0 ? cidrs : [tunnel[0]], outbound: SERVER_BLOCK_OUTBOUND }));
  return new Router({ rules, defaultOutbound: direct, source: 'deny' });
}

/**
 * The engine's router for the server: serverRouter, rebuilt when this host's networks change,
 * with one debug line per refused flow (TCP gets RST, UDP ICMP administratively prohibited:
 * the block outbound's answer).
 */
export class ServerGuard {
  private router: Router;
  private hostText: string;

  constructor(
    private readonly config: ServerConfig,
    private readonly direct: string,
    hostDeny: readonly Cidr[],
    private readonly log: Logger,
  ) {
    this.router = serverRouter(config, direct, hostDeny);
    this.hostText = denyListText(hostDeny);
  }

  /** Use a new reading of this host's networks; true if it changed anything. */
  update(hostDeny: readonly Cidr[]): boolean {
    const text = denyListText(hostDeny);
    if (text === this.hostText) return false;
    this.router = serverRouter(this.config, this.direct, hostDeny);
    this.hostText = text;
    return true;
  }

  route(dstIp: number, protocol: number, dstPort: number): string {
    const name = this.router.route(dstIp, protocol, dstPort);
    if (name === SERVER_BLOCK_OUTBOUND && this.log.isLevelEnabled('debug')) {
      const d = this.router.why(dstIp, protocol, dstPort);
      this.log.debug({ dst: u32ToIp(dstIp), protocol, port: dstPort, cidr: d.cidr, reason: DENY_REASONS[d.ruleIndex] }, 'peer flow refused: destination denied');
    }
    return name;
  }
}

/** The part that differs by mode: what consumes the tunnel's packets. */
interface ModeBackend {
  readonly link: Link;
  stats(): Pick<ServerStats, 'packets' | 'tcp' | 'udp' | 'fragments' | 'gate' | 'outbounds'>;
  flows(): TcpFlowInfo[];
  udpFlows(): UdpFlowInfo[];
  closeFlow(proto: 'tcp' | 'udp', id: number): boolean;
  /** Reset flows (their RSTs are sealed while the tunnel still has keys). */
  stop(): Promise<void>;
}

/** `mode: userspace`: terminate in our stack, re-originate through the direct outbound. */
function userspaceBackend(config: ServerConfig, tunnel: TunnelRuntime, deps: ServerDeps, log: Logger, clock: Clock, first: HostNetworks, readHost: HostNetworksReader): ModeBackend {
  const own = config.address;
  const direct = deps.outbound ?? new DirectOutbound({ name: DIRECT_OUTBOUND, logger: log, clock });
  const outbounds = new Map<string, Outbound>([
    [direct.name, direct],
    [SERVER_BLOCK_OUTBOUND, new BlockOutbound(SERVER_BLOCK_OUTBOUND)],
  ]);
  if (first.problem !== undefined) log.warn({ problem: first.problem }, "only this host's addresses are refused to peers, not its other connected networks");
  const router = new ServerGuard(config, direct.name, hostDenyList(first, config.allow), log);
  log.info({ denied: denyListText(hostDenyList(first, config.allow)), allow: config.allow.map(cidrToString) }, "peers may not reach this host's own addresses and connected networks");
  // Follow the host's networks: read them again now and then (cheap: one getifaddrs, one ip).
  const refreshMs = deps.hostNetworksRefreshMs ?? HOST_NETWORKS_REFRESH_MS;
  let refreshing = false;
  const refresh =
    refreshMs > 0
      ? setInterval(() => {
          if (refreshing) return;
          refreshing = true;
          readHost()
            .then((h) => {
              const deny = hostDenyList(h, config.allow);
              if (router.update(deny)) log.info({ denied: denyListText(deny) }, "this host's networks changed: the refused destinations follow");
            })
            .catch((e: unknown) => log.warn({ err: e instanceof Error ? e.message : String(e) }, "cannot read this host's networks again; the last reading stays"))
            .finally(() => (refreshing = false));
        }, refreshMs)
      : undefined;
  refresh?.unref();
  const link = new PacketPipe({ name: 'wg', mtu: config.mtu, transmit: (p) => tunnel.sendPacket(p) });
  const gate = new PacketGate({ ownAddress: own.addr, routes: tunnel.routes, local: (p) => link.deliver(p), forward: (to, p) => tunnel.sendTo(to, p) });
  tunnel.onPacket(gate.input);

  // A peer's UDP datagram larger than its tunnel MTU arrives in fragments: the engine reassembles.
  // The flow limits follow from the open-file limit (raised to the hard one); peers' flows have
  // no local uid, so no per-user share here.
  const nofile = raiseNofile();
  const limits = deriveFlowLimits({ nofile: nofile?.soft, tcpMaxFlows: config.tcp.maxFlows, udpMaxFlows: config.udp.maxFlows, perUidFlows: 0 });
  log.info(flowLimitsFields(limits, nofile, config.tcp.memoryBytes), flowLimitsMessage(limits, nofile, config.tcp.maxFlows, config.udp.maxFlows, config.tcp.memoryBytes));
  const engine = new TerminatingEngine({
    link,
    router,
    outbounds,
    clock,
    logger: log,
    icmp: config.icmp,
    tcp: { ...config.tcp, maxFlows: limits.tcp, perUidFlows: 0 },
    udp: { maxFlows: limits.udp },
  });
  return {
    link,
    stats: () => {
      const e = engine.stats();
      return { packets: e.packets, tcp: e.tcp, udp: e.udp, fragments: e.fragments, gate: { ...gate.counters }, outbounds: e.outbounds };
    },
    flows: () => engine.flows(),
    udpFlows: () => engine.udpFlows(),
    closeFlow: (proto, id) => engine.closeFlow(proto, id),
    async stop() {
      clearInterval(refresh);
      await engine.stop(); // the RSTs are sealed before the keys are erased
      link.close();
    },
  };
}

/** `mode: tun`: the kernel does the rest (root). */
async function tunBackend(config: ServerConfig, tunnel: TunnelRuntime, deps: ServerDeps, log: Logger): Promise<ModeBackend> {
  const tun = await startTunMode({ name: config.tun.name, address: cidrToString(config.address), mtu: config.mtu, tunnel, logger: log, openLink: deps.openTun, ipRunner: deps.ipRunner });
  return {
    link: tun.link,
    stats: () => ({ outbounds: {} }),
    flows: () => [],
    udpFlows: () => [],
    closeFlow: () => false,
    stop: () => {
      tun.close();
      return Promise.resolve();
    },
  };
}

export async function startServer(config: ServerConfig, deps: ServerDeps = {}): Promise<RunningServer> {
  const log = deps.logger ?? createLogger(config.log.level, config.log.format);
  const clock = deps.clock ?? monotonicClock;
  // Everything a bad config can break is checked before the socket is bound.
  const privateKey = serverPrivateKey(config, deps.file, log);
  const peers = tunnelPeersOf(config);
  if (config.mode === 'userspace') serverRouter(config, DIRECT_OUTBOUND);
  const readHost = deps.hostNetworks ?? ((): ReturnType<HostNetworksReader> => readHostNetworks());
  const host = config.mode === 'userspace' ? await readHost() : undefined;

  const transport =
    deps.transport ??
    (await openServerTransport({
      address: config.listen.host,
      port: config.listen.port,
      file: deps.file,
      mtu: config.mtu,
      onError: (e) => log.warn({ err: e.message }, 'UDP socket error'),
    }));
  const tunnel = new TunnelRuntime({ privateKey, peers, transport, clock, logger: log, mtu: config.mtu, random: deps.random, wallClock: deps.wallClock });
  privateKey.fill(0);
  let backend: ModeBackend;
  try {
    backend = config.mode === 'tun' ? await tunBackend(config, tunnel, deps, log) : userspaceBackend(config, tunnel, deps, log, clock, host ?? { addresses: [], networks: [] }, readHost);
  } catch (e) {
    tunnel.close();
    throw e;
  }
  const link = backend.link;

  const stats = (): ServerStats => ({
    link: { ...link.stats },
    ...backend.stats(),
    tunnel: { ...tunnel.counters },
    deviceDrops: tunnel.deviceDrops(),
  });

  let stopping: Promise<void> | undefined;
  return {
    mode: config.mode,
    publicKey: tunnel.publicKey,
    port: transport.port,
    link,
    tunnel,
    stats,
    peers: () => tunnel.peerStatus(),
    flows: () => backend.flows(),
    udpFlows: () => backend.udpFlows(),
    closeFlow: (proto, id) => backend.closeFlow(proto, id),
    stop() {
      stopping ??= (async () => {
        await backend.stop();
        tunnel.close();
      })();
      return stopping;
    },
  };
}
