/**
 * How many flows this process can carry, from its open-file limit. Each TCP flow holds one
 * socket to its outbound; a UDP flow holds one (direct) or two (SOCKS5: the UDP ASSOCIATE
 * control connection and the relay socket). Some descriptors are everything else's: the
 * device, the control socket, the tunnels' sockets, DNS, logs, the ones a closing flow still
 * holds for a moment. The configured limits are ceilings: when the descriptors cannot cover
 * them, both shrink in proportion, so the limit is met with an RST and a log line instead of
 * EMFILE somewhere in the middle of a flow.
 */

/** Descriptors per TCP flow and per UDP flow (at most). */
const FDS_PER_TCP_FLOW = 1;
const FDS_PER_UDP_FLOW = 2;
/** Left for everything but flows: 5 % of the limit, at least 256. */
const MIN_HEADROOM = 256;
const HEADROOM_SHARE = 0.05;

export interface FlowLimits {
  tcp: number;
  udp: number;
  /** Most TCP flows one local user may hold (0: no share). */
  perUid: number;
  /** The open-file limit the figures come from (undefined: not known, the configured limits stand). */
  nofile: number | undefined;
  /** The configured limits were lowered to fit it. */
  lowered: boolean;
}

export interface FlowLimitInput {
  /** The soft open-file limit (after raising it), or undefined when unknown. */
  nofile: number | undefined;
  tcpMaxFlows: number;
  udpMaxFlows: number;
  /** limits.tcp.perUidFlows: undefined for the default (half the TCP flows), 0 for none. */
  perUidFlows: number | undefined;
}

export function deriveFlowLimits(i: FlowLimitInput): FlowLimits {
  let tcp = i.tcpMaxFlows;
  let udp = i.udpMaxFlows;
  let lowered = false;
  const n = i.nofile;
  if (n !== undefined && Number.isFinite(n)) {
    const forFlows = Math.max(0, n - Math.max(MIN_HEADROOM, Math.ceil(n * HEADROOM_SHARE)));
    const wanted = tcp * FDS_PER_TCP_FLOW + udp * FDS_PER_UDP_FLOW;
    if (wanted > forFlows) {
      const f = forFlows / wanted;
      tcp = Math.max(1, Math.floor(tcp * f));
      udp = Math.max(1, Math.floor(udp * f));
      lowered = true;
    }
  }
  const perUid = i.perUidFlows === undefined ? Math.max(1, Math.floor(tcp / 2)) : Math.min(i.perUidFlows, tcp);
  return { tcp, udp, perUid, nofile: n, lowered };
}

/** The open-file limit as raised at start (src/native/limits.ts). */
export interface NofileReading {
  before: number;
  soft: number;
  hard: number;
}

/** The one log line that says which flow limits this run has, and why. */
export function flowLimitsMessage(l: FlowLimits, nofile: NofileReading | undefined, tcpConfigured: number, udpConfigured: number, memoryBytes: number): string {
  const files =
    nofile === undefined
      ? 'open-file limit unknown (no native addon)'
      : `open-file limit ${nofile.soft}${nofile.soft > nofile.before ? ` (raised from ${nofile.before})` : ''}, hard ${nofile.hard}`;
  const lowered = l.lowered ? `; lowered from ${tcpConfigured} TCP / ${udpConfigured} UDP to fit the open-file limit` : '';
  const perUid = l.perUid > 0 ? `, ${l.perUid} TCP per user` : ', no per-user share';
  return `flow limits: ${l.tcp} TCP and ${l.udp} UDP flows${perUid}, buffers ${Math.round(memoryBytes / 1048576)} MiB (${files}${lowered})`;
}

/** The same as fields of the log line. */
export function flowLimitsFields(l: FlowLimits, nofile: NofileReading | undefined, memoryBytes: number): Record<string, number | undefined> {
  return { tcpFlows: l.tcp, udpFlows: l.udp, perUidFlows: l.perUid, nofile: nofile?.soft, nofileHard: nofile?.hard, nofileBefore: nofile?.before, memoryBytes };
}
