/**
 * tunroute's userspace TCP (RFC 9293): a pure state machine per connection and a demux table.
 * Time is passed in, segments come out; see connection.ts and table.ts.
 */
export * from './segment.js';
export * from './seq.js';
export * from './types.js';
export { RttEstimator, DEFAULT_RTT_CONFIG, type RttConfig } from './rtt.js';
export { Reassembly, type ReassemblyRange } from './reassembly.js';
export { SendBuffer } from './send-buffer.js';
export { SackScoreboard } from './sack-scoreboard.js';
export { Congestion } from './congestion.js';
export { TcpConnection } from './connection.js';
export { chooseWindowScale, negotiate, type Negotiated } from './options.js';
export { resolveConfig, type TcpConfig } from './config.js';
export {
  TcpTable,
  type TableOutput,
  type TcpSynRequest,
  type TcpTableOptions,
  type TcpTableCounters,
} from './table.js';
