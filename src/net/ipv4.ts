/**
 * IPv4 addresses, CIDRs and address ranges as values, and their text forms.
 *
 * An address is a uint32 in network order (10.0.0.1 = 0x0a000001), as the packet views of
 * wire/ read it. Text is parsed strictly: four decimal octets 0..255 without leading zeros
 * ("010" is octal to inet_aton and decimal elsewhere; refuse the doubt), nothing before or
 * after. IPv6 is recognised only so that wg-quick files that list it can be accepted and
 * skipped: tunroute routes IPv4.
 */
import { isIPv6 } from 'node:net';

/** An IPv4 prefix: an address and a prefix length. Host bits may be set until normalized. */
export interface Cidr {
  /** uint32 */
  addr: number;
  /** 0..32 */
  prefix: number;
}

/** Half-open uint32 range [start, end); `end` may be 2^32. */
export type AddrRange = [start: number, end: number];

/**
 * The dotted quad in s[0..end), strictly (see above). Returns the uint32 or undefined.
 */
function parseAddrRange(s: string, end: number): number | undefined {
  let addr = 0;
  let octets = 0;
  let v = 0;
  let digits = 0;
  for (let i = 0; i <= end; i++) {
    const c = i < end ? s.charCodeAt(i) : 46; /* a virtual final dot */
    if (c === 46) {
      if (digits === 0 || octets === 4) return undefined;
      addr = addr * 256 + v;
      octets++;
      v = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && v === 0) return undefined;
      v = v * 10 + (c - 48);
      if (v > 255) return undefined;
      digits++;
    } else {
      return undefined;
    }
  }
  return octets === 4 ? addr : undefined;
}

/**
 * Strict dotted-quad: exactly four decimal octets 0..255, no leading zeros, no whitespace,
 * nothing before or after. Returns the address as uint32, or `undefined`.
 */
export function ipToU32(s: string): number | undefined {
  return parseAddrRange(s, s.length);
}

export function u32ToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** Network mask of a prefix length 0..32 as uint32 (0 → 0, 32 → 0xffffffff). */
export function prefixMask(prefix: number): number {
  return prefix <= 0 ? 0 : prefix >= 32 ? 0xffffffff : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Strict `a.b.c.d/n`: the address as `ipToU32` accepts it, a slash, a decimal prefix 0..32
 * without leading zeros. Host bits are kept as written (see `normalizeCidr`). A bare address
 * without `/n` is refused: whether that means /32 is the caller's call (`parseCidrOrAddress`).
 */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseAddrRange(s, slash);
  if (addr === undefined) return undefined;
  const plen = s.length - slash - 1;
  if (plen < 1 || plen > 2) return undefined;
  let prefix = 0;
  for (let i = slash + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
    prefix = prefix * 10 + (c - 48);
  }
  if (plen === 2 && s.charCodeAt(slash + 1) === 48) return undefined;
  if (prefix > 32) return undefined;
  return { addr, prefix };
}

/** A CIDR, or a bare address meaning /32 (CIDR files, AllowedIPs); host bits kept. */
export function parseCidrOrAddress(s: string): Cidr | undefined {
  if (s.includes('/')) return parseCidr(s);
  const addr = ipToU32(s);
  return addr === undefined ? undefined : { addr, prefix: 32 };
}

/** A CIDR or a bare address (/32), host bits cleared: "10.1.2.3/8" → 10.0.0.0/8. */
export function parseNetwork(s: string): Cidr | undefined {
  const c = parseCidrOrAddress(s);
  return c === undefined ? undefined : normalizeCidr(c);
}

/** The same CIDR with host bits cleared: 10.1.2.3/8 → 10.0.0.0/8. */
export function normalizeCidr(c: Cidr): Cidr {
  return { addr: (c.addr & prefixMask(c.prefix)) >>> 0, prefix: c.prefix };
}

/** Does `addr` fall inside `c`? */
export function cidrContains(c: Cidr, addr: number): boolean {
  const m = prefixMask(c.prefix);
  return ((addr & m) >>> 0) === ((c.addr & m) >>> 0);
}

export function cidrToString(c: Cidr): string {
  return `${u32ToIp(c.addr)}/${c.prefix}`;
}

/** The addresses a CIDR covers, host bits ignored: 10.0.0.0/8 → [0x0a000000, 0x0b000000). */
export function cidrRange(c: Cidr): AddrRange {
  const size = 2 ** (32 - c.prefix);
  const start = Math.floor(c.addr / size) * size; // drop host bits
  return [start, start + size];
}

/** Do two CIDRs share an address? */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const [as, ae] = cidrRange(a);
  const [bs, be] = cidrRange(b);
  return as < be && bs < ae;
}

// ---------------------------------------------------------------------------------------------
// IPv6, recognised to be skipped

/** An IPv6 CIDR (or bare address), checked loosely: node:net's parser and a prefix 0..128. */
export function parseIpv6Cidr(s: string): { addr: string; prefix: number } | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const p = slash < 0 ? '128' : s.slice(slash + 1);
  if (!isIPv6(addr) || !/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 128) return undefined;
  return { addr, prefix: Number(p) };
}

/** IPv4 CIDR or bare address (→ /32), normalised: "10.8.0.1/16" → "10.8.0.0/16". Undefined if not IPv4. */
export function normalizeIpv4Cidr(s: string): string | undefined {
  const c = parseNetwork(s);
  return c === undefined ? undefined : cidrToString(c);
}

/** An allowed IP or interface address: IPv4 or IPv6, with or without a prefix length. */
export function isAnyCidr(s: string): boolean {
  return parseAnyCidr(s) !== undefined;
}

/** An address or CIDR of either family, as wg-quick lists them: IPv4 parsed (host bits kept), IPv6 kept as text. */
export type AnyCidr = { readonly family: 4; readonly cidr: Cidr } | { readonly family: 6; readonly text: string };

/** A CIDR or bare address (IPv4 → /32) of either family, or undefined. */
export function parseAnyCidr(s: string): AnyCidr | undefined {
  const cidr = parseCidrOrAddress(s);
  if (cidr !== undefined) return { family: 4, cidr };
  return parseIpv6Cidr(s) === undefined ? undefined : { family: 6, text: s };
}

export function anyCidrToString(a: AnyCidr): string {
  return a.family === 4 ? cidrToString(a.cidr) : a.text;
}
