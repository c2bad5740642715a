/**
 * The question of a DNS query read straight from the wire, in canonical form, for the answers
 * tunroute gives at once (fake-IP): one string built per query and no other allocation, where
 * DnsMessage.parse builds the name twice, character by character, plus its record list.
 *
 * The fast reader accepts only what is unambiguous — a standard query (QR 0, opcode 0) with one
 * question whose name is plain labels (no compression pointer, which a query's first name
 * never needs) of letters, digits, `-` and `_` — and writes the name in the canonical form of
 * net/domain.ts: lower case, no trailing dot, labels of 1..63 characters not starting or ending
 * with `-`, at most 253 characters. Anything else (escapes, IDN bytes, the root, pointers, a
 * label edge with `-`, a second question, a response) is `false`: the caller takes the general
 * path (DnsMessage.parse + canonicalDomain), which decides. So the fast reader never accepts
 * a name the general path would refuse or spell differently (a unit test holds them together).
 */
import { DNS_HEADER_LEN } from './message.js';

const MAX_NAME_TEXT = 253;
const MAX_LABEL = 63;

/** What `readQueryQuestion` found; one instance is reused by its owner. */
export class QueryQuestion {
  /** Canonical name (`www.example.com`). */
  name = '';
  qtype = 0;
  qclass = 0;
  /** Offset just after the question (where a response's answer section starts). */
  end = 0;
}

// The name is assembled here, then read out as one latin1 string.
const text = Buffer.allocUnsafe(MAX_NAME_TEXT);

/**
 * Read the one question of the query in `b` into `out`; false when `b` is not a plain standard
 * query (see above: the caller then takes the general path).
 */
export function readQueryQuestion(b: Uint8Array, out: QueryQuestion): boolean {
  const len = b.length;
  if (len < DNS_HEADER_LEN + 5) return false;
  // QR 0 and opcode 0 (a standard query); exactly one question.
  if ((b[2] & 0xf8) !== 0 || b[4] !== 0 || b[5] !== 1) return false;
  let i = DNS_HEADER_LEN;
  let n = 0;
  for (;;) {
    const l = b[i];
    if (l === 0) break;
    if (l > MAX_LABEL || i + 1 + l >= len) return false;
    if (n !== 0) text[n++] = 0x2e;
    if (n + l > MAX_NAME_TEXT) return false;
    const last = i + l;
    for (let k = i + 1; k <= last; k++) {
      let c = b[k];
      if (c >= 0x41 && c <= 0x5a) c += 32;
      else if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f)) return false;
      text[n++] = c;
    }
    if (b[i + 1] === 0x2d || b[last] === 0x2d) return false;
    i = last + 1;
  }
  // The root (an empty name) is no name of ours; the type and class must be there.
  if (n === 0 || i + 5 > len) return false;
  out.name = text.toString('latin1', 0, n);
  out.qtype = (b[i + 1] << 8) | b[i + 2];
  out.qclass = (b[i + 3] << 8) | b[i + 4];
  out.end = i + 5;
  return true;
}
