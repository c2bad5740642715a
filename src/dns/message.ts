/**
 * DNS messages (RFC 1035 §4.1): a read-only view that finds what the hijack resolver needs —
 * the header, the question, the TC bit, where each record's TTL sits, the EDNS payload size —
 * and small emitters for queries, answers and the responses we make up (truncated, errors).
 *
 *     Header                               1  1  1  1  1  1
 *       0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
 *     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *     |                      ID                       |
 *     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *     |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
 *     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *     |          QDCOUNT / ANCOUNT / NSCOUNT / ARCOUNT |   (four 16-bit counts)
 *     +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 *     Question:  QNAME (labels, maybe compressed) | QTYPE | QCLASS
 *     Record:    NAME | TYPE | CLASS | TTL (32) | RDLENGTH | RDATA
 *
 * Names are sequences of length-prefixed labels ending in a zero byte, or in a 2-byte pointer
 * (top bits 11) to an earlier name (§4.1.4). Untrusted input is walked with every bound
 * checked: labels ≤ 63 bytes, names ≤ 255, pointers only backwards (so no loops), the
 * reserved label types (01, 10) refused. Malformed input gives `undefined`; nothing throws.
 *
 * The view parses the header and the question strictly (a message without a sane question is
 * useless to us) and the records leniently: `records` is `undefined` when they do not parse
 * (a truncated UDP answer may stop mid-record), so nothing is cached from them.
 */

export const DNS_HEADER_LEN = 12;
/** The classic UDP payload limit without EDNS (RFC 1035 §4.2.1). */
export const DNS_UDP_DEFAULT_SIZE = 512;

export const DNS_TYPE_A = 1;
export const DNS_TYPE_NS = 2;
export const DNS_TYPE_CNAME = 5;
export const DNS_TYPE_SOA = 6;
export const DNS_TYPE_PTR = 12;
export const DNS_TYPE_MX = 15;
export const DNS_TYPE_TXT = 16;
export const DNS_TYPE_AAAA = 28;
/** EDNS(0) pseudo-record (RFC 6891): its class is the sender's UDP payload size, its TTL flags. */
export const DNS_TYPE_OPT = 41;
/** RFC 9460: service binding records, whose ipv4hint/ipv6hint carry addresses. */
export const DNS_TYPE_SVCB = 64;
export const DNS_TYPE_HTTPS = 65;
export const DNS_CLASS_IN = 1;

export const DNS_RCODE_NOERROR = 0;
export const DNS_RCODE_FORMERR = 1;
export const DNS_RCODE_SERVFAIL = 2;
export const DNS_RCODE_NXDOMAIN = 3;
export const DNS_RCODE_REFUSED = 5;

const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;

const MAX_NAME = 255;
const MAX_LABEL = 63;

function rd16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1];
}
function rd32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}
function wr16(b: Uint8Array, i: number, v: number): void {
  b[i] = (v >>> 8) & 0xff;
  b[i + 1] = v & 0xff;
}
function wr32(b: Uint8Array, i: number, v: number): void {
  b[i] = (v >>> 24) & 0xff;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

export interface DnsQuestion {
  /** As written, in presentation form ("Example.COM."; the root is "."). */
  readonly name: string;
  /** The name with ASCII letters lower-cased: DNS names compare case-insensitively (RFC 4343). */
  readonly key: string;
  readonly qtype: number;
  readonly qclass: number;
}

export type DnsSection = 'answer' | 'authority' | 'additional';

export interface DnsRecordInfo {
  readonly section: DnsSection;
  readonly type: number;
  readonly rclass: number;
  /** As sent; RFC 2181 §8: a value with the top bit set means 0 (see `effectiveTtl`). */
  readonly ttl: number;
  /** Byte offset of the TTL field (to age it in place). */
  readonly ttlOffset: number;
  readonly rdataOffset: number;
  readonly rdataLength: number;
}

/** RFC 2181 §8: TTLs are 31-bit; a value with the top bit set is treated as zero. */
export function effectiveTtl(ttl: number): number {
  return ttl > 0x7fffffff ? 0 : ttl;
}

/** Presentation form of one label byte: letters, digits, '-', '_' as they are; the rest \DDD. */
function labelChar(c: number): string {
  if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f || c === 0x2a) {
    return String.fromCharCode(c);
  }
  return `\\${c.toString().padStart(3, '0')}`;
}

interface NameRead {
  name: string;
  key: string;
  /** Offset just after the name where it started (after the pointer, if one was followed). */
  end: number;
  /** Wire length of the uncompressed name (for checks). */
  wireLen: number;
}

/** Read a possibly compressed name at `off`; undefined when malformed. */
export function readDnsName(b: Uint8Array, off: number): NameRead | undefined {
  let name = '';
  let key = '';
  let i = off;
  let end = -1;
  let wireLen = 1; // the final zero byte
  let jumps = 0;
  for (;;) {
    if (i >= b.length) return undefined;
    const len = b[i];
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (i + 1 >= b.length) return undefined;
      const target = ((len & 0x3f) << 8) | b[i + 1];
      // Only backwards, and never to itself: guarantees termination.
      if (target >= i || ++jumps > 127) return undefined;
      if (end < 0) end = i + 2;
      i = target;
      continue;
    }
    if (kind !== 0) return undefined; // 01 and 10: extended / reserved label types
    if (len === 0) {
      if (end < 0) end = i + 1;
      break;
    }
    if (len > MAX_LABEL || i + 1 + len > b.length) return undefined;
    wireLen += 1 + len;
    if (wireLen > MAX_NAME) return undefined;
    for (let k = i + 1; k <= i + len; k++) {
      const c = b[k];
      name += labelChar(c);
      key += labelChar(c >= 0x41 && c <= 0x5a ? c + 32 : c);
    }
    name += '.';
    key += '.';
    i += 1 + len;
  }
  if (name === '') {
    name = '.';
    key = '.';
  }
  return { name, key, end, wireLen };
}

/** Offset after the name at `off` without decoding it; -1 when malformed. */
function skipName(b: Uint8Array, off: number): number {
  let i = off;
  for (;;) {
    if (i >= b.length) return -1;
    const len = b[i];
    if ((len & 0xc0) === 0xc0) return i + 2 <= b.length ? i + 2 : -1;
    if ((len & 0xc0) !== 0 || len > MAX_LABEL) return -1;
    if (len === 0) return i + 1;
    i += 1 + len;
  }
}

export class DnsMessage {
  private constructor(
    readonly bytes: Uint8Array,
    readonly question: DnsQuestion | undefined,
    /** Offset where the question section ends (the answer section begins). */
    readonly questionEnd: number,
    /** Every record, in order, or undefined when the record sections do not parse. */
    readonly records: readonly DnsRecordInfo[] | undefined,
  ) {}

  /**
   * View `bytes` as a DNS message. The header and the question section must be intact (at most
   * one question: RFC 9619 — no server answers more); the records are parsed when they can be.
   * Never throws.
   */
  static parse(bytes: Uint8Array): DnsMessage | undefined {
    if (bytes.length < DNS_HEADER_LEN) return undefined;
    const qd = rd16(bytes, 4);
    if (qd > 1) return undefined;
    let off = DNS_HEADER_LEN;
    let question: DnsQuestion | undefined;
    if (qd === 1) {
      const n = readDnsName(bytes, off);
      if (n === undefined || n.end + 4 > bytes.length) return undefined;
      question = { name: n.name, key: n.key, qtype: rd16(bytes, n.end), qclass: rd16(bytes, n.end + 2) };
      off = n.end + 4;
    }
    return new DnsMessage(bytes, question, off, DnsMessage.readRecords(bytes, off));
  }

  private static readRecords(b: Uint8Array, start: number): DnsRecordInfo[] | undefined {
    const counts: Array<[DnsSection, number]> = [
      ['answer', rd16(b, 6)],
      ['authority', rd16(b, 8)],
      ['additional', rd16(b, 10)],
    ];
    const out: DnsRecordInfo[] = [];
    let off = start;
    for (const [section, count] of counts) {
      for (let k = 0; k < count; k++) {
        off = skipName(b, off);
        if (off < 0 || off + 10 > b.length) return undefined;
        const rdataLength = rd16(b, off + 8);
        if (off + 10 + rdataLength > b.length) return undefined;
        out.push({ section, type: rd16(b, off), rclass: rd16(b, off + 2), ttl: rd32(b, off + 4), ttlOffset: off + 4, rdataOffset: off + 10, rdataLength });
        off += 10 + rdataLength;
      }
    }
    return out;
  }

  get id(): number { return rd16(this.bytes, 0); }
  get flags(): number { return rd16(this.bytes, 2); }
  get isResponse(): boolean { return (this.flags & FLAG_QR) !== 0; }
  get opcode(): number { return (this.flags >>> 11) & 0x0f; }
  /** Truncated: the answer did not fit (RFC 1035 §4.1.1); ask again over TCP (RFC 7766). */
  get truncated(): boolean { return (this.flags & FLAG_TC) !== 0; }
  get recursionDesired(): boolean { return (this.flags & FLAG_RD) !== 0; }
  get rcode(): number { return this.flags & 0x0f; }
  get qdcount(): number { return rd16(this.bytes, 4); }
  get ancount(): number { return rd16(this.bytes, 6); }
  get nscount(): number { return rd16(this.bytes, 8); }
  get arcount(): number { return rd16(this.bytes, 10); }

  /** The EDNS(0) OPT record, if any (RFC 6891 §6.1.1: in the additional section). */
  get opt(): DnsRecordInfo | undefined {
    return this.records?.find((r) => r.type === DNS_TYPE_OPT && r.section === 'additional');
  }

  /**
   * The largest UDP response the sender of this query accepts: its EDNS payload size (never
   * below 512, RFC 6891 §6.2.5), or 512 without EDNS.
   */
  get udpPayloadSize(): number {
    const o = this.opt;
    return o === undefined ? DNS_UDP_DEFAULT_SIZE : Math.max(DNS_UDP_DEFAULT_SIZE, o.rclass);
  }

  /**
   * How long the answer may be cached, in seconds: the smallest TTL of the answer records, or
   * for an answer without any (NXDOMAIN, NODATA), of the authority records (the SOA: RFC 2308
   * §5 caps the negative TTL by the SOA's own TTL). OPT is not a record (its "TTL" holds flags).
   * `undefined` when there is nothing to go by or the records did not parse.
   */
  minTtl(): number | undefined {
    const rs = this.records;
    if (rs === undefined) return undefined;
    let min: number | undefined;
    const pick = (section: DnsSection): void => {
      for (const r of rs) {
        if (r.section !== section || r.type === DNS_TYPE_OPT) continue;
        const t = effectiveTtl(r.ttl);
        if (min === undefined || t < min) min = t;
      }
    };
    pick('answer');
    if (min === undefined) pick('authority');
    return min;
  }

  /** True when `other` asks the same question (name compared case-insensitively). */
  sameQuestion(other: DnsMessage): boolean {
    const a = this.question;
    const b = other.question;
    if (a === undefined || b === undefined) return a === b;
    return a.key === b.key && a.qtype === b.qtype && a.qclass === b.qclass;
  }
}

/** Set the ID in place. */
export function setDnsId(bytes: Uint8Array, id: number): void {
  wr16(bytes, 0, id);
}

/** A copy of `bytes` with another ID. */
export function withDnsId(bytes: Uint8Array, id: number): Uint8Array {
  const c = new Uint8Array(bytes);
  wr16(c, 0, id);
  return c;
}

/**
 * Lower every record TTL of a copy of `msg` by `ageSec` (floored at 0): what a cache serves
 * after holding an answer for a while (RFC 1035 §6.1.2 — the TTL counts down). OPT untouched.
 */
export function agedCopy(msg: DnsMessage, ageSec: number): Uint8Array {
  const c = new Uint8Array(msg.bytes);
  if (ageSec <= 0 || msg.records === undefined) return c;
  for (const r of msg.records) {
    if (r.type === DNS_TYPE_OPT) continue;
    wr32(c, r.ttlOffset, Math.max(0, effectiveTtl(r.ttl) - ageSec));
  }
  return c;
}

/**
 * The response that tells a UDP client "too big, ask over TCP" (RFC 2181 §9, RFC 7766): the
 * answer's header with TC set and no records, the query's question. `answer` supplies the
 * flags and RCODE; without it (no answer at all) a plain TC response is made.
 */
export function truncatedResponse(query: DnsMessage, answer?: DnsMessage): Uint8Array {
  const q = query.bytes.subarray(DNS_HEADER_LEN, query.questionEnd);
  const out = new Uint8Array(DNS_HEADER_LEN + q.length);
  wr16(out, 0, query.id);
  const flags = answer !== undefined ? answer.flags : FLAG_QR | FLAG_RA | (query.flags & FLAG_RD) | (query.opcode << 11);
  wr16(out, 2, flags | FLAG_QR | FLAG_TC);
  wr16(out, 4, query.question === undefined ? 0 : 1);
  out.set(q, DNS_HEADER_LEN);
  return out;
}

/** An error response to `query` with `rcode` (SERVFAIL, REFUSED…): header and question only. */
export function errorResponse(query: DnsMessage, rcode: number): Uint8Array {
  const q = query.bytes.subarray(DNS_HEADER_LEN, query.questionEnd);
  const out = new Uint8Array(DNS_HEADER_LEN + q.length);
  wr16(out, 0, query.id);
  wr16(out, 2, FLAG_QR | FLAG_RA | (query.flags & FLAG_RD) | (query.opcode << 11) | (rcode & 0x0f));
  wr16(out, 4, query.question === undefined ? 0 : 1);
  out.set(q, DNS_HEADER_LEN);
  return out;
}

/**
 * A NOERROR answer to `query` (which must have a question) carrying `addresses` as A records
 * with `ttl`, or none (NODATA: the name exists, not this type). The question is copied as
 * asked (the app's spelling and case, RFC 4343), each record names it by a pointer to it
 * (RFC 1035 §4.1.4), and a query's EDNS OPT is not echoed (no options are answered). Built in
 * one allocation: the fake-IP resolver answers every lookup of a tunneled name with this.
 */
export function addressAnswer(query: DnsMessage, addresses: readonly number[], ttl: number): Uint8Array {
  const out = new Uint8Array(query.questionEnd + addresses.length * 16);
  writeAddressAnswer(query.bytes, query.questionEnd, addresses, ttl, out);
  return out;
}

/**
 * `addressAnswer` from the raw bytes of a query whose question ends at `questionEnd`, written
 * at `out[0]` (room for `questionEnd + 16 × addresses` bytes: at most 287 with one address);
 * returns its length. For the answers given at once with no allocation (fake-IP).
 */
export function writeAddressAnswer(query: Uint8Array, questionEnd: number, addresses: readonly number[], ttl: number, out: Uint8Array): number {
  const flags = rd16(query, 2);
  wr16(out, 0, rd16(query, 0));
  wr16(out, 2, FLAG_QR | FLAG_RA | (flags & FLAG_RD) | (flags & 0x7800) | DNS_RCODE_NOERROR);
  wr16(out, 4, 1);
  wr16(out, 6, addresses.length);
  wr16(out, 8, 0);
  wr16(out, 10, 0);
  // The question as asked; a byte loop: a subarray would be an allocation per answer.
  for (let k = DNS_HEADER_LEN; k < questionEnd; k++) out[k] = query[k];
  let off = questionEnd;
  for (const a of addresses) {
    wr16(out, off, 0xc000 | DNS_HEADER_LEN); // the question's name
    wr16(out, off + 2, DNS_TYPE_A);
    wr16(out, off + 4, DNS_CLASS_IN);
    wr32(out, off + 6, ttl);
    wr16(out, off + 10, 4);
    wr32(out, off + 12, a);
    off += 16;
  }
  return off;
}

// ---------------------------------------------------------------------------------------------
// Emitting (tests, probes, fake upstreams). Names are written without compression.

export interface DnsRecordRepr {
  name: string;
  type: number;
  /** Default IN. For OPT: the UDP payload size. */
  rclass?: number;
  ttl: number;
  data: Uint8Array;
}

export interface DnsMessageRepr {
  id: number;
  /** The whole flags word (QR, opcode, AA, TC, RD, RA, RCODE). */
  flags: number;
  question?: { name: string; qtype: number; qclass?: number };
  answers?: DnsRecordRepr[];
  authority?: DnsRecordRepr[];
  additional?: DnsRecordRepr[];
}

/** Wire form of a presentation name ("a.b." or "a.b"; "." is the root); undefined if invalid. */
export function encodeDnsName(name: string): Uint8Array | undefined {
  if (name === '.' || name === '') return Uint8Array.of(0);
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  const out: number[] = [];
  for (const l of labels) {
    const bytes = Buffer.from(l, 'latin1');
    if (bytes.length === 0 || bytes.length > MAX_LABEL) return undefined;
    out.push(bytes.length, ...bytes);
  }
  out.push(0);
  return out.length > MAX_NAME ? undefined : Uint8Array.from(out);
}

/** Build a message; throws RangeError on a name that cannot be encoded (caller's input). */
export function emitDnsMessage(m: DnsMessageRepr): Uint8Array {
  const parts: Uint8Array[] = [];
  const header = new Uint8Array(DNS_HEADER_LEN);
  wr16(header, 0, m.id);
  wr16(header, 2, m.flags);
  wr16(header, 4, m.question === undefined ? 0 : 1);
  wr16(header, 6, m.answers?.length ?? 0);
  wr16(header, 8, m.authority?.length ?? 0);
  wr16(header, 10, m.additional?.length ?? 0);
  parts.push(header);
  const name = (n: string): Uint8Array => {
    const e = encodeDnsName(n);
    if (e === undefined) throw new RangeError(`not an encodable DNS name: ${n}`);
    return e;
  };
  if (m.question !== undefined) {
    parts.push(name(m.question.name));
    const t = new Uint8Array(4);
    wr16(t, 0, m.question.qtype);
    wr16(t, 2, m.question.qclass ?? DNS_CLASS_IN);
    parts.push(t);
  }
  for (const r of [...(m.answers ?? []), ...(m.authority ?? []), ...(m.additional ?? [])]) {
    parts.push(name(r.name));
    const f = new Uint8Array(10);
    wr16(f, 0, r.type);
    wr16(f, 2, r.rclass ?? DNS_CLASS_IN);
    wr32(f, 4, r.ttl);
    wr16(f, 8, r.data.length);
    parts.push(f, r.data);
  }
  return Uint8Array.from(Buffer.concat(parts));
}

/** A recursive query for `name`/`qtype`; with `ednsSize`, an OPT record advertising it. */
export function buildDnsQuery(name: string, qtype: number, id: number, ednsSize?: number): Uint8Array {
  return emitDnsMessage({
    id,
    flags: FLAG_RD,
    question: { name, qtype },
    ...(ednsSize === undefined ? {} : { additional: [{ name: '.', type: DNS_TYPE_OPT, rclass: ednsSize, ttl: 0, data: new Uint8Array(0) }] }),
  });
}

/** Flags of a plain recursive answer (QR, RD, RA) with `rcode`. */
export function answerFlags(rcode = DNS_RCODE_NOERROR, truncated = false): number {
  return FLAG_QR | FLAG_RD | FLAG_RA | (truncated ? FLAG_TC : 0) | (rcode & 0x0f);
}
