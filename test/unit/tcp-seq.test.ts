/** RFC 9293 §3.4 sequence arithmetic modulo 2^32, across the wrap. */
import { describe, expect, it } from 'vitest';
import {
  seqAdd,
  seqDiff,
  seqGe,
  seqGt,
  seqInWindow,
  seqLe,
  seqLt,
  seqMax,
  seqMin,
  seqSub,
  seqUnwrap,
  seqWrap,
} from '../../src/stack/tcp/index.js';

describe('sequence comparisons', () => {
  it('order plain values', () => {
    expect(seqLt(1, 2)).toBe(true);
    expect(seqLt(2, 1)).toBe(false);
    expect(seqLe(2, 2)).toBe(true);
    expect(seqGt(3, 2)).toBe(true);
    expect(seqGe(2, 2)).toBe(true);
  });

  it('order across the wrap: 2^32-1 < 0 < 5', () => {
    expect(seqLt(0xffff_ffff, 0)).toBe(true);
    expect(seqGt(0, 0xffff_ffff)).toBe(true);
    expect(seqLt(0xffff_fff0, 5)).toBe(true);
    expect(seqLe(0xffff_fff0, 5)).toBe(true);
    expect(seqGe(5, 0xffff_fff0)).toBe(true);
    expect(seqMax(0xffff_fff0, 5)).toBe(5);
    expect(seqMin(0xffff_fff0, 5)).toBe(0xffff_fff0);
  });

  it('add and subtract modulo 2^32', () => {
    expect(seqAdd(0xffff_ffff, 1)).toBe(0);
    expect(seqAdd(0xffff_fff0, 0x20)).toBe(0x10);
    expect(seqAdd(5, -10)).toBe(0xffff_fffb);
    expect(seqSub(3, 5)).toBe(0xffff_fffe);
  });

  it('signed difference', () => {
    expect(seqDiff(5, 0xffff_fffb)).toBe(10);
    expect(seqDiff(0xffff_fffb, 5)).toBe(-10);
    expect(seqDiff(0x8000_0000, 0)).toBe(-0x8000_0000);
  });

  it('window membership, also when the window spans the wrap', () => {
    expect(seqInWindow(10, 10, 5)).toBe(true);
    expect(seqInWindow(14, 10, 5)).toBe(true);
    expect(seqInWindow(15, 10, 5)).toBe(false);
    expect(seqInWindow(9, 10, 5)).toBe(false);
    expect(seqInWindow(2, 0xffff_fffe, 5)).toBe(true);
    expect(seqInWindow(3, 0xffff_fffe, 5)).toBe(false);
    expect(seqInWindow(0xffff_fffd, 0xffff_fffe, 5)).toBe(false);
    expect(seqInWindow(7, 7, 0)).toBe(false);
  });

  it('wrap and unwrap positions near the reference', () => {
    const base = 0xffff_ff00;
    expect(seqWrap(base, 0)).toBe(base);
    expect(seqWrap(base, 0x100)).toBe(0);
    expect(seqWrap(base, 2 ** 40 + 5)).toBe((base + 5) >>> 0);
    expect(seqUnwrap(base, 0x80, 0x10)).toBe(0x110);
    expect(seqUnwrap(base, 0x200, base + 0x180)).toBe(0x180);
    // A position far beyond 2^32 unwraps relative to the reference.
    const ref = 5 * 2 ** 32 + 1000;
    expect(seqUnwrap(base, ref, seqWrap(base, ref + 70_000))).toBe(ref + 70_000);
    expect(seqUnwrap(base, ref, seqWrap(base, ref - 70_000))).toBe(ref - 70_000);
  });
});
