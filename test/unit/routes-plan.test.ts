import { describe, expect, it } from 'vitest';
import { computeRouteSet, type Prefix } from '../../src/routes/cidr-set.js';
import { planUp, toIpBatch, describePlan, invert } from '../../src/routes/plan.js';
import { applyPlan, removePlan, type IpRunner, type BatchResult } from '../../src/routes/apply.js';
import { loadConfig } from '../../src/config/load.js';
import { parseCidr, u32ToIp } from '../../src/wire/ipv4.js';
import { silentLogger } from '../../src/logger.js';
import { isTunrouteError } from '../../src/errors.js';

const P = (s: string): Prefix => parseCidr(s)!;
const S = (ps: Prefix[]): string[] => ps.map((p) => `${u32ToIp(p.addr)}/${p.prefix}`);

describe('computeRouteSet', () => {
  it('keeps disjoint prefixes and sorts them', () => {
    expect(S(computeRouteSet([P('10.2.0.0/16'), P('10.1.0.0/16')]))).toEqual(['10.1.0.0/16', '10.2.0.0/16']);
  });
  it('merges adjacent prefixes into their parent', () => {
    expect(S(computeRouteSet([P('10.0.0.0/25'), P('10.0.0.128/25')]))).toEqual(['10.0.0.0/24']);
  });
  it('absorbs a prefix nested in another', () => {
    expect(S(computeRouteSet([P('10.0.0.0/8'), P('10.5.5.0/24')]))).toEqual(['10.0.0.0/8']);
  });
  it('masks host bits', () => {
    expect(S(computeRouteSet([P('10.66.1.7/24')]))).toEqual(['10.66.1.0/24']);
  });
  it('carves an exclude out of an include', () => {
    expect(S(computeRouteSet([P('10.0.0.0/24')], [P('10.0.0.0/26')]))).toEqual(['10.0.0.64/26', '10.0.0.128/25']);
    expect(S(computeRouteSet([P('10.0.0.0/24')], [P('10.0.0.64/26')]))).toEqual([
      '10.0.0.0/26',
      '10.0.0.128/25',
    ]);
  });
  it('handles the whole address space and a carve at its top', () => {
    expect(S(computeRouteSet([P('0.0.0.0/0')]))).toEqual(['0.0.0.0/0']);
    expect(S(computeRouteSet([P('0.0.0.0/0')], [P('128.0.0.0/1')]))).toEqual(['0.0.0.0/1']);
    expect(S(computeRouteSet([P('255.255.255.255/32')]))).toEqual(['255.255.255.255/32']);
  });
  it('an exclude covering everything leaves nothing', () => {
    expect(computeRouteSet([P('10.0.0.0/8')], [P('0.0.0.0/0')])).toEqual([]);
  });
  it('covers exactly include minus exclude (random cross-check)', () => {
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
    for (let round = 0; round < 50; round++) {
      // Work inside 10.0.0.0/20 so a brute-force membership check stays cheap.
      const mk = (): Prefix => {
        const prefix = 20 + Math.floor(rnd() * 13);
        const addr = ((10 << 24) | Math.floor(rnd() * 4096)) >>> 0;
        return { addr: (addr & (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0)) >>> 0, prefix };
      };
      const inc = Array.from({ length: 8 }, mk);
      const exc = Array.from({ length: 4 }, mk);
      const out = computeRouteSet(inc, exc);
      const inP = (a: number, p: Prefix): boolean => a >>> (32 - p.prefix) === p.addr >>> (32 - p.prefix) || p.prefix === 0;
      const wrong: number[] = [];
      for (let a = 10 << 24; a < (10 << 24) + 4096; a++) {
        const want = inc.some((p) => inP(a, p)) && !exc.some((p) => inP(a, p));
        if (out.some((p) => inP(a, p)) !== want) wrong.push(a);
      }
      expect(wrong).toEqual([]);
      // Minimal: no two outputs overlap and none could merge with its neighbour.
      for (let i = 1; i < out.length; i++) expect(out[i]!.addr).toBeGreaterThan(out[i - 1]!.addr);
    }
  });
});

describe('planUp', () => {
  const config = loadConfig({ flags: { route: ['10.66.1.0/24', '10.66.2.0/24', '10.66.3.0/24'] } });
  const plan = planUp(config);

  it('sets up the device, then adds merged routes', () => {
    expect(toIpBatch(plan.up, 'apply')).toEqual([
      'link set dev tun0 mtu 1500 txqueuelen 5000',
      'address add 198.18.0.1/15 dev tun0',
      'link set dev tun0 up',
      'route add 10.66.1.0/24 dev tun0',
      'route add 10.66.2.0/23 dev tun0',
    ]);
  });
  it('removes exactly the routes it added, in reverse', () => {
    expect(toIpBatch(plan.down, 'undo')).toEqual(['route del 10.66.2.0/23 dev tun0', 'route del 10.66.1.0/24 dev tun0']);
  });
  it('describes itself for --dry-run', () => {
    const text = describePlan(plan);
    expect(text).toContain('add address 198.18.0.1/15');
    expect(text).toContain('+ 10.66.2.0/23');
  });
});

class RecordingRunner implements IpRunner {
  calls: { lines: string[]; force: boolean }[] = [];
  constructor(private failAt?: number) {}
  async batch(lines: readonly string[], force: boolean): Promise<BatchResult> {
    this.calls.push({ lines: [...lines], force });
    if (this.failAt !== undefined && !force) {
      const at = this.failAt;
      this.failAt = undefined;
      return { ok: false, failedLine: at, stderr: `RTNETLINK answers: File exists\nCommand failed -:${at}` };
    }
    return { ok: true, stderr: '' };
  }
}

describe('applyPlan', () => {
  const plan = planUp(loadConfig({ flags: { route: ['10.1.0.0/16', '10.3.0.0/16'] } }));

  it('runs the whole plan as one batch', async () => {
    const r = new RecordingRunner();
    await applyPlan(plan, r, silentLogger());
    expect(r.calls).toHaveLength(1);
    expect(r.calls[0]!.force).toBe(false);
  });

  it('on a failing line, undoes what was applied before it and names the command', async () => {
    const r = new RecordingRunner(5); // the second route fails
    const err = await applyPlan(plan, r, silentLogger()).catch((e: unknown) => e);
    expect(isTunrouteError(err) && err.code).toBe('TR_ROUTE_APPLY');
    expect(String((err as Error).message)).toContain('route add 10.3.0.0/16 dev tun0');
    expect(r.calls[1]).toEqual({ lines: ['route del 10.1.0.0/16 dev tun0'], force: true });
  });

  it('down goes on past errors', async () => {
    const r = new RecordingRunner();
    await removePlan(plan, r, silentLogger());
    expect(r.calls[0]).toEqual({ lines: toIpBatch(invert(plan.up), 'undo'), force: true });
  });
});
