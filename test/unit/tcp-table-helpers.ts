/** Small helpers shared by the table tests. */
import type { TcpSegment } from '../../src/stack/tcp/index.js';

const enc = new TextEncoder();

export function bytes(s: string): Uint8Array {
  return enc.encode(s);
}

export function flagsOf(out: Array<{ seg: TcpSegment }>): number[] {
  return out.map((o) => o.seg.flags);
}
