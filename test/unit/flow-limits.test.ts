/** The flow limits that follow from the open-file limit (relay/flow-limits.ts). */
import { describe, expect, it } from 'vitest';
import { deriveFlowLimits } from '../../src/relay/flow-limits.js';

const defaults = { tcpMaxFlows: 16_000, udpMaxFlows: 4096, perUidFlows: undefined };

describe('deriveFlowLimits', () => {
  it('keeps the configured limits when the descriptors cover them (1 per TCP flow, 2 per UDP flow, 5 % headroom)', () => {
    const l = deriveFlowLimits({ ...defaults, nofile: 1_048_576 });
    expect(l).toEqual({ tcp: 16_000, udp: 4096, perUid: 8000, nofile: 1_048_576, lowered: false });
  });

  it('shrinks both in proportion when they do not fit (the systemd unit: LimitNOFILE=20000)', () => {
    const l = deriveFlowLimits({ ...defaults, nofile: 20_000 });
    // 20,000 - 1,000 headroom = 19,000 for 16,000 + 2 * 4,096 = 24,192 wanted.
    expect(l.lowered).toBe(true);
    expect(l.tcp).toBe(Math.floor(16_000 * (19_000 / 24_192)));
    expect(l.udp).toBe(Math.floor(4096 * (19_000 / 24_192)));
    expect(l.tcp + 2 * l.udp).toBeLessThanOrEqual(19_000);
    expect(l.perUid).toBe(Math.floor(l.tcp / 2));
  });

  it('leaves at least 256 descriptors to the rest, and at least one flow each', () => {
    const l = deriveFlowLimits({ ...defaults, nofile: 300 });
    expect(l.tcp + 2 * l.udp).toBeLessThanOrEqual(300 - 256 + 2);
    expect(l.tcp).toBeGreaterThanOrEqual(1);
    expect(l.udp).toBeGreaterThanOrEqual(1);
  });

  it('keeps the configured limits when the open-file limit is unknown or unlimited', () => {
    expect(deriveFlowLimits({ ...defaults, nofile: undefined })).toMatchObject({ tcp: 16_000, udp: 4096, lowered: false });
    expect(deriveFlowLimits({ ...defaults, nofile: Infinity })).toMatchObject({ tcp: 16_000, udp: 4096, lowered: false });
  });

  it('takes perUidFlows as given (0: no share), never above the TCP limit', () => {
    expect(deriveFlowLimits({ ...defaults, nofile: undefined, perUidFlows: 0 }).perUid).toBe(0);
    expect(deriveFlowLimits({ ...defaults, nofile: undefined, perUidFlows: 100 }).perUid).toBe(100);
    expect(deriveFlowLimits({ ...defaults, nofile: 2000, perUidFlows: 100_000 }).perUid).toBe(deriveFlowLimits({ ...defaults, nofile: 2000 }).tcp);
  });
});
