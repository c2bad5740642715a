/**
 * Domain names as values: one canonical text form, so that a rule, a DNS question and a name in
 * the fake-IP table compare as plain strings.
 *
 * Canonical form: lowercase ASCII, no trailing dot, internationalized labels in punycode
 * (`bücher.example` → `xn--bcher-kva.example`, as the DNS carries them), each label 1..63
 * characters of letters, digits, `-` and `_` (underscores appear in service names such as
 * `_sip._tcp`), not starting or ending with `-`, the whole at most 253 characters. The root
 * (`.`) and the empty name are refused: no rule or fake address is about "every name".
 */
import { domainToASCII } from 'node:url';

/** Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire). */
export const MAX_DOMAIN_LENGTH = 253;
const MAX_LABEL_LENGTH = 63;

/** Why a text is not a domain name, in a few words (for the caller's sentence). */
export type DomainProblem = 'empty' | 'too long' | 'empty label' | 'label too long' | 'bad character' | 'hyphen at a label edge' | 'not convertible to punycode';

export type DomainParse = { ok: true; name: string } | { ok: false; problem: DomainProblem };

/** True for a-z 0-9 - _ (after lowercasing). */
function isLdh(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95;
}

/**
 * The canonical form of `text` (see above), or why it is not a name. A trailing dot is
 * accepted and dropped; uppercase is folded; Unicode labels are converted to punycode.
 */
export function parseDomain(text: string): DomainParse {
  let s = text.endsWith('.') ? text.slice(0, -1) : text;
  if (s.length === 0) return { ok: false, problem: 'empty' };
  s = s.toLowerCase();
  // Only names with a non-ASCII character need the IDNA conversion (it costs a URL parse).
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(s)) {
    const ascii = domainToASCII(s);
    if (ascii === '') return { ok: false, problem: 'not convertible to punycode' };
    s = ascii;
  }
  if (s.length > MAX_DOMAIN_LENGTH) return { ok: false, problem: 'too long' };
  let labelStart = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c === 46) {
      const len = i - labelStart;
      if (len === 0) return { ok: false, problem: 'empty label' };
      if (len > MAX_LABEL_LENGTH) return { ok: false, problem: 'label too long' };
      if (s.charCodeAt(labelStart) === 45 || s.charCodeAt(i - 1) === 45) return { ok: false, problem: 'hyphen at a label edge' };
      labelStart = i + 1;
    } else if (!isLdh(c)) {
      return { ok: false, problem: 'bad character' };
    }
  }
  return { ok: true, name: s };
}

/** The canonical name, or undefined when `text` is not one. */
export function canonicalDomain(text: string): string | undefined {
  const r = parseDomain(text);
  return r.ok ? r.name : undefined;
}

/**
 * The parent of a canonical name (`a.b.c` → `b.c`), or undefined for a single label. A view
 * of the same string: no new characters are built.
 */
export function parentDomain(name: string): string | undefined {
  const dot = name.indexOf('.');
  return dot < 0 ? undefined : name.slice(dot + 1);
}
