/**
 * Routes by domain: which names enter the device in a split tunnel by domain (dns.mode fakeip
 * with routes.includeDomains / domainFiles), and which stay direct (excludeDomains /
 * excludeDomainFiles).
 *
 *   a name N enters ⇔ the most specific pattern covering N is an include
 *                    (net/domain-set.ts: longest name first, then exact before suffix);
 *   no pattern covers N: it enters only when there are no includes at all (a full tunnel by
 *   name, where the excludes carve names out).
 * A pattern listed both as include and exclude stays direct: the safer reading of a typo.
 *
 * The answer also says which entry decided (a config field or a file's line), for `why` and
 * `--dry-run`.
 */
import { TunrouteError, shownPath } from '../errors.js';
import type { Config } from '../config/schema.js';
import { DomainSet, domainPatternToString, parseDomainList, parseDomainPattern, type DomainPattern } from '../net/domain-set.js';

export interface DomainRouteEntry {
  readonly include: boolean;
  /** "routes.includeDomains[0]" or "corp.txt:3". */
  readonly source: string;
}

export interface DomainRouteAnswer {
  readonly tunneled: boolean;
  /** The deciding pattern (text form) and where it came from; none when no pattern covers the name. */
  readonly pattern?: string;
  readonly source?: string;
}

export class DomainRoutes {
  private readonly set = new DomainSet<DomainRouteEntry>();
  private includes = 0;
  private excludes = 0;

  /** Whether there are any domain routes (includes or excludes). */
  get active(): boolean {
    return this.set.size > 0;
  }

  /** A split tunnel by domain: some includes (then names no pattern covers go direct). */
  get split(): boolean {
    return this.includes > 0;
  }

  get counts(): { include: number; exclude: number } {
    return { include: this.includes, exclude: this.excludes };
  }

  add(p: DomainPattern, include: boolean, source: string): void {
    const before = this.set.size;
    this.set.add(p, { include, source });
    if (this.set.size === before) return;
    if (include) this.includes++;
    else this.excludes++;
  }

  /** Whether canonical `name` enters the device (see the rules above). Cheap: one walk of its suffixes. */
  tunneled(name: string): boolean {
    const m = this.set.match(name);
    return m === undefined ? this.includes === 0 : m.value.include;
  }

  explain(name: string): DomainRouteAnswer {
    const m = this.set.match(name);
    if (m === undefined) return { tunneled: this.includes === 0 };
    return { tunneled: m.value.include, pattern: domainPatternToString(m.pattern), source: m.value.source };
  }

  /** Every entry in the order added (excludes first), for the plan's description. */
  entries(): Array<{ pattern: string } & DomainRouteEntry> {
    return this.set.entries().map((e) => ({ pattern: domainPatternToString(e.pattern), ...e.value }));
  }
}

/**
 * The domain routes of a config; `files` holds the text of routes.domainFiles /
 * excludeDomainFiles by path (read by the host probe). A bad line names the file and the line,
 * never the line's text (the path may name any file root can read).
 */
export function domainRoutesOf(config: Config, files: ReadonlyMap<string, string>): DomainRoutes {
  const r = config.routes;
  const out = new DomainRoutes();
  const inline = (list: readonly string[], include: boolean, field: string): void => {
    list.forEach((text, i) => {
      const p = parseDomainPattern(text);
      // The schema checked every pattern already.
      if (p.ok) out.add(p.pattern, include, `${field}[${i}]`);
    });
  };
  const fromFiles = (paths: readonly string[], include: boolean, field: string): void => {
    paths.forEach((path, i) => {
      const text = files.get(path);
      if (text === undefined) throw new TunrouteError('TR_INTERNAL', `the domain file ${path} was not read before planning`);
      const { patterns, problems, lines } = parseDomainList(text);
      if (problems.length > 0) {
        const p = problems[0];
        throw new TunrouteError(
          'TR_BAD_CONFIG',
          `${shownPath(path)} line ${p.line} (listed in ${field}[${i}]) is not a domain name (${p.problem}): write one name a line, like corp.example, *.corp.example or =www.corp.example, or comment it out with #.`,
        );
      }
      patterns.forEach((pat, j) => out.add(pat, include, `${path}:${lines[j]}`));
    });
  };
  // Excludes first: a pattern listed both ways stays direct (DomainSet keeps the first value).
  inline(r.excludeDomains, false, 'routes.excludeDomains');
  fromFiles(r.excludeDomainFiles, false, 'routes.excludeDomainFiles');
  inline(r.includeDomains, true, 'routes.includeDomains');
  fromFiles(r.domainFiles, true, 'routes.domainFiles');
  return out;
}

/** The domain routes a plan lists (plan.dns.domains), as `up` and `why` against a journal use them. */
export function domainRoutesOfPlan(domains: ReadonlyArray<{ pattern: string; include: boolean; source: string }>): DomainRoutes {
  const out = new DomainRoutes();
  for (const d of domains) {
    const p = parseDomainPattern(d.pattern);
    if (p.ok) out.add(p.pattern, d.include, d.source);
  }
  return out;
}
