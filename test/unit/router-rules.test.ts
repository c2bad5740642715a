import { describe, expect, it } from 'vitest';
import { TunrouteError } from '../../src/errors.js';
import { Router, type RouteRule } from '../../src/router/router.js';
import { mulberry32Uint32 as rng } from '../helpers/random.js';

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const GRE = 47;

function ip(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

function thrown(f: () => unknown): TunrouteError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TunrouteError);
    return e as TunrouteError;
  }
  throw new Error('expected a TunrouteError');
}

describe('Router: which rule wins', () => {
  const router = new Router({
    defaultOutbound: 'direct',
    rules: [
      { cidrs: ['10.0.0.0/8'], outbound: 'office' }, // 0
      { cidrs: ['10.1.0.0/16'], protocol: 'tcp', ports: [22], outbound: 'block' }, // 1
      { cidrs: ['10.1.2.0/24'], protocol: 'udp', outbound: 'udp-proxy' }, // 2
      { cidrs: ['10.1.2.0/24'], outbound: 'lab' }, // 3
      { cidrs: ['10.1.2.0/24'], protocol: 'tcp', outbound: 'never' }, // 4: shadowed by rule 3 (same prefix, later)
      { cidrs: ['192.168.0.0/16', '172.16.0.0/12'], outbound: 'lan' }, // 5
      { protocol: 'icmp', outbound: 'pinger' }, // 6: any address
      { cidrs: ['8.8.8.8'], protocol: 'udp', ports: [53, [5353, 5354]], outbound: 'dns' }, // 7: bare address = /32
      { cidrs: [{ addr: ip('100.64.0.0'), prefix: 10 }], outbound: 'cgnat' }, // 8: parsed form
    ],
  });

  it.each([
    ['10.9.9.9', TCP, 443, 'office', 'the /8 is the only match'],
    ['10.1.9.9', TCP, 22, 'block', 'the /16 is more specific than the /8, whatever the order'],
    ['10.1.9.9', TCP, 23, 'office', 'the /16 rule wants port 22: fall back to the /8'],
    ['10.1.9.9', UDP, 22, 'office', 'the /16 rule is tcp only'],
    ['10.1.2.3', UDP, 9, 'udp-proxy', 'same prefix: the first matching rule'],
    ['10.1.2.3', TCP, 22, 'lab', 'the /24 beats the /16 port rule; rule 3 comes before rule 4'],
    ['10.1.2.3', ICMP, 0, 'lab', 'rule 3 has no protocol, so it takes ICMP too'],
    ['10.1.2.3', GRE, 0, 'lab', 'and any other protocol'],
    ['10.9.9.9', ICMP, 0, 'office', 'a /8 beats the any-address ICMP rule'],
    ['1.1.1.1', ICMP, 0, 'pinger', 'no CIDR rule: the any-address rule'],
    ['1.1.1.1', TCP, 80, 'direct', 'nothing matches: the default'],
    ['192.168.7.7', TCP, 80, 'lan', 'the first CIDR of a multi-CIDR rule'],
    ['172.31.255.255', UDP, 1, 'lan', 'the second CIDR of a multi-CIDR rule'],
    ['172.32.0.0', UDP, 1, 'direct', 'just outside 172.16.0.0/12'],
    ['8.8.8.8', UDP, 53, 'dns', 'a port'],
    ['8.8.8.8', UDP, 5354, 'dns', 'the top of a range'],
    ['8.8.8.8', UDP, 5355, 'direct', 'past the range'],
    ['8.8.8.8', TCP, 53, 'direct', 'the dns rule is udp only'],
    ['8.8.8.8', ICMP, 0, 'pinger', 'ICMP never matches a rule with ports'],
    ['8.8.8.9', UDP, 53, 'direct', 'a bare address is a /32'],
    ['100.127.255.255', TCP, 1, 'cgnat', 'a rule given as a parsed {addr, prefix}'],
    ['0.0.0.0', TCP, 1, 'direct', 'the lowest address'],
    ['255.255.255.255', UDP, 65535, 'direct', 'the highest address'],
  ] as const)('%s proto %i port %i → %s (%s)', (dst, proto, port, outbound, _why) => {
    expect(router.route(ip(dst), proto, port)).toBe(outbound);
    expect(router.why(ip(dst), proto, port).outbound).toBe(outbound);
  });

  it('without rules, everything goes to the default', () => {
    const r = new Router({ rules: [], defaultOutbound: 'proxy' });
    expect(r.route(ip('10.0.0.1'), TCP, 80)).toBe('proxy');
    expect(r.why(ip('10.0.0.1'), TCP, 80)).toMatchObject({ outbound: 'proxy', ruleIndex: -1, skipped: [] });
  });

  it('an explicit 0.0.0.0/0 and a rule without cidrs share the /0 prefix in file order', () => {
    const r = new Router({
      rules: [
        { cidrs: ['0.0.0.0/0'], protocol: 'udp', outbound: 'a' },
        { outbound: 'b' },
      ],
      defaultOutbound: 'never',
    });
    expect(r.route(ip('1.2.3.4'), UDP, 1)).toBe('a');
    expect(r.route(ip('1.2.3.4'), TCP, 1)).toBe('b');
  });

  it('overlapping and touching port ranges are merged', () => {
    const r = new Router({
      rules: [{ protocol: 'tcp', ports: [[100, 200], 201, [150, 300], 80, [1000, 1000], [999, 999]], outbound: 'x' }],
      defaultOutbound: 'd',
    });
    for (const p of [80, 100, 200, 201, 250, 300, 999, 1000]) expect(r.route(0, TCP, p)).toBe('x');
    for (const p of [1, 79, 81, 99, 301, 998, 1001, 65535]) expect(r.route(0, TCP, p)).toBe('d');
    expect(r.describeRule(0)).toBe('any address tcp ports 80, 100-300, 999-1000 → x');
  });

  it('ports without a protocol apply to TCP and UDP', () => {
    const r = new Router({ rules: [{ cidrs: ['10.0.0.0/8'], ports: [443], outbound: 'x' }], defaultOutbound: 'd' });
    expect(r.route(ip('10.0.0.1'), TCP, 443)).toBe('x');
    expect(r.route(ip('10.0.0.1'), UDP, 443)).toBe('x');
    expect(r.route(ip('10.0.0.1'), ICMP, 443)).toBe('d');
    expect(r.route(ip('10.0.0.1'), GRE, 443)).toBe('d');
  });

  it('lists the outbound names it refers to', () => {
    expect([...router.outboundNames()].sort()).toEqual(['block', 'cgnat', 'direct', 'dns', 'lab', 'lan', 'never', 'office', 'pinger', 'udp-proxy']);
  });
});

describe('Router.why explains the decision', () => {
  const router = new Router({
    defaultOutbound: 'direct',
    rules: [
      { cidrs: ['10.0.0.0/8'], outbound: 'office' },
      { cidrs: ['10.1.0.0/16'], protocol: 'tcp', ports: [22, [8000, 8080]], outbound: 'block' },
      { cidrs: ['10.1.2.0/24'], protocol: 'udp', outbound: 'udp-proxy' },
    ],
  });

  it('names the rule, its prefix and the more specific rules it passed over', () => {
    const d = router.why(ip('10.1.2.3'), TCP, 443);
    expect(d).toMatchObject({ outbound: 'office', ruleIndex: 0, cidr: '10.0.0.0/8' });
    expect(d.skipped).toEqual([
      { ruleIndex: 2, cidr: '10.1.2.0/24', why: 'it is for udp only' },
      { ruleIndex: 1, cidr: '10.1.0.0/16', why: 'the port is not in its list' },
    ]);
    expect(d.reason).toBe(
      "tcp to 10.1.2.3:443 goes to 'office' by rule 0 (10.0.0.0/8 → office): 10.0.0.0/8 is the most specific matching prefix. " +
        'Not rule 2 (10.1.2.0/24): it is for udp only; not rule 1 (10.1.0.0/16): the port is not in its list.',
    );
  });

  it('says when the default applied', () => {
    const d = router.why(ip('11.0.0.1'), ICMP, 0);
    expect(d).toMatchObject({ outbound: 'direct', ruleIndex: -1, skipped: [] });
    expect(d.cidr).toBeUndefined();
    expect(d.reason).toBe("icmp to 11.0.0.1 goes to the default outbound 'direct': no rule matches.");
  });

  it('describes a port rule with its ranges', () => {
    const d = router.why(ip('10.1.9.9'), TCP, 8080);
    expect(d.ruleIndex).toBe(1);
    expect(d.reason).toContain('by rule 1 (10.1.0.0/16 tcp ports 22, 8000-8080 → block)');
  });

  it('explains why ICMP skips a rule with ports', () => {
    const r = new Router({ rules: [{ cidrs: ['10.0.0.0/8'], ports: [1], outbound: 'x' }], defaultOutbound: 'd' });
    expect(r.why(ip('10.0.0.1'), ICMP, 0).skipped[0].why).toBe('it names ports, which only TCP and UDP have');
  });
});

describe('Router refuses bad rules with the field and the fix', () => {
  const cases: Array<[string, RouteRule[], string, string]> = [
    ['a malformed CIDR', [{ cidrs: ['10.0.0.0/8', '10.0.0.0/33'], outbound: 'x' }], 'TR_BAD_CIDR', 'rules[0].cidrs[1] "10.0.0.0/33" is not an IPv4 CIDR'],
    ['a CIDR with junk', [{ cidrs: [' 10.0.0.0/8'], outbound: 'x' }], 'TR_BAD_CIDR', 'is not an IPv4 CIDR'],
    ['a hostname', [{ cidrs: ['example.com'], outbound: 'x' }], 'TR_BAD_CIDR', 'is not an IPv4 CIDR'],
    ['host bits', [{ cidrs: ['10.1.2.3/8'], outbound: 'x' }], 'TR_BAD_CIDR', 'has host bits set; write 10.0.0.0/8 for the network, or 10.1.2.3/32 for one address'],
    ['a bad parsed CIDR', [{ cidrs: [{ addr: -1, prefix: 8 }], outbound: 'x' }], 'TR_BAD_CIDR', 'is not an IPv4 CIDR'],
    ['empty cidrs', [{ cidrs: [], outbound: 'x' }], 'TR_BAD_CONFIG', 'rules[0].cidrs is empty'],
    ['empty ports', [{ ports: [], outbound: 'x' }], 'TR_BAD_CONFIG', 'rules[0].ports is empty'],
    ['port 0', [{ ports: [0], outbound: 'x' }], 'TR_BAD_CONFIG', 'rules[0].ports[0] 0 is not a port or range'],
    ['port 65536', [{ ports: [80, 65536], outbound: 'x' }], 'TR_BAD_CONFIG', 'rules[0].ports[1] 65536'],
    ['a reversed range', [{ ports: [[10, 5]], outbound: 'x' }], 'TR_BAD_CONFIG', 'rules[0].ports[0] [10,5]'],
    ['a fractional port', [{ ports: [80.5], outbound: 'x' }], 'TR_BAD_CONFIG', 'is not a port or range'],
    ['ports for icmp', [{ protocol: 'icmp', ports: [1], outbound: 'x' }], 'TR_BAD_CONFIG', 'names ports for icmp'],
    ['an unknown protocol', [{ protocol: 'sctp' as 'tcp', outbound: 'x' }], 'TR_BAD_CONFIG', 'protocol "sctp" is not a protocol; use tcp, udp or icmp'],
    ['an empty outbound', [{ outbound: '' }], 'TR_BAD_CONFIG', 'rules[0].outbound is empty'],
  ];
  it.each(cases)('%s', (_name, rules, code, text) => {
    const e = thrown(() => new Router({ rules: [{ outbound: 'ok' }, ...rules], defaultOutbound: 'd', source: 'rules' }));
    expect(e.code).toBe(code);
    // The good rule 0 shifts the bad one to index 1.
    expect(e.message).toContain(text.replace('rules[0]', 'rules[1]'));
    expect(e.message.endsWith('.')).toBe(true);
  });

  it('an empty default outbound', () => {
    expect(thrown(() => new Router({ rules: [], defaultOutbound: '' })).code).toBe('TR_BAD_CONFIG');
  });

  it('names the source it was given', () => {
    const e = thrown(() => new Router({ rules: [{ cidrs: ['x'], outbound: 'a' }], defaultOutbound: 'd', source: 'tunroute.yaml: rules' }));
    expect(e.message.startsWith('tunroute.yaml: rules[0].cidrs[0] "x"')).toBe(true);
  });
});

describe('Router against the documented semantics, by brute force (seeded)', () => {
  /** The rules' meaning, computed the slow and obvious way. */
  function naive(rules: RouteRule[], cidrs: Array<Array<[number, number]>>, def: string, dst: number, proto: number, port: number): string {
    let best = -1;
    let bestLen = -1;
    rules.forEach((r, i) => {
      const want = r.protocol === undefined ? -1 : { tcp: TCP, udp: UDP, icmp: ICMP }[r.protocol];
      if (want !== -1 && want !== proto) return;
      if (r.ports !== undefined) {
        if (proto !== TCP && proto !== UDP) return;
        if (!r.ports.some((p) => (typeof p === 'number' ? p === port : port >= p[0] && port <= p[1]))) return;
      }
      for (const [a, l] of cidrs[i]) {
        if (((dst & mask(l)) >>> 0) === a && l > bestLen) {
          best = i;
          bestLen = l;
        }
      }
    });
    return best === -1 ? def : rules[best].outbound;
  }

  it('agrees on 20,000 packets over 300 random rules', () => {
    const next = rng(0xb0a7);
    const rules: RouteRule[] = [];
    const cidrs: Array<Array<[number, number]>> = [];
    const protos = [undefined, 'tcp', 'udp', 'icmp'] as const;
    for (let i = 0; i < 300; i++) {
      const mine: Array<[number, number]> = [];
      const n = next() % 4; // 0: any address
      for (let j = 0; j < n; j++) {
        const len = next() % 33;
        const base = next() % 2 === 0 ? (10 << 24) | (next() & 0x00ffffff) : next();
        mine.push([(base & mask(len)) >>> 0, len]);
      }
      const protocol = protos[next() % 4];
      const withPorts = protocol !== 'icmp' && next() % 3 === 0;
      const ports = withPorts
        ? Array.from({ length: 1 + (next() % 3) }, () => (next() % 2 === 0 ? 1 + (next() % 100) : ([1 + (next() % 50), 50 + (next() % 50)] as [number, number])))
        : undefined;
      const rule: RouteRule = {
        outbound: `o${i}`,
        ...(n === 0 ? {} : { cidrs: mine.map(([a, l]) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${l}`) }),
        ...(protocol === undefined ? {} : { protocol }),
        ...(ports === undefined ? {} : { ports }),
      };
      rules.push(rule);
      cidrs.push(n === 0 ? [[0, 0]] : mine);
    }
    const router = new Router({ rules, defaultOutbound: 'default' });
    let mismatches = 0;
    for (let k = 0; k < 20_000; k++) {
      let dst: number;
      if (k % 2 === 0) dst = next();
      else {
        const c = cidrs[next() % cidrs.length];
        const [a, l] = c[next() % c.length];
        dst = (a | (next() & ~mask(l))) >>> 0;
      }
      const proto = [TCP, UDP, ICMP, GRE][next() % 4];
      const port = 1 + (next() % 110);
      const want = naive(rules, cidrs, 'default', dst, proto, port);
      if (router.route(dst, proto, port) !== want) mismatches++;
      if (k % 10 === 0) expect(router.why(dst, proto, port).outbound).toBe(want);
    }
    expect(mismatches).toBe(0);
  });

  it('routes fast with a 10,000-CIDR split file (measured, printed)', () => {
    const next = rng(7);
    const split: string[] = [];
    const seen = new Set<string>();
    while (split.length < 10_000) {
      const len = 8 + (next() % 17);
      const a = (next() & mask(len)) >>> 0;
      const s = `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/${len}`;
      if (!seen.has(s)) {
        seen.add(s);
        split.push(s);
      }
    }
    const t0 = performance.now();
    const router = new Router({
      rules: [
        { cidrs: split, outbound: 'proxy' },
        { cidrs: ['10.0.0.0/8'], protocol: 'tcp', ports: [22], outbound: 'block' },
        { protocol: 'udp', ports: [53], outbound: 'dns' },
      ],
      defaultOutbound: 'direct',
    });
    const buildMs = performance.now() - t0;
    const qs = new Uint32Array(1_000_000);
    for (let i = 0; i < qs.length; i++) qs[i] = next();
    let hits = 0;
    let best = 0;
    for (let round = 0; round < 3; round++) {
      const s = performance.now();
      for (let i = 0; i < qs.length; i++) if (router.route(qs[i], i & 1 ? TCP : UDP, 443) === 'proxy') hits++;
      best = Math.max(best, qs.length / ((performance.now() - s) / 1000));
    }
    console.log(`Router: 10,000-CIDR rule set built in ${buildMs.toFixed(1)} ms; ${(best / 1e6).toFixed(1)} M route() calls/s (${hits} proxied)`);
    expect(best).toBeGreaterThan(500_000);
  });
});
