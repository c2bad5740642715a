import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, symlinkSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FakeIpPool } from '../../src/dns/fake-ip.js';
import { FakeIpSaver, fakeIpStatePath, loadFakeIpPool } from '../../src/fake-ip-state.js';
import { silentLogger } from '../../src/logger.js';
import { parseCidr, u32ToIp } from '../../src/net/ipv4.js';

const RANGE = parseCidr('198.18.0.0/15')!;
const DEVICE = 0xc6120001; // 198.18.0.1
let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tunroute-fakeip-'));
  dirs.push(d);
  return d;
}

describe('the fake-IP table across restarts', () => {
  it('saves while it changes and at stop, and the next run starts from it', () => {
    const dir = stateDir();
    const path = fakeIpStatePath(dir, 'tun0');
    const log = silentLogger();
    const pool = loadFakeIpPool(path, RANGE, [DEVICE], log);
    const saver = new FakeIpSaver(pool, path, log);
    const a = pool.lookup('a.example') ?? 0;
    saver.save();
    const written = readFileSync(path, 'utf8');
    saver.save(); // nothing changed: not written again
    expect(readFileSync(path, 'utf8')).toBe(written);
    const b = pool.lookup('b.example') ?? 0;
    saver.stop();
    const again = loadFakeIpPool(path, RANGE, [DEVICE], log);
    expect(again.nameOf(a)).toBe('a.example');
    expect(again.nameOf(b)).toBe('b.example');
    expect(u32ToIp(a)).toBe('198.18.0.2');
  });

  it('starts empty from a missing, damaged or linked file, and never follows the link', () => {
    const dir = stateDir();
    const path = fakeIpStatePath(dir, 'tun0');
    const log = silentLogger();
    expect(loadFakeIpPool(path, RANGE, [DEVICE], log).stats.entries).toBe(0);
    mkdirSync(dirname(path), { mode: 0o700 });
    writeFileSync(path, '{ not json');
    expect(loadFakeIpPool(path, RANGE, [DEVICE], log).stats.entries).toBe(0);
    rmSync(path);
    const target = join(dir, 'elsewhere.json');
    writeFileSync(target, 'precious');
    symlinkSync(target, path);
    expect(loadFakeIpPool(path, RANGE, [DEVICE], log).stats.entries).toBe(0);
    // Saving replaces the link itself; its target is untouched.
    const pool = loadFakeIpPool(path, RANGE, [DEVICE], log);
    const saver = new FakeIpSaver(pool, path, log);
    pool.lookup('x.example');
    saver.stop();
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(loadFakeIpPool(path, RANGE, [DEVICE], log).stats.entries).toBe(1);
  });
});

describe('the background save (what the timer runs while up runs)', () => {
  /** A saver of a pool that has handed out `names` names since. */
  function filled(path: string, names: number): { pool: FakeIpPool; saver: FakeIpSaver } {
    const pool = loadFakeIpPool(path, RANGE, [DEVICE], silentLogger());
    const saver = new FakeIpSaver(pool, path, silentLogger());
    for (let i = 0; i < names; i++) pool.lookup(`n${i}.example`);
    return { pool, saver };
  }

  it('writes the bytes a synchronous save writes, over several turns, and leaves no temp file', async () => {
    const dir = stateDir();
    const path = fakeIpStatePath(dir, 'tun0');
    const { pool, saver } = filled(path, 10_000); // three slices
    pool.pin(pool.peek('n5.example') ?? 0);
    let turns = 0;
    const counter = setInterval(() => turns++, 0);
    await saver.saveInBackground();
    clearInterval(counter);
    expect(readFileSync(path)).toEqual(Buffer.from(pool.toJSONBytes()));
    expect(readdirSync(dirname(path))).toEqual([`fakeip-tun0.json`]);
    const before = readFileSync(path, 'utf8');
    await saver.saveInBackground(); // nothing changed: not written again
    expect(readFileSync(path, 'utf8')).toBe(before);
    saver.stop();
    expect(loadFakeIpPool(path, RANGE, [DEVICE], silentLogger()).stats.entries).toBe(10_000);
    expect(turns).toBeGreaterThan(0);
  });

  // A synchronous save while a background one is between slices: the last one at stop(), or any
  // other. The older background save must not replace its file.
  it.each([
    ['stop()', (saver: FakeIpSaver): void => saver.stop()],
    ['save()', (saver: FakeIpSaver): void => saver.save()],
  ])('never replaces a newer synchronous save: %s during a background save', async (_, syncSave) => {
    const dir = stateDir();
    const path = fakeIpStatePath(dir, 'tun0');
    const { pool, saver } = filled(path, 10_000);
    const background = saver.saveInBackground();
    const late = pool.lookup('late.example') ?? 0;
    syncSave(saver);
    await background;
    expect(loadFakeIpPool(path, RANGE, [DEVICE], silentLogger()).nameOf(late)).toBe('late.example');
    expect(readdirSync(dirname(path))).toEqual(['fakeip-tun0.json']);
    saver.stop();
  });
});

describe('the background save never writes through a link', () => {
  it('replaces a link planted where its temp file goes, and leaves the link\'s target alone', async () => {
    const dir = stateDir();
    const path = fakeIpStatePath(dir, 'tun0');
    const pool = loadFakeIpPool(path, RANGE, [DEVICE], silentLogger());
    const saver = new FakeIpSaver(pool, path, silentLogger());
    pool.lookup('a.example');
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const target = join(dir, 'precious');
    writeFileSync(target, 'precious');
    symlinkSync(target, `${path}.tmp-${process.pid}-bg`);
    await saver.saveInBackground();
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(loadFakeIpPool(path, RANGE, [DEVICE], silentLogger()).stats.entries).toBe(1);
    expect(readdirSync(dirname(path))).toEqual(['fakeip-tun0.json']);
    saver.stop();
  });
});
