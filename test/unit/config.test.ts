import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { cidrToString } from '../../src/net/ipv4.js';
import { TunrouteError } from '../../src/errors.js';

function file(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tunroute-config-'));
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function errorOf(fn: () => unknown): TunrouteError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TunrouteError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

describe('loadConfig', () => {
  it('fills defaults when nothing is given', () => {
    const c = loadConfig({});
    // CIDRs come out parsed; they are compared in their text form.
    expect({ ...c.tun, address: cidrToString(c.tun.address) }).toEqual({ name: 'tun0', address: '198.18.0.1/15', mtu: 1500, txqueuelen: 5000, offload: true });
    expect(c.routes.include).toEqual([]);
    expect(c.icmp).toBe('reply');
  });

  it('reads YAML and JSON', () => {
    const y = loadConfig({ file: file('a.yaml', 'tun:\n  name: tr9\n  mtu: 9000\nroutes:\n  include: [10.0.0.0/8]\n') });
    expect(y.tun.name).toBe('tr9');
    expect(y.tun.mtu).toBe(9000);
    expect(y.routes.include.map(cidrToString)).toEqual(['10.0.0.0/8']);
    const j = loadConfig({ file: file('a.json', '{"icmp": "drop"}') });
    expect(j.icmp).toBe('drop');
  });

  it('lets a flag override the file, lists included', () => {
    const f = file('b.yaml', 'tun: {name: tr1, mtu: 1400}\nroutes: {include: [10.0.0.0/8]}\n');
    const c = loadConfig({ file: f, flags: { mtu: 1300, route: ['192.0.2.0/24'] } });
    expect(c.tun).toMatchObject({ name: 'tr1', mtu: 1300 });
    expect(c.routes.include.map(cidrToString)).toEqual(['192.0.2.0/24']);
  });

  it('names the flag, the value and the fix for a bad flag', () => {
    const e = errorOf(() => loadConfig({ flags: { route: ['10.0.0.0/24', '10.0.0/8'] } }));
    expect(e.code).toBe('TR_BAD_FLAG');
    expect(e.message).toBe('The flag --route "10.0.0/8" is not an IPv4 CIDR like 10.0.0.0/8: give a valid value.');
  });

  it('names the file and field for a bad config value', () => {
    const f = file('c.yaml', 'routes:\n  include:\n    - 10.0.0.0/33\n');
    const e = errorOf(() => loadConfig({ file: f }));
    expect(e.code).toBe('TR_BAD_CONFIG');
    expect(e.message).toBe(`The config file ${f}: routes.include[0] "10.0.0.0/33" is not an IPv4 CIDR like 10.0.0.0/8: correct that field.`);
  });

  it('rejects unknown settings by name', () => {
    const f = file('d.yaml', 'tun: {nmae: x}\n');
    expect(errorOf(() => loadConfig({ file: f })).message).toContain('unknown setting(s) nmae in tun');
  });

  it('reports YAML syntax errors with the line', () => {
    const f = file('e.yaml', 'tun:\n  name: [x\n');
    const e = errorOf(() => loadConfig({ file: f }));
    expect(e.code).toBe('TR_BAD_CONFIG');
    expect(e.message).toMatch(/not valid YAML or JSON at line \d+/);
  });

  it('reports a missing file with the path', () => {
    const e = errorOf(() => loadConfig({ file: '/nonexistent/tunroute.yaml' }));
    expect(e.code).toBe('TR_CONFIG_READ');
    expect(e.message).toContain('/nonexistent/tunroute.yaml (ENOENT)');
  });

  it('rejects out-of-range and mistyped values', () => {
    expect(errorOf(() => loadConfig({ flags: { mtu: 100 } })).message).toContain('--mtu 100 must be at least 576');
    expect(errorOf(() => loadConfig({ flags: { icmp: 'maybe' } })).code).toBe('TR_BAD_FLAG');
    expect(errorOf(() => loadConfig({ flags: { tun: 'a-name-far-too-long' } })).message).toContain('not a valid interface name');
  });
});

describe('device names (issue 13)', () => {
  it('refuses a name that starts with "-" or is "." or "..", with one sentence', () => {
    const e = errorOf(() => loadConfig({ flags: { tun: '-oneline' } }));
    expect(e.code).toBe('TR_BAD_FLAG');
    expect(e.message).toBe(
      'The flag --tun "-oneline" is not a valid interface name: use 1–15 letters, digits, "_", "-" or ".", not starting with "-" and not "." or "..": give a valid value.',
    );
    for (const bad of ['.', '..', 'a/b', 'a b', 'tun\n0', '']) expect(errorOf(() => loadConfig({ flags: { tun: bad } })).code).toBe('TR_BAD_FLAG');
    expect(errorOf(() => loadConfig({ file: file('c.yaml', 'tun:\n  name: "-x"\n') })).message).toContain('tun.name "-x" is not a valid interface name');
    for (const good of ['tun0', 'wg.1', 'a-b_c', 'x.', 'abcdefghijklmno']) expect(loadConfig({ flags: { tun: good } }).tun.name).toBe(good);
  });
});
