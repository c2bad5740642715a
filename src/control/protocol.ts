/**
 * The control protocol: how `tunroute status` asks a running daemon what it is doing.
 *
 * A unix stream socket carrying newline-delimited JSON, one request per line, one response
 * line per request, in order (a client may pipeline):
 *
 *   → {"v":1,"cmd":"status"}                       cmd: status | flows | ping | source | reload
 *   → {"v":1,"cmd":"reload","config":{…},"files":{"PATH":"TEXT"}}
 *   ← {"v":1,"ok":true,"data":{…}}
 *   ← {"v":1,"ok":false,"error":"unknown command \"stats\": use one of status, flows, ping"}
 *
 * `v` is the protocol version. A daemon answers every line it can frame, also a malformed one,
 * with `ok:false` and a sentence; a request line longer than MAX_REQUEST_BYTES is answered
 * once and the connection is closed. JSON.stringify escapes newlines inside strings, so a
 * response is always exactly one line.
 *
 * Unknown fields are ignored both ways, and counters a reply lacks read as 0, so a `status`
 * from one release can read a daemon of the next (new fields such as UDP flows are added, never
 * renamed).
 */
import { z } from 'zod';
import type { LinkStats } from '../link/link.js';
import type { DispatcherStats } from '../stack/dispatcher.js';
import type { TcpFlowInfo, TcpRelayStats } from '../relay/tcp-relay.js';
import type { UdpFlowInfo } from '../relay/udp-relay.js';
import { UPSTREAM_REASONS, type OutboundStats } from '../outbound/outbound.js';
import { DROP_REASONS } from '../wire/drop.js';
import type { ProbeArm, ProbeSeen } from '../relay/probes.js';

export const CONTROL_PROTOCOL_VERSION = 1;
export const CONTROL_COMMANDS = ['status', 'flows', 'ping', 'probe', 'fakeip', 'source', 'reload'] as const;
export type ControlCommand = (typeof CONTROL_COMMANDS)[number];

/** Where `up` listens and `status` asks unless `--control` says otherwise. */
export const DEFAULT_CONTROL_PATH = '/run/tunroute/tunroute.sock';
/** Longest request line a daemon reads (a real request is ~25 bytes). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/**
 * What `up` reads instead: a `reload` carries the config and the CIDR files it names (an
 * operator's route list of thousands of lines). Its socket is root's (mode 0660).
 */
export const MAX_RELOAD_REQUEST_BYTES = 16 * 1024 * 1024;
/** Longest response line a client reads (a status with 16,000 flows is ~3 MiB). */
export const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

export interface ControlRequest {
  v: typeof CONTROL_PROTOCOL_VERSION;
  cmd: ControlCommand;
  /** `probe` only: arm these probes (absent: read what arrived, and disarm). See relay/probes.ts. */
  arm?: ProbeArm;
  /** `fakeip`: the name or the address asked about. */
  arg?: string;
  /** reload: the merged config input (file and flags) that `tunroute reload` validated as root. */
  config?: Record<string, unknown>;
  /** reload: the CIDR files it names, by path as written, read as root. */
  files?: Record<string, string>;
}

export type ControlResponse =
  | { v: typeof CONTROL_PROTOCOL_VERSION; ok: true; data: unknown }
  | { v: typeof CONTROL_PROTOCOL_VERSION; ok: false; error: string };

/** What a running instance reports to `status`. */
export interface StatusSnapshot {
  /** The daemon's tunroute version. */
  version: string;
  pid: number;
  /** When the daemon came up (ISO 8601, UTC). */
  startedAt: string;
  uptimeMs: number;
  device: { name: string; mtu: number; address: string };
  /** Prefixes routed into the device. */
  routes: number;
  link: LinkStats;
  packets: DispatcherStats;
  tcp: TcpRelayStats;
  outbounds: Record<string, OutboundStats>;
  flows: TcpFlowInfo[];
  /** UDP through the outbounds (`tunroute up`; an older daemon leaves it out). */
  udp?: UdpStatus;
  udpFlows?: UdpFlowInfo[];
  /** Present when the daemon is `tunroute server`. */
  server?: ServerStatus;
  /** `tunroute up`'s WireGuard tunnels (absent: none configured, or an older daemon). */
  tunnels?: TunnelStatus[];
  /** The last network events `up` saw and what it did (absent: an older daemon, or `server`). */
  network?: NetworkEventInfo[];
}

/** A network event as `status` lists it (routes/net-change.ts). */
export interface NetworkEventInfo {
  at: string;
  kind: string;
  dev?: string;
  detail: string;
}

/** Where the running `up` got its config: what `tunroute reload` reads again, as root. */
export interface SourceReply {
  /** The config file (absolute), if any. */
  file?: string;
  /** The flags it was started with, as the command line gave them. */
  flags: Record<string, unknown>;
  /** Its working directory (relative CIDR file paths start there). */
  cwd: string;
}

/** What a reload did, in one sentence. */
export interface ReloadReply {
  summary: string;
}

/** One WireGuard tunnel of `tunroute up`: inner packets each way, drops, and its peers. */
export interface TunnelStatus {
  name: string;
  listenPort: number;
  mtu: number;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  /** Non-zero drop counters by reason (tunnel, protocol, the UDP socket's send queue). */
  drops: Record<string, number>;
  peers: TunnelPeerInfo[];
}

/** A WireGuard peer as `status` shows it, in a tunnel of `up` or in `tunroute server`. */
export interface TunnelPeerInfo {
  publicKey: string;
  allowedIPs: string[];
  /** The source of the peer's last authenticated datagram. */
  endpoint?: string;
  lastHandshakeAgoMs?: number;
  /** Bytes of the datagrams received from / sent to the peer (as `wg show` counts them). */
  rxBytes: number;
  txBytes: number;
  /** Non-zero drop counters by reason (disallowed_source: a source outside the AllowedIPs). */
  drops: Record<string, number>;
}

/** UDP totals of `tunroute up`: flows, datagrams and bytes each way, DNS hijack. */
export interface UdpStatus {
  flowsOpen: number;
  flowsTotal: number;
  datagramsUp: number;
  datagramsDown: number;
  bytesUp: number;
  bytesDown: number;
  dropped: number;
  dnsQueries: number;
  dnsAnswered: number;
  dnsFailed: number;
}

/** One UDP flow (the app's 5-tuple) as `status` lists it: the relay's own description. */
export type { UdpFlowInfo };

/** `tunroute server`'s own part of a status: where it listens and its peers. */
export interface ServerStatus {
  listen: string;
  /** userspace | tun */
  mode?: string;
  publicKey: string;
  /** Packets forwarded from one peer to another. */
  forwarded: number;
  /** Non-zero drop counters by reason (device, cryptokey routing, ICMP not for the server). */
  drops: Record<string, number>;
  udp: { flowsOpen: number; flowsTotal: number; bytesUp: number; bytesDown: number; dropped: number };
  peers: ServerPeerStatus[];
}

/** A peer of `tunroute server`: the peer fields plus the name the server's config gives it. */
export interface ServerPeerStatus extends TunnelPeerInfo {
  name: string;
}

export interface PingReply {
  pid: number;
}

/**
 * `fakeip NAME|ADDR`: what the running instance's fake-IP table holds for a name or an address.
 * `enabled` false: not in dns.mode fakeip. `name`/`ip` absent: no entry (a name not asked yet,
 * an address outside the pool or forgotten).
 */
export interface FakeIpReply {
  enabled: boolean;
  /** The pool's range. */
  range?: string;
  name?: string;
  ip?: string;
  /** Whether a live flow holds the address. */
  inUse?: boolean;
}

/** The `data` of a successful reply, per command. */
export interface ControlReplies {
  status: StatusSnapshot;
  flows: TcpFlowInfo[];
  ping: PingReply;
  probe: ProbeSeen;
  fakeip: FakeIpReply;
  source: SourceReply;
  reload: ReloadReply;
}

// ------------------------------------------------------------------ requests

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

const requestSchema = z.object(
  {
    v: z.literal(CONTROL_PROTOCOL_VERSION, {
      error: (iss) =>
        iss.input === undefined
          ? `the request has no "v" (protocol version): send {"v":${CONTROL_PROTOCOL_VERSION},"cmd":"status"}`
          : `protocol version ${preview(iss.input)} is not supported: this daemon speaks v${CONTROL_PROTOCOL_VERSION}`,
    }),
    cmd: z.enum(CONTROL_COMMANDS, {
      error: (iss) =>
        iss.input === undefined
          ? `the request has no "cmd": use one of ${CONTROL_COMMANDS.join(', ')}`
          : `unknown command ${preview(iss.input)}: use one of ${CONTROL_COMMANDS.join(', ')}`,
    }),
    arm: z
      .object({
        tcpSrcPorts: z.array(z.number().int().min(1).max(65_535)).max(16),
        dnsName: z.string().regex(/^[a-z0-9.-]{1,253}$/).optional(),
        ttlMs: z.number().int().min(0).max(30_000),
      })
      .optional(),
    arg: z.string().max(300).optional(),
    config: z.record(z.string(), z.unknown()).optional(),
    files: z.record(z.string(), z.string()).optional(),
  },
  { error: `a request is one JSON object per line, like {"v":${CONTROL_PROTOCOL_VERSION},"cmd":"status"}` },
);

export type ParsedRequest = { ok: true; request: ControlRequest } | { ok: false; error: string };

/** Parse one request line (without its newline). Never throws. */
export function parseRequest(line: string): ParsedRequest {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { ok: false, error: `the request is not JSON (${preview(line)}): send {"v":${CONTROL_PROTOCOL_VERSION},"cmd":"status"}` };
  }
  const r = requestSchema.safeParse(json);
  if (r.success) return { ok: true, request: r.data };
  return { ok: false, error: r.error.issues[0]?.message ?? 'invalid request' };
}

export function encodeRequest(cmd: ControlCommand, extra: Pick<ControlRequest, 'arm' | 'arg' | 'config' | 'files'> = {}): string {
  const req: ControlRequest = { v: CONTROL_PROTOCOL_VERSION, cmd };
  if (extra.arm !== undefined) req.arm = extra.arm;
  if (extra.arg !== undefined) req.arg = extra.arg;
  if (extra.config !== undefined) req.config = extra.config;
  if (extra.files !== undefined) req.files = extra.files;
  return JSON.stringify(req) + '\n';
}

// ----------------------------------------------------------------- responses

export function okResponse(data: unknown): ControlResponse {
  return { v: CONTROL_PROTOCOL_VERSION, ok: true, data };
}

export function errorResponse(error: string): ControlResponse {
  return { v: CONTROL_PROTOCOL_VERSION, ok: false, error };
}

/** One response line, newline included. Throws only if `data` cannot be serialised. */
export function encodeResponse(r: ControlResponse): string {
  return JSON.stringify(r) + '\n';
}

const responseSchema = z.discriminatedUnion('ok', [
  z.object({ v: z.literal(CONTROL_PROTOCOL_VERSION), ok: z.literal(true), data: z.unknown() }),
  z.object({ v: z.literal(CONTROL_PROTOCOL_VERSION), ok: z.literal(false), error: z.string() }),
]);

/** A counter: a non-negative number; absent (an older daemon) reads as 0. */
const count = z.number().nonnegative().default(0);

/** Counters by reason: every known reason present (0 if absent); reasons a newer daemon adds are kept. */
function reasonCounters<K extends string>(keys: readonly K[]) {
  return z.record(z.string(), z.number().nonnegative()).transform((r): Record<K, number> => {
    const out: Record<string, number> = {};
    for (const k of keys) out[k] = r[k] ?? 0;
    for (const [k, n] of Object.entries(r)) out[k] ??= n;
    // Every key of K was set just above; the extra keys are what a newer daemon counts.
    return out;
  });
}

const linkStatsSchema = z.object({ rxPackets: count, rxBytes: count, txPackets: count, txBytes: count, txErrors: count });

const dispatcherStatsSchema = z.object({
  rxPackets: count,
  tcpPackets: count,
  udpPackets: count,
  icmpEchoReplied: count,
  icmpEchoDropped: count,
  fragments: count,
  dropped: count,
  drops: reasonCounters(DROP_REASONS).default(() => reasonCounters(DROP_REASONS).parse({})),
});

const upstreamErrors = reasonCounters(UPSTREAM_REASONS);

/** The buffer budget (relay/buffer-budget.ts); an older daemon leaves it out. */
const bufferBudgetSchema = z.object({
  budgetBytes: count,
  floorBytes: count,
  heldBytes: count,
  peakHeldBytes: count,
  committedBytes: count,
  overBudgetBytes: count,
  refusedFlows: count,
  shortGrants: count,
});

const tcpRelayStatsSchema = z.object({
  flowsOpen: count,
  flowsTotal: count,
  refusedLimit: count,
  refusedMemory: count,
  refusedFds: count,
  refusedUid: count,
  memory: bufferBudgetSchema.optional(),
  refusedNoName: count,
  upstreamErrors: upstreamErrors.default(() => upstreamErrors.parse({})),
  bytesUp: count,
  bytesDown: count,
});

const outboundStatsSchema = z.object({
  tcpAttempts: count,
  tcpEstablished: count,
  tcpFailures: upstreamErrors.default(() => upstreamErrors.parse({})),
});

export const flowInfoSchema = z.object({
  id: z.number(),
  src: z.string(),
  dst: z.string(),
  outbound: z.string(),
  state: z.string(),
  bytesUp: count,
  bytesDown: count,
  ageMs: count,
});

const peerSchema = z.object({
  publicKey: z.string(),
  allowedIPs: z.array(z.string()),
  endpoint: z.string().optional(),
  lastHandshakeAgoMs: z.number().nonnegative().optional(),
  rxBytes: count,
  txBytes: count,
  drops: z.record(z.string(), z.number().nonnegative()).default({}),
});

export const statusSnapshotSchema = z.object({
  version: z.string(),
  pid: z.number(),
  startedAt: z.string(),
  uptimeMs: count,
  device: z.object({ name: z.string(), mtu: z.number(), address: z.string() }),
  routes: count,
  link: linkStatsSchema,
  packets: dispatcherStatsSchema,
  tcp: tcpRelayStatsSchema,
  outbounds: z.record(z.string(), outboundStatsSchema),
  flows: z.array(flowInfoSchema),
  udp: z
    .object({
      flowsOpen: count,
      flowsTotal: count,
      datagramsUp: count,
      datagramsDown: count,
      bytesUp: count,
      bytesDown: count,
      dropped: count,
      dnsQueries: count,
      dnsAnswered: count,
      dnsFailed: count,
    })
    .optional(),
  udpFlows: z.array(flowInfoSchema.extend({ idleMs: count })).optional(),
  server: z
    .object({
      listen: z.string(),
      mode: z.string().optional(),
      publicKey: z.string(),
      forwarded: count,
      drops: z.record(z.string(), z.number().nonnegative()).default({}),
      udp: z.object({ flowsOpen: count, flowsTotal: count, bytesUp: count, bytesDown: count, dropped: count }),
      peers: z.array(peerSchema.extend({ name: z.string() })),
    })
    .optional(),
  tunnels: z
    .array(
      z.object({
        name: z.string(),
        listenPort: count,
        mtu: count,
        txPackets: count,
        txBytes: count,
        rxPackets: count,
        rxBytes: count,
        drops: z.record(z.string(), z.number().nonnegative()).default({}),
        peers: z.array(peerSchema),
      }),
    )
    .optional(),
  network: z.array(z.object({ at: z.string(), kind: z.string(), dev: z.string().optional(), detail: z.string() })).optional(),
});

export const pingReplySchema = z.object({ pid: z.number() });

// The schemas and the interfaces must not drift: what a daemon sends always parses, and what
// parses is a full StatusSnapshot. These lines stop compiling if either side changes alone.
type Assignable<A extends B, B> = A;
export type StatusSnapshotSchemaCheck = [
  Assignable<z.output<typeof statusSnapshotSchema>, StatusSnapshot>,
  Assignable<StatusSnapshot, z.input<typeof statusSnapshotSchema>>,
];

const replySchemas: { [K in ControlCommand]: z.ZodType<ControlReplies[K]> } = {
  status: statusSnapshotSchema,
  flows: z.array(flowInfoSchema),
  ping: pingReplySchema,
  probe: z.object({ armed: z.boolean(), tcp: z.array(z.number()), dns: z.number() }),
  fakeip: z.object({ enabled: z.boolean(), range: z.string().optional(), name: z.string().optional(), ip: z.string().optional(), inUse: z.boolean().optional() }),
  source: z.object({ file: z.string().optional(), flags: z.record(z.string(), z.unknown()), cwd: z.string() }),
  reload: z.object({ summary: z.string() }),
};

export type ParsedResponse<C extends ControlCommand> =
  | { ok: true; data: ControlReplies[C] }
  | { ok: false; error: string }
  /** The line is not a tunroute v1 reply to `cmd` (another program, or an incompatible version). */
  | { ok: 'invalid'; problem: string };

/** Parse one response line (without its newline) to a `cmd` request. Never throws. */
export function parseResponse<C extends ControlCommand>(cmd: C, line: string): ParsedResponse<C> {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { ok: 'invalid', problem: `not JSON: ${preview(line)}` };
  }
  const env = responseSchema.safeParse(json);
  if (!env.success) return { ok: 'invalid', problem: `not a v${CONTROL_PROTOCOL_VERSION} reply: ${preview(json)}` };
  if (!env.data.ok) return { ok: false, error: env.data.error };
  const data = replySchemas[cmd].safeParse(env.data.data);
  if (!data.success) {
    const iss = data.error.issues[0];
    return { ok: 'invalid', problem: `bad "${cmd}" data at ${iss?.path.join('.') || '(top)'}: ${iss?.message ?? 'invalid'}` };
  }
  return { ok: true, data: data.data };
}
