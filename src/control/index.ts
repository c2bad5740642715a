/**
 * The control socket: a running daemon answers `status`, `flows`, `ping` and `fakeip` on a unix socket
 * (newline-delimited JSON, see ./protocol.ts); `tunroute status` asks and prints.
 */
export {
  CONTROL_COMMANDS,
  CONTROL_PROTOCOL_VERSION,
  DEFAULT_CONTROL_PATH,
  MAX_REQUEST_BYTES,
  MAX_RESPONSE_BYTES,
  parseRequest,
  parseResponse,
  type ControlCommand,
  type ControlReplies,
  type ControlRequest,
  type ControlResponse,
  type PingReply,
  type StatusSnapshot,
  type TunnelStatus,
} from './protocol.js';
export { startControlServer, statusSnapshotOf, type ControlServer, type ControlServerOptions, type SnapshotInfo, type SnapshotSource } from './server.js';
export { queryControl, type QueryOptions } from './client.js';
export { formatStatus, formatFlowTable, formatBytes, formatDuration, formatCount, type FormatOptions } from './format.js';
