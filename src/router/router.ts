/**
 * Rules → outbound name. Pure: no I/O, no clock; built once from the config, then asked once
 * per new flow (or per packet, it is cheap enough: no allocation in route()).
 *
 * A rule names an outbound and narrows what it applies to:
 *   { cidrs?: ['10.0.0.0/8', …], protocol?: 'tcp'|'udp'|'icmp', ports?: [22, [8000, 8080]], outbound: 'office' }
 * No `cidrs` means every address (0.0.0.0/0). `ports` are destination ports and imply TCP or
 * UDP (an ICMP packet never matches a rule with ports).
 *
 * Which rule wins, for a packet to D with protocol P and port N:
 *   1. the rule must contain D in one of its CIDRs and match P and N;
 *   2. among those, the one whose containing CIDR is the longest prefix (the most specific);
 *   3. among rules with the same prefix, the one written first;
 *   4. if none matches, the default outbound.
 * So `10.1.0.0/16 tcp 22 → block` overrides `10.0.0.0/8 → office` for SSH only, wherever the
 * two appear in the file, and UDP to 10.1.2.3 still goes to the office.
 *
 * Rules by domain: `{ domains: ['corp.example', '*.lab.example', '=www.example'], outbound: 'office' }`
 * (forms: net/domain-set.ts). They apply to flows that carry a name — flows to a fake-IP
 * address, whose name the fake-IP table knows — and never to an address. For such a flow:
 *   1. the rule whose pattern is the most specific for the name (then exact before suffix,
 *      then the first written) and whose protocol and ports match;
 *   2. if no domain rule matches, the flow is routed by its (fake) address as any other, so only
 *      rules that cover the fake range — in practice those without `cidrs` — apply, then the
 *      default outbound.
 * A rule names either CIDRs or domains, not both: "this name or that address" would make the
 * most-specific order ambiguous.
 *
 * Under the hood: one CidrTrie over every distinct CIDR of every rule; each trie value lists
 * the rules for that prefix (in file order) and links to the next shorter prefix that contains
 * it, so route() is one trie lookup plus a walk up that chain until a rule's protocol and
 * ports match.
 */
import { TunrouteError, shown } from '../errors.js';
import { IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP } from '../wire/ipv4.js';
import { cidrToString, normalizeCidr, parseCidrOrAddress, u32ToIp, type Cidr } from '../net/ipv4.js';
import { CidrTrie } from '../net/cidr-trie.js';
import { DomainSet, domainPatternToString, parseDomainPattern } from '../net/domain-set.js';

export type RuleProtocol = 'tcp' | 'udp' | 'icmp';

export const RULE_PROTOCOLS: Readonly<Record<RuleProtocol, number>> = {
  tcp: IP_PROTO_TCP,
  udp: IP_PROTO_UDP,
  icmp: IP_PROTO_ICMP,
};

/** A destination port or an inclusive range [lo, hi]. */
export type PortSpec = number | readonly [number, number];

export interface RouteRule {
  /** CIDRs as `a.b.c.d/n` (a bare address means /32) or already parsed; absent = every address. */
  readonly cidrs?: ReadonlyArray<string | Cidr>;
  /** Domain patterns (net/domain-set.ts); a rule with domains has no cidrs. */
  readonly domains?: readonly string[];
  readonly protocol?: RuleProtocol;
  readonly ports?: readonly PortSpec[];
  readonly outbound: string;
}

export interface RouterOptions {
  readonly rules: readonly RouteRule[];
  readonly defaultOutbound: string;
  /** How error messages name the rule list, e.g. 'tunroute.yaml: rules' (default 'rules'). */
  readonly source?: string;
}

/** The answer of why(): which rule decided, and why, in words. */
export interface RouteDecision {
  readonly outbound: string;
  /** Index into the rules; -1 when the default outbound applied. */
  readonly ruleIndex: number;
  /** The CIDR of the rule that matched (as written, normalised), when a CIDR rule matched. */
  readonly cidr?: string;
  /** The domain pattern that matched (canonical text form), when a domain rule matched. */
  readonly domain?: string;
  /** More specific (or earlier) rules that contain the address but not this protocol/port. */
  readonly skipped: ReadonlyArray<{ readonly ruleIndex: number; readonly cidr: string; readonly why: string }>;
  /** One or two sentences for `tunroute why`. */
  readonly reason: string;
}

interface CompiledRule {
  readonly index: number;
  readonly outbound: string;
  /** IP protocol number, or -1 for any. */
  readonly proto: number;
  /** Sorted, merged [lo, hi] pairs; null for any port. */
  readonly ports: Int32Array | null;
}

/** One distinct prefix in the trie: its rules in file order, and the next shorter containing prefix. */
interface PrefixRules {
  readonly addr: number;
  readonly prefix: number;
  readonly rules: CompiledRule[];
  shorter: PrefixRules | null;
}

export class Router {
  readonly defaultOutbound: string;
  readonly rules: readonly RouteRule[];
  private readonly trie = new CidrTrie<PrefixRules>();
  private readonly compiled: CompiledRule[] = [];
  /** Domain patterns → their rules, in file order (one pattern may head several rules). */
  private readonly domainRules = new DomainSet<CompiledRule[]>();
  private readonly domainRuleLists = new Map<string, CompiledRule[]>();

  constructor(opts: RouterOptions) {
    const source = opts.source ?? 'rules';
    if (typeof opts.defaultOutbound !== 'string' || opts.defaultOutbound === '') {
      throw new TunrouteError('TR_BAD_CONFIG', `${source}: the default outbound is empty; name one of the configured outbounds.`);
    }
    this.defaultOutbound = opts.defaultOutbound;
    this.rules = opts.rules;

    opts.rules.forEach((rule, index) => {
      const where = `${source}[${index}]`;
      const compiled = compileRule(rule, index, where);
      this.compiled.push(compiled);
      if (rule.domains !== undefined) {
        this.addDomainRule(rule, compiled, where);
        return;
      }
      const cidrs = rule.cidrs === undefined ? [{ addr: 0, prefix: 0 }] : rule.cidrs.map((c, j) => toCidr(c, `${where}.cidrs[${j}]`));
      if (cidrs.length === 0) {
        throw new TunrouteError('TR_BAD_CONFIG', `${where}.cidrs is empty; list at least one CIDR, or leave cidrs out to match every address.`);
      }
      for (const c of cidrs) {
        let entry = this.trie.get(c.addr, c.prefix);
        if (entry === undefined) {
          entry = { addr: c.addr, prefix: c.prefix, rules: [], shorter: null };
          this.trie.insert(c.addr, c.prefix, entry);
        }
        // The same CIDR twice in one rule adds the rule once.
        if (entry.rules[entry.rules.length - 1] !== compiled) entry.rules.push(compiled);
      }
    });

    // Link each prefix to the next shorter prefix that contains it.
    const chain: PrefixRules[] = [];
    for (const { value } of this.trie.entries()) {
      const n = this.trie.matchAll(value.addr, chain);
      // chain[0] is the longest prefix containing value.addr; find value itself, then the next.
      for (let i = 0; i < n; i++) {
        if (chain[i] === value) {
          value.shorter = i + 1 < n ? chain[i + 1] : null;
          break;
        }
      }
    }
    this.trie.optimize();
  }

  /** The outbound for a packet to `dstIp` (uint32) with IP protocol number `protocol` and destination port `dstPort` (ignored for ICMP). */
  route(dstIp: number, protocol: number, dstPort: number): string {
    let entry: PrefixRules | null = this.trie.lookup(dstIp) ?? null;
    while (entry !== null) {
      const rules = entry.rules;
      for (let i = 0; i < rules.length; i++) {
        if (ruleMatches(rules[i], protocol, dstPort)) return rules[i].outbound;
      }
      entry = entry.shorter;
    }
    return this.defaultOutbound;
  }

  private addDomainRule(rule: RouteRule, compiled: CompiledRule, where: string): void {
    const domains = rule.domains ?? [];
    if (rule.cidrs !== undefined) {
      throw new TunrouteError('TR_BAD_CONFIG', `${where} names both cidrs and domains; split it into two rules, one for the addresses and one for the names.`);
    }
    if (domains.length === 0) {
      throw new TunrouteError('TR_BAD_CONFIG', `${where}.domains is empty; list at least one name, or leave domains out.`);
    }
    domains.forEach((text, j) => {
      const p = parseDomainPattern(text);
      if (!p.ok) {
        throw new TunrouteError(
          'TR_BAD_CONFIG',
          `${where}.domains[${j}] is not a domain pattern (${p.problem}); write a name such as corp.example, *.corp.example or =www.corp.example.`,
        );
      }
      const key = domainPatternToString(p.pattern);
      let list = this.domainRuleLists.get(key);
      if (list === undefined) {
        list = [];
        this.domainRuleLists.set(key, list);
        this.domainRules.add(p.pattern, list);
      }
      if (list[list.length - 1] !== compiled) list.push(compiled);
    });
  }

  /** Whether any rule is about domains (then flows by name need routeName()). */
  get hasDomainRules(): boolean {
    return this.domainRules.size > 0;
  }

  /**
   * The outbound for a flow to canonical name `name`, by the domain rules; undefined when none
   * matches (the caller then routes the flow's address with route()).
   */
  routeName(name: string, protocol: number, dstPort: number): string | undefined {
    if (this.domainRules.size === 0) return undefined;
    for (const m of this.domainRules.matches(name)) {
      for (const rule of m.value) if (ruleMatches(rule, protocol, dstPort)) return rule.outbound;
    }
    return undefined;
  }

  /** Like routeName() then route(dstIp, …), with the deciding rule and a reason in words. */
  whyName(name: string, dstIp: number, protocol: number, dstPort: number): RouteDecision {
    const what = protocol === IP_PROTO_TCP || protocol === IP_PROTO_UDP ? `${protoName(protocol)} to ${name}:${dstPort}` : `${protoName(protocol)} to ${name}`;
    const skipped: Array<{ ruleIndex: number; cidr: string; why: string }> = [];
    for (const m of this.domainRules.matches(name)) {
      const pattern = domainPatternToString(m.pattern);
      for (const rule of m.value) {
        if (ruleMatches(rule, protocol, dstPort)) {
          const moreSpecific = skipped.length === 0 ? '' : ` ${describeSkipped(skipped)}`;
          return {
            outbound: rule.outbound,
            ruleIndex: rule.index,
            domain: pattern,
            skipped,
            reason: `${what} goes to '${rule.outbound}' by rule ${rule.index} (${this.describeRule(rule.index)}): ${pattern} is the most specific matching name.${moreSpecific}`,
          };
        }
        skipped.push({ ruleIndex: rule.index, cidr: pattern, why: mismatch(rule, protocol) });
      }
    }
    const byAddress = this.why(dstIp, protocol, dstPort);
    const extra = skipped.length === 0 ? 'no domain rule matches' : `no domain rule matches (${describeSkipped(skipped)})`;
    return { ...byAddress, skipped: [...skipped, ...byAddress.skipped], reason: `${what}: ${extra}, so its address decides: ${byAddress.reason}` };
  }

  /** Like route(), with the deciding rule and a reason in words (for `tunroute why`). */
  why(dstIp: number, protocol: number, dstPort: number): RouteDecision {
    const what = describePacket(dstIp, protocol, dstPort);
    const skipped: Array<{ ruleIndex: number; cidr: string; why: string }> = [];
    let entry: PrefixRules | null = this.trie.lookup(dstIp) ?? null;
    while (entry !== null) {
      const cidr = cidrToString({ addr: entry.addr, prefix: entry.prefix });
      for (const rule of entry.rules) {
        if (ruleMatches(rule, protocol, dstPort)) {
          const moreSpecific = skipped.length === 0 ? '' : ` ${describeSkipped(skipped)}`;
          return {
            outbound: rule.outbound,
            ruleIndex: rule.index,
            cidr,
            skipped,
            reason:
              `${what} goes to '${rule.outbound}' by rule ${rule.index} (${this.describeRule(rule.index)}): ` +
              `${cidr} is the most specific matching prefix.${moreSpecific}`,
          };
        }
        skipped.push({ ruleIndex: rule.index, cidr, why: mismatch(rule, protocol) });
      }
      entry = entry.shorter;
    }
    const extra = skipped.length === 0 ? '' : ` ${describeSkipped(skipped)}`;
    return {
      outbound: this.defaultOutbound,
      ruleIndex: -1,
      skipped,
      reason: `${what} goes to the default outbound '${this.defaultOutbound}': no rule matches.${extra}`,
    };
  }

  /** A rule in words: "10.0.0.0/8, 10.1.0.0/16 tcp ports 22, 8000-8080 → office". */
  describeRule(index: number): string {
    const rule = this.rules[index];
    const c = this.compiled[index];
    if (rule === undefined || c === undefined) throw new RangeError(`no rule ${index}`);
    const cidrs =
      rule.domains !== undefined
        ? rule.domains.join(', ')
        : rule.cidrs === undefined
          ? 'any address'
          : rule.cidrs.map((x) => (typeof x === 'string' ? x : cidrToString(x))).join(', ');
    const proto = rule.protocol === undefined ? '' : ` ${rule.protocol}`;
    let ports = '';
    if (c.ports !== null) {
      const parts: string[] = [];
      for (let i = 0; i < c.ports.length; i += 2) parts.push(c.ports[i] === c.ports[i + 1] ? `${c.ports[i]}` : `${c.ports[i]}-${c.ports[i + 1]}`);
      ports = ` port${parts.length === 1 && !parts[0].includes('-') ? '' : 's'} ${parts.join(', ')}`;
    }
    return `${cidrs}${proto}${ports} → ${rule.outbound}`;
  }

  /** Every outbound name the rules and the default refer to, so the caller can check they exist. */
  outboundNames(): Set<string> {
    return new Set([this.defaultOutbound, ...this.rules.map((r) => r.outbound)]);
  }
}

function ruleMatches(rule: CompiledRule, protocol: number, port: number): boolean {
  if (rule.proto !== -1 && rule.proto !== protocol) return false;
  const ports = rule.ports;
  if (ports === null) return true;
  if (protocol !== IP_PROTO_TCP && protocol !== IP_PROTO_UDP) return false;
  for (let i = 0; i < ports.length; i += 2) {
    if (port < ports[i]) return false; // sorted: no later range can hold it
    if (port <= ports[i + 1]) return true;
  }
  return false;
}

function mismatch(rule: CompiledRule, protocol: number): string {
  if (rule.proto !== -1 && rule.proto !== protocol) return `it is for ${protoName(rule.proto)} only`;
  if (rule.ports !== null && protocol !== IP_PROTO_TCP && protocol !== IP_PROTO_UDP) return 'it names ports, which only TCP and UDP have';
  return 'the port is not in its list';
}

function describeSkipped(skipped: ReadonlyArray<{ ruleIndex: number; cidr: string; why: string }>): string {
  return `Not rule ${skipped.map((s) => `${s.ruleIndex} (${s.cidr}): ${s.why}`).join('; not rule ')}.`;
}

function protoName(proto: number): string {
  for (const [name, n] of Object.entries(RULE_PROTOCOLS)) if (n === proto) return name;
  return `protocol ${proto}`;
}

function describePacket(dstIp: number, protocol: number, dstPort: number): string {
  const ip = u32ToIp(dstIp >>> 0);
  if (protocol === IP_PROTO_TCP || protocol === IP_PROTO_UDP) return `${protoName(protocol)} to ${ip}:${dstPort}`;
  return `${protoName(protocol)} to ${ip}`;
}

function compileRule(rule: RouteRule, index: number, where: string): CompiledRule {
  if (typeof rule.outbound !== 'string' || rule.outbound === '') {
    throw new TunrouteError('TR_BAD_CONFIG', `${where}.outbound is empty; name the outbound this rule sends traffic to.`);
  }
  let proto = -1;
  if (rule.protocol !== undefined) {
    const n = (RULE_PROTOCOLS as Record<string, number | undefined>)[rule.protocol];
    if (n === undefined) {
      throw new TunrouteError('TR_BAD_CONFIG', `${where}.protocol ${shown(String(rule.protocol))} is not a protocol; use tcp, udp or icmp.`);
    }
    proto = n;
  }
  let ports: Int32Array | null = null;
  if (rule.ports !== undefined) {
    if (proto === IP_PROTO_ICMP) {
      throw new TunrouteError('TR_BAD_CONFIG', `${where} names ports for icmp, which has none; drop the ports or use tcp or udp.`);
    }
    if (rule.ports.length === 0) {
      throw new TunrouteError('TR_BAD_CONFIG', `${where}.ports is empty; list at least one port, or leave ports out to match every port.`);
    }
    const ranges = rule.ports.map((p, j): [number, number] => {
      const [lo, hi] = typeof p === 'number' ? [p, p] : [p[0], p[1]];
      if (!isPort(lo) || !isPort(hi) || lo > hi) {
        throw new TunrouteError(
          'TR_BAD_CONFIG',
          `${where}.ports[${j}] ${JSON.stringify(p)} is not a port or range; use a number 1–65535 or [low, high] with low ≤ high.`,
        );
      }
      return [lo, hi];
    });
    ranges.sort((a, b) => a[0] - b[0]);
    const merged: number[] = [];
    for (const [lo, hi] of ranges) {
      const last = merged.length - 1;
      if (last > 0 && lo <= merged[last] + 1) merged[last] = Math.max(merged[last], hi);
      else merged.push(lo, hi);
    }
    ports = Int32Array.from(merged);
  }
  return { index, outbound: rule.outbound, proto, ports };
}

function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** A rule's CIDR: parsed strictly by net/ipv4.ts; a bare address is a /32; host bits are an error. */
function toCidr(c: string | Cidr, where: string): Cidr {
  let parsed: Cidr | undefined;
  let text: string;
  if (typeof c === 'string') {
    text = c;
    parsed = parseCidrOrAddress(c);
  } else {
    text = JSON.stringify(c);
    const ok = Number.isInteger(c.addr) && c.addr >= 0 && c.addr <= 0xffffffff && Number.isInteger(c.prefix) && c.prefix >= 0 && c.prefix <= 32;
    parsed = ok ? { addr: c.addr >>> 0, prefix: c.prefix } : undefined;
  }
  if (parsed === undefined) {
    throw new TunrouteError('TR_BAD_CIDR', `${where} ${shown(text)} is not an IPv4 CIDR; write it as a.b.c.d/n with n from 0 to 32, such as 10.0.0.0/8.`);
  }
  const net = normalizeCidr(parsed);
  if (net.addr !== parsed.addr) {
    throw new TunrouteError(
      'TR_BAD_CIDR',
      `${where} ${shown(typeof c === 'string' ? c : cidrToString(parsed))} has host bits set; write ${cidrToString(net)} for the network, or ${u32ToIp(parsed.addr)}/32 for one address.`,
    );
  }
  return net;
}
