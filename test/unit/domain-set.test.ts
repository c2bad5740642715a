import { describe, expect, it } from 'vitest';
import { canonicalDomain, parseDomain, parentDomain } from '../../src/net/domain.js';
import { DomainSet, domainPatternToString, parseDomainList, parseDomainPattern, type DomainPattern } from '../../src/net/domain-set.js';

function pattern(text: string): DomainPattern {
  const r = parseDomainPattern(text);
  if (!r.ok) throw new Error(`bad pattern ${text}: ${r.problem}`);
  return r.pattern;
}

function setOf(...texts: string[]): DomainSet<string> {
  const s = new DomainSet<string>();
  for (const t of texts) s.add(pattern(t), t);
  return s;
}

describe('canonical domain names', () => {
  it('folds case and drops one trailing dot', () => {
    expect(canonicalDomain('WWW.Corp.Example.')).toBe('www.corp.example');
    expect(canonicalDomain('corp.example')).toBe('corp.example');
  });

  it('converts internationalized labels to punycode, as the DNS carries them', () => {
    expect(canonicalDomain('bücher.example')).toBe('xn--bcher-kva.example');
    expect(canonicalDomain('BÜCHER.example.')).toBe('xn--bcher-kva.example');
    // Already punycode: left as it is.
    expect(canonicalDomain('xn--bcher-kva.example')).toBe('xn--bcher-kva.example');
  });

  it('accepts service labels with underscores and digits', () => {
    expect(canonicalDomain('_sip._tcp.example')).toBe('_sip._tcp.example');
    expect(canonicalDomain('1.2.3.4.in-addr.arpa')).toBe('1.2.3.4.in-addr.arpa');
  });

  it('refuses what is not a name, and says why', () => {
    expect(parseDomain('')).toEqual({ ok: false, problem: 'empty' });
    expect(parseDomain('.')).toEqual({ ok: false, problem: 'empty' });
    expect(parseDomain('a..b')).toEqual({ ok: false, problem: 'empty label' });
    expect(parseDomain('a b.example')).toEqual({ ok: false, problem: 'bad character' });
    expect(parseDomain('-a.example')).toEqual({ ok: false, problem: 'hyphen at a label edge' });
    expect(parseDomain('a-.example')).toEqual({ ok: false, problem: 'hyphen at a label edge' });
    expect(parseDomain(`${'a'.repeat(64)}.example`)).toEqual({ ok: false, problem: 'label too long' });
    expect(parseDomain(Array(64).fill('abc').join('.'))).toEqual({ ok: false, problem: 'too long' });
    expect(parseDomain('a\u0000b.example')).toEqual({ ok: false, problem: 'bad character' });
  });

  it('walks to the parent without building new text', () => {
    expect(parentDomain('a.b.c')).toBe('b.c');
    expect(parentDomain('c')).toBeUndefined();
  });
});

describe('domain patterns', () => {
  it('reads the three forms and writes them back', () => {
    for (const t of ['corp.example', '*.corp.example', '=www.corp.example']) {
      expect(domainPatternToString(pattern(t))).toBe(t);
    }
    expect(pattern('*.Corp.Example.')).toEqual({ kind: 'below', name: 'corp.example' });
    expect(pattern('=WWW.corp.example')).toEqual({ kind: 'exact', name: 'www.corp.example' });
    expect(parseDomainPattern('*.')).toEqual({ ok: false, problem: 'empty' });
  });
});

describe('DomainSet: the most specific pattern wins', () => {
  it('a suffix pattern covers the name itself and every name below it', () => {
    const s = setOf('corp.example');
    expect(s.match('corp.example')?.value).toBe('corp.example');
    expect(s.match('a.b.corp.example')?.value).toBe('corp.example');
    expect(s.match('notcorp.example')).toBeUndefined();
    expect(s.match('example')).toBeUndefined();
  });

  it('a wildcard covers only names below it', () => {
    const s = setOf('*.corp.example');
    expect(s.match('corp.example')).toBeUndefined();
    expect(s.match('www.corp.example')?.value).toBe('*.corp.example');
    expect(s.match('a.www.corp.example')?.value).toBe('*.corp.example');
  });

  it('an exact pattern covers its name only', () => {
    const s = setOf('=www.corp.example');
    expect(s.match('www.corp.example')?.value).toBe('=www.corp.example');
    expect(s.match('a.www.corp.example')).toBeUndefined();
  });

  it('the longest name wins, wherever it was written', () => {
    const s = setOf('corp.example', 'www.corp.example', 'example');
    expect(s.match('a.www.corp.example')?.value).toBe('www.corp.example');
    expect(s.match('mail.corp.example')?.value).toBe('corp.example');
    expect(s.match('other.example')?.value).toBe('example');
  });

  it('about one name: the exact form for the name itself, else the first written', () => {
    const s = setOf('corp.example', '=corp.example', '*.corp.example');
    expect(s.match('corp.example')?.value).toBe('=corp.example');
    expect(s.match('www.corp.example')?.value).toBe('corp.example');
    const t = setOf('*.corp.example', 'corp.example');
    expect(t.match('www.corp.example')?.value).toBe('*.corp.example');
    expect(t.match('corp.example')?.value).toBe('corp.example');
  });

  it('a repeated pattern keeps its first value', () => {
    const s = new DomainSet<string>();
    s.add(pattern('corp.example'), 'office');
    s.add(pattern('CORP.example.'), 'home');
    expect(s.size).toBe(1);
    expect(s.match('x.corp.example')?.value).toBe('office');
    expect(s.entries().map((e) => e.value)).toEqual(['office']);
  });
});

describe('domain list files', () => {
  it('one pattern a line, # comments and blank lines skipped', () => {
    const r = parseDomainList('# office\ncorp.example\n\n  *.lab.example   # lab\r\n=www.example\n');
    expect(r.problems).toEqual([]);
    expect(r.patterns.map(domainPatternToString)).toEqual(['corp.example', '*.lab.example', '=www.example']);
  });

  it('names the bad line by number and reason, never by its text', () => {
    const secret = 'root:$y$j9T$SECRET:19000:0:99999:7:::';
    const r = parseDomainList(`ok.example\n${secret}\n`);
    expect(r.patterns).toHaveLength(1);
    expect(r.problems).toEqual([{ line: 2, problem: 'bad character' }]);
    expect(JSON.stringify(r.problems)).not.toContain('SECRET');
  });
});

describe('DomainSet.matches: every covering pattern, the winner first', () => {
  it('orders by specificity, then exact, then order written', () => {
    const s = setOf('example', '*.corp.example', 'corp.example', '=www.corp.example', 'www.corp.example');
    expect(s.matches('www.corp.example').map((m) => m.value)).toEqual(['=www.corp.example', 'www.corp.example', '*.corp.example', 'corp.example', 'example']);
    expect(s.matches('corp.example').map((m) => m.value)).toEqual(['corp.example', 'example']);
    expect(s.matches('elsewhere.test')).toEqual([]);
    for (const n of ['www.corp.example', 'corp.example', 'a.b.example', 'elsewhere.test']) expect(s.matches(n)[0]).toBe(s.match(n));
  });
});
