/**
 * RFC 9293 §3.9.1 (user/TCP interface) and §3.8 defaults — the resolved settings of one
 * connection: every option of TcpConnectionOptions with its default filled in.
 */

import type { RttConfig } from './rtt.js';
import type { SliceMode } from './send-buffer.js';
import type { KeepAliveOptions, TcpConnectionOptions } from './types.js';

export interface TcpConfig {
  mss: number;
  maxSegmentPayload: number | undefined;
  rcvBufSize: number;
  sndBufSize: number;
  windowScaling: boolean;
  sack: boolean;
  timestamps: boolean;
  tsOffset: number;
  delayedAckMs: number;
  keepAlive: KeepAliveOptions | undefined;
  timeWaitMs: number;
  synRetries: number;
  maxRetries: number;
  initialWindow: number;
  copyInput: boolean;
  output: SliceMode;
  challengeAckLimit: number;
  rtt: RttConfig;
}

export function resolveConfig(o: TcpConnectionOptions): TcpConfig {
  return {
    mss: o.mss ?? 1460,
    maxSegmentPayload: o.maxSegmentPayload,
    rcvBufSize: o.rcvBufSize ?? 256 * 1024,
    sndBufSize: o.sndBufSize ?? 256 * 1024,
    windowScaling: o.windowScaling ?? true,
    sack: o.sack ?? true,
    timestamps: o.timestamps ?? true,
    tsOffset: o.tsOffset ?? 0,
    delayedAckMs: o.delayedAckMs ?? 40,
    keepAlive: o.keepAlive,
    timeWaitMs: o.timeWaitMs ?? 60_000,
    synRetries: o.synRetries ?? 6,
    maxRetries: o.maxRetries ?? 15,
    initialWindow: o.initialWindow ?? 10,
    copyInput: o.copyInput ?? true,
    output: o.output ?? 'keep',
    challengeAckLimit: o.challengeAckLimit ?? 10,
    rtt: {
      initialRtoMs: o.initialRtoMs ?? 1000,
      minRtoMs: o.minRtoMs ?? 200,
      maxRtoMs: o.maxRtoMs ?? 60_000,
    },
  };
}
