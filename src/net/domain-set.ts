/**
 * Domain patterns → values, most specific match first: what rules by domain, routes by domain
 * and split DNS ask of a name.
 *
 * Pattern forms (the text after the form's marker is a name, canonicalised by parseDomain):
 *   corp.example      the name itself and every name below it (dnsmasq's `--server=/corp.example/`,
 *                     systemd-resolved's routing domains, sing-box's domain_suffix)
 *   *.corp.example    only names below it, at any depth (not corp.example itself)
 *   =corp.example     that name only
 *
 * Which pattern wins for a name N:
 *   1. the pattern about the longest name that N is or ends in (the most specific), so
 *      `=www.corp.example` and `www.corp.example` beat `corp.example` for www.corp.example;
 *   2. about the same name: the exact form for N itself, else the one written first;
 *   3. no pattern: undefined (the caller's default).
 *
 * A lookup walks N's suffixes (`a.b.c`, `b.c`, `c`): one Map lookup per label, no allocation
 * beyond the suffix strings' slices.
 */
import { parseDomain, type DomainProblem } from './domain.js';

export type DomainPatternKind = 'suffix' | 'below' | 'exact';

export interface DomainPattern {
  readonly kind: DomainPatternKind;
  /** Canonical name the pattern is about. */
  readonly name: string;
}

export type DomainPatternParse = { ok: true; pattern: DomainPattern } | { ok: false; problem: DomainProblem };

/** Parse one pattern (see the forms above). */
export function parseDomainPattern(text: string): DomainPatternParse {
  let kind: DomainPatternKind = 'suffix';
  let rest = text.trim();
  if (rest.startsWith('=')) {
    kind = 'exact';
    rest = rest.slice(1);
  } else if (rest.startsWith('*.')) {
    kind = 'below';
    rest = rest.slice(2);
  }
  const r = parseDomain(rest);
  return r.ok ? { ok: true, pattern: { kind, name: r.name } } : r;
}

/** The text form of a pattern, as parseDomainPattern reads it. */
export function domainPatternToString(p: DomainPattern): string {
  return p.kind === 'exact' ? `=${p.name}` : p.kind === 'below' ? `*.${p.name}` : p.name;
}

/** One entry: the pattern, its value and its position in the order it was added. */
export interface DomainMatch<T> {
  readonly pattern: DomainPattern;
  readonly value: T;
  /** Order of addition (0 = first): ties between patterns about one name go to the lowest. */
  readonly index: number;
}

interface NameEntries<T> {
  exact?: DomainMatch<T>;
  suffix?: DomainMatch<T>;
  below?: DomainMatch<T>;
}

export class DomainSet<T> {
  private readonly byName = new Map<string, NameEntries<T>>();
  private count = 0;

  /** Number of distinct patterns held (a repeated pattern keeps its first value). */
  get size(): number {
    return this.count;
  }

  /** Add a pattern; a pattern already present keeps its first value (as the first rule wins). */
  add(pattern: DomainPattern, value: T): void {
    let e = this.byName.get(pattern.name);
    if (e === undefined) {
      e = {};
      this.byName.set(pattern.name, e);
    }
    if (e[pattern.kind] !== undefined) return;
    e[pattern.kind] = { pattern, value, index: this.count++ };
  }

  /** The winning pattern for the canonical name `name` (see the rules above), or undefined. */
  match(name: string): DomainMatch<T> | undefined {
    let n = name;
    let self = true;
    for (;;) {
      const e = this.byName.get(n);
      if (e !== undefined) {
        if (self) {
          const hit = e.exact ?? e.suffix;
          if (hit !== undefined) return hit;
        } else {
          const s = e.suffix;
          const b = e.below;
          if (s !== undefined || b !== undefined) {
            if (s === undefined) return b;
            if (b === undefined) return s;
            return s.index < b.index ? s : b;
          }
        }
      }
      const dot = n.indexOf('.');
      if (dot < 0) return undefined;
      n = n.slice(dot + 1);
      self = false;
    }
  }

  /**
   * Every pattern that covers canonical `name`, the winner first, then in the order a caller
   * falls back through (less specific names; about one name, exact, then by order written).
   */
  matches(name: string): DomainMatch<T>[] {
    const out: DomainMatch<T>[] = [];
    let n = name;
    let self = true;
    for (;;) {
      const e = this.byName.get(n);
      if (e !== undefined) {
        const here: DomainMatch<T>[] = [];
        if (self && e.exact !== undefined) out.push(e.exact);
        if (e.suffix !== undefined) here.push(e.suffix);
        if (!self && e.below !== undefined) here.push(e.below);
        if (here.length === 2 && here[1].index < here[0].index) here.reverse();
        out.push(...here);
      }
      const dot = n.indexOf('.');
      if (dot < 0) return out;
      n = n.slice(dot + 1);
      self = false;
    }
  }

  /** Whether any pattern covers `name`. */
  has(name: string): boolean {
    return this.match(name) !== undefined;
  }

  /** Every entry, in the order added. */
  entries(): DomainMatch<T>[] {
    const out: DomainMatch<T>[] = [];
    for (const e of this.byName.values()) {
      if (e.exact) out.push(e.exact);
      if (e.suffix) out.push(e.suffix);
      if (e.below) out.push(e.below);
    }
    return out.sort((a, b) => a.index - b.index);
  }
}

/** A line of a domain list that is not a pattern: its number (1-based) and why (never its text). */
export interface DomainListProblem {
  readonly line: number;
  readonly problem: DomainProblem;
}

/**
 * A domain list file's text: one pattern a line; `#` starts a comment; blank lines are
 * skipped. Problems name the line and the reason, never the line's text (the file may be
 * anything the user pointed at).
 */
export function parseDomainList(text: string): { patterns: DomainPattern[]; lines: number[]; problems: DomainListProblem[] } {
  const patterns: DomainPattern[] = [];
  /** The 1-based line of each pattern. */
  const lines: number[] = [];
  const problems: DomainListProblem[] = [];
  let line = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    line++;
    let s = text.slice(start, end);
    const hash = s.indexOf('#');
    if (hash >= 0) s = s.slice(0, hash);
    s = s.trim();
    if (s.length > 0) {
      const r = parseDomainPattern(s);
      if (r.ok) {
        patterns.push(r.pattern);
        lines.push(line);
      } else problems.push({ line, problem: r.problem });
    }
    start = end + 1;
  }
  return { patterns, lines, problems };
}
