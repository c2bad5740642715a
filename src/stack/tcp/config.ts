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

/**
 * The settings that do not change from one connection to the next when they are made with the
 * same options: everything but the per-connection tsOffset and buffer sizes.
 */
export type SharedTcpConfig = Omit<TcpConfig, 'tsOffset' | 'rcvBufSize' | 'sndBufSize'>;

let lastShared: SharedTcpConfig | undefined;

function sameShared(a: SharedTcpConfig, b: SharedTcpConfig): boolean {
  return (
    a.mss === b.mss &&
    a.maxSegmentPayload === b.maxSegmentPayload &&
    a.windowScaling === b.windowScaling &&
    a.sack === b.sack &&
    a.timestamps === b.timestamps &&
    a.delayedAckMs === b.delayedAckMs &&
    a.keepAlive === b.keepAlive &&
    a.timeWaitMs === b.timeWaitMs &&
    a.synRetries === b.synRetries &&
    a.maxRetries === b.maxRetries &&
    a.initialWindow === b.initialWindow &&
    a.copyInput === b.copyInput &&
    a.output === b.output &&
    a.challengeAckLimit === b.challengeAckLimit &&
    a.rtt.initialRtoMs === b.rtt.initialRtoMs &&
    a.rtt.minRtoMs === b.rtt.minRtoMs &&
    a.rtt.maxRtoMs === b.rtt.maxRtoMs
  );
}

/**
 * The shared part of `c`, as one object for every connection made with the same
 * settings (~0.2 KB per connection otherwise): the last one is reused when it matches. Read-only.
 */
export function sharedConfig(c: TcpConfig): SharedTcpConfig {
  if (lastShared !== undefined && sameShared(lastShared, c)) return lastShared;
  const { tsOffset: _t, rcvBufSize: _r, sndBufSize: _s, ...shared } = c;
  lastShared = shared;
  return shared;
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
