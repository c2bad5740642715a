/**
 * The test lab: network namespaces, veth links, tracked daemons and the upstream servers that
 * every end-to-end test, the demo and the benchmark use. Needs root; see labAvailable().
 */
export { Lab, Namespace, labAvailable, waitForPort, sh, isIPv4 } from './netns.js';
export type { LabOptions, NamespaceOptions, LinkOptions, LinkEnd, VethLink, SpawnOptions } from './netns.js';
export { LabProcess, LabError, runCommand, describeCommand } from './process.js';
export type { ExecOptions, ExecResult, ExitStatus, LabProcessOptions } from './process.js';
export {
  requireBinary,
  danteConfigText,
  startDante,
  startMicrosocks,
  startTinyproxy,
  tinyproxyConfigText,
  startHttpServer,
  startDelayRelay,
  startIperf3,
  startDnsmasq,
  labBytes,
  labBytesSha256,
} from './servers.js';
export type { DanteConfig, DanteOptions, MicrosocksOptions, TinyproxyOptions, TinyproxyConfig, HttpServerOptions, DelayRelayOptions, Iperf3Options, DnsmasqOptions } from './servers.js';
export { startWireguardGo } from './wireguard.js';
export type { WireguardGoOptions, WireguardGoPeer } from './wireguard.js';
export { startLabResolved, labResolvedMissing, LAB_RESOLVED_DIR } from './resolved.js';
export type { LabResolved } from './resolved.js';
