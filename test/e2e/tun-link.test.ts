/**
 * TunLink on a real TUN device. Needs root: everything happens inside a network namespace this
 * file creates (trtest-<pid>-<rand>) and always deletes; the host's interfaces and routes are
 * never touched. The work itself runs in fixtures/tun-link.mjs, spawned with `ip netns exec`,
 * which imports the built dist/ files (`npm test` builds first).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTunrouteError } from '../../src/errors.js';
import { tunOpenError } from '../../src/link/tun.js';

const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  console.warn('tun-link e2e: SKIPPED — opening a TUN device in a network namespace needs root (run as root).');
}

const fixture = fileURLToPath(new URL('./fixtures/tun-link.mjs', import.meta.url));
const distTun = fileURLToPath(new URL('../../dist/link/tun.js', import.meta.url));
const addon = fileURLToPath(new URL('../../build/Release/tunroute_native.node', import.meta.url));

function errnoError(code: string): Error {
  return Object.assign(new Error(`ioctl(TUNSETIFF) failed: ${code}`), { code, errno: 1, syscall: 'ioctl' });
}

describe('tunOpenError: errno → stable codes with the fix in the message', () => {
  it.each([
    ['EPERM', 'TR_NOT_ROOT', /sudo/],
    ['EACCES', 'TR_NOT_ROOT', /CAP_NET_ADMIN/],
    ['ENOENT', 'TR_NO_TUN', /modprobe tun/],
    ['ENODEV', 'TR_NO_TUN', /\/dev\/net\/tun/],
    ['EBUSY', 'TR_TUN_BUSY', /tun7 is already in use.*--tun/],
    ['EINVAL', 'TR_TUN_OPEN', /EINVAL/],
  ])('%s → %s', (errno, code, message) => {
    const e = tunOpenError(errnoError(errno), 'tun7');
    expect(isTunrouteError(e)).toBe(true);
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });
});

interface FixtureResult {
  error?: string;
  plain: {
    name: string;
    slotSize: number;
    busyCode: string;
    batches: number[];
    receivedLengths: number[];
    receivedTotalLengths: number[];
    expectedLengths: number[];
    sendOk: boolean;
    sendManyArena: number;
    sendManySeparate: number;
    messages: { text: string; from: string }[];
    stats: { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number; txErrors: number };
    sendAfterClose: boolean;
    deviceGoneAfterClose: boolean;
  };
  vnet: {
    offload: boolean;
    slotSize: number;
    received: { len: number; totalLength: number; hdr: number[] }[];
    sendOk: boolean;
    messages: string[];
  };
}

function deleteNamespace(ns: string): void {
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/** Runs the fixture in the namespace; kills it (by its PID) if it outlives `ms`. */
function runFixture(ns: string, ms: number): Promise<FixtureResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, fixture], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        const result = JSON.parse(line) as FixtureResult;
        if (result.error !== undefined) reject(new Error(`fixture failed: ${result.error}\n${stderr}`));
        else resolve(result);
      } catch {
        reject(new Error(`fixture exited (${code ?? signal}) without a result:\n${stdout}\n${stderr}`));
      }
    });
  });
}

describe.skipIf(!isRoot)('TunLink on a real TUN device in a network namespace (needs root)', () => {
  const ns = `trtest-${process.pid}-${randomBytes(3).toString('hex')}`;
  const cleanup = (): void => deleteNamespace(ns);
  let result: FixtureResult;

  beforeAll(async () => {
    if (!existsSync(distTun) || !existsSync(addon)) {
      throw new Error('dist/ or the native addon is missing: run `npm run build` first (`npm test` does).');
    }
    process.once('exit', cleanup); // even if the runner dies between the hooks
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      result = await runFixture(ns, 40_000);
    } catch (e) {
      cleanup();
      throw e;
    }
  });

  afterAll(() => {
    cleanup();
    process.removeListener('exit', cleanup);
    const left = execFileSync('ip', ['netns', 'list']).toString();
    expect(left).not.toContain(ns);
  });

  it('opens the device under the asked name, with MTU-sized slots', () => {
    expect(result.plain.name).toBe('trtun0');
    expect(result.plain.slotSize).toBe(1500);
  });

  it('refuses a second open of the same name with TR_TUN_BUSY', () => {
    expect(result.plain.busyCode).toBe('TR_TUN_BUSY');
  });

  it('receives a burst of datagrams in batches, every length correct, in order', () => {
    const { batches, receivedLengths, receivedTotalLengths, expectedLengths } = result.plain;
    expect(receivedLengths).toEqual(expectedLengths);
    expect(receivedTotalLengths).toEqual(expectedLengths);
    expect(Math.max(...batches)).toBeGreaterThan(1); // many packets per wake-up
    expect(Math.max(...batches)).toBeLessThanOrEqual(64); // never more than batchSize
    expect(batches.length).toBeLessThan(expectedLengths.length);
  });

  it('writes crafted UDP packets that reach a socket in the namespace (send and sendMany)', () => {
    const p = result.plain;
    expect(p.sendOk).toBe(true);
    expect(p.sendManyArena).toBe(3); // the malformed one in the middle is skipped, the rest go
    expect(p.sendManySeparate).toBe(2);
    expect(p.messages.map((m) => m.text).sort()).toEqual(['arena-0', 'arena-1', 'arena-2', 'sep-0', 'sep-1', 'single']);
    expect(p.messages.every((m) => m.from === '10.200.0.2:5555')).toBe(true);
  });

  it('counts packets, bytes and the refused write', () => {
    const s = result.plain.stats;
    expect(s.txPackets).toBe(6);
    expect(s.txErrors).toBe(1);
    expect(s.txBytes).toBe([6, 7, 7, 7, 5, 5].reduce((sum, n) => sum + 28 + n, 0));
    expect(s.rxPackets).toBeGreaterThanOrEqual(200);
    expect(s.rxBytes).toBeGreaterThanOrEqual(result.plain.expectedLengths.reduce((a, b) => a + b, 0));
  });

  it('close() is idempotent, refuses later sends, and the device disappears', () => {
    expect(result.plain.sendAfterClose).toBe(false);
    expect(result.plain.deviceGoneAfterClose).toBe(true);
  });

  it('with vnetHdr: 64 KiB slots, a virtio-net header before every packet, and writes accepted', () => {
    const v = result.vnet;
    expect(v.offload).toBe(true); // TunLink.open set CSUM|TSO4 itself
    expect(v.slotSize).toBe(65535 + 10);
    expect(v.received.map((r) => r.len)).toEqual([38, 528, 1428]);
    expect(v.received.map((r) => r.totalLength)).toEqual([38, 528, 1428]);
    for (const r of v.received) {
      expect(r.hdr).toHaveLength(10);
      expect(r.hdr[1]).toBe(0); // gso_type NONE: datagrams are not segmented
    }
    expect(v.sendOk).toBe(true);
    expect(v.messages).toEqual(['vnet!']);
  });
});
