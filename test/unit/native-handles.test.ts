/**
 * The addon's descriptors as checked handles (a forged number is a TypeError, a closed handle
 * is EBADF, close is idempotent), writeMany handing back the errno of the write that failed,
 * and the per-instance cipher state surviving workers that load the addon and end.
 * The descriptors are loopback UDP sockets (udpOpen): no device, no namespace, no root.
 */
import { constants as osConstants } from 'node:os';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { addonPath, tryLoadNative, type NativeFd, type NativeTunAddon } from '../../src/native/addon.js';
import { tryLoadNativeUdp, type NativeUdpAddon } from '../../src/native/udp.js';

const tun = tryLoadNative();
const udp = tryLoadNativeUdp();
if (tun === undefined || udp === undefined) {
  console.warn(`native-handles: SKIPPED — the native addon is not built (${addonPath()}); run \`npm run build\`.`);
}

const open: NativeFd[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) udp!.udpClose(fd);
});

function socket(): NativeFd {
  const fd = udp!.udpOpen('127.0.0.1', 0, 0).fd;
  open.push(fd);
  return fd;
}

/** What a caller could try instead of a handle. */
const forged = (): unknown[] => [3, 0, -1, '3', {}, { fd: 3 }, null, undefined, new Uint8Array(4)];

describe.skipIf(tun === undefined || udp === undefined)('native fd handles (skipped when the addon is not built)', () => {
  const t: NativeTunAddon = tun!;
  const u: NativeUdpAddon = udp!;
  const buf = new Uint8Array(64);
  const offsets = Uint32Array.of(0);
  const lengths = Uint32Array.of(8);

  it('takes only a reader handle where one is due (stopReader, setDnsResponder): anything else is a TypeError', () => {
    for (const v of forged()) {
      expect(() => t.stopReader(v as never), String(v)).toThrow(TypeError);
      expect(() => t.setDnsResponder?.(v as never, null, 0, 1), String(v)).toThrow(TypeError);
    }
  });

  it('hands out an opaque object, not the descriptor number', () => {
    const fd: unknown = socket();
    expect(typeof fd).toBe('object');
    expect(Object.keys(fd as object)).toEqual([]);
  });

  it('refuses a forged fd with a TypeError in every call that takes one', () => {
    for (const f of forged()) {
      const fd = f as NativeFd;
      expect(() => t.write(fd, buf, 0, 8)).toThrow(TypeError);
      expect(() => t.writeMany(fd, buf, offsets, lengths, 1, new Uint32Array(1))).toThrow(TypeError);
      expect(() => t.writeParts(fd, buf, buf, buf)).toThrow(TypeError);
      expect(() => t.setOffload(fd, 0)).toThrow(TypeError);
      expect(() => t.close(fd)).toThrow(TypeError);
      expect(() => t.startReader(fd, Buffer.alloc(64), 1, 64, () => {})).toThrow(TypeError);
      expect(() => u.udpSendMany(fd, buf, offsets, lengths, Uint32Array.of(0x7f000001), Uint32Array.of(9), 1, 0)).toThrow(TypeError);
      expect(() => u.udpStartReceiver(fd, Buffer.alloc(64), 1, 64, () => {})).toThrow(TypeError);
      expect(() => u.udpClose(fd)).toThrow(TypeError);
    }
  });

  it('refuses another tagged handle (a running reader) as an fd', () => {
    const fd = socket();
    const reader = u.udpStartReceiver(fd, Buffer.alloc(64), 1, 64, () => {});
    try {
      expect(() => t.write(reader as unknown as NativeFd, buf, 0, 8)).toThrow(/handle returned by open\(\) or udpOpen\(\)/);
    } finally {
      u.udpStopReceiver(reader);
    }
  });

  it('a closed handle: close again does nothing, any other use throws EBADF', () => {
    const fd = u.udpOpen('127.0.0.1', 0, 0).fd;
    u.udpClose(fd);
    expect(() => u.udpClose(fd)).not.toThrow();
    expect(() => t.close(fd)).not.toThrow();
    expect(() => t.write(fd, buf, 0, 8)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => u.udpSendMany(fd, buf, offsets, lengths, Uint32Array.of(0x7f000001), Uint32Array.of(9), 1, 0)).toThrow(
      expect.objectContaining({ code: 'EBADF' }),
    );
  });

  it('writeMany hands back the errno of the write that failed, and how many went before it', () => {
    // write() on an unconnected UDP socket fails with EDESTADDRREQ: the first packet stops the batch.
    const fd = socket();
    const errnoOut = Uint32Array.of(12345);
    const n = t.writeMany(fd, buf, Uint32Array.of(0, 8, 16), Uint32Array.of(8, 8, 8), 3, errnoOut);
    expect(n).toBe(0);
    expect(errnoOut[0]).toBe(osConstants.errno.EDESTADDRREQ);
    // write() reports the same errno as its negative result: the two agree.
    expect(t.write(fd, buf, 0, 8)).toBe(-osConstants.errno.EDESTADDRREQ);
    // Nothing to write: nothing failed.
    errnoOut[0] = 12345;
    expect(t.writeMany(fd, buf, offsets, lengths, 0, errnoOut)).toBe(0);
    expect(errnoOut[0]).toBe(0);
  });

  it('writeMany checks its errno out-parameter', () => {
    const fd = socket();
    expect(() => t.writeMany(fd, buf, offsets, lengths, 1, new Uint32Array(0))).toThrow(RangeError);
    expect(() => t.writeMany(fd, buf, offsets, lengths, 1, new Int32Array(1) as unknown as Uint32Array)).toThrow(TypeError);
  });
});

/** Loads the addon in a worker, seals and opens one message, and reports. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const addon = require(workerData.path);
const key = new Uint8Array(32).fill(7);
const out = new Uint8Array(16 + 64 + 16);
const n = addon.wgSeal(key, 1, 5n, new Uint8Array(64).fill(9), 64, out, 0);
const plain = new Uint8Array(64);
parentPort.postMessage({ n, opened: addon.wgOpen(key, out, plain, 0), ok: plain.every((b) => b === 9) });
`;

describe.skipIf(tun === undefined)('the addon in workers (per-instance cipher contexts)', () => {
  it('each worker gets working contexts of its own; ending it frees them without harm to this thread', async () => {
    for (let i = 0; i < 4; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { path: addonPath() } });
      const msg = await new Promise<unknown>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      expect(msg).toEqual({ n: 96, opened: 64, ok: true });
      await w.terminate();
    }
    // The main thread's instance is untouched by the workers' ends.
    const t = tun as unknown as { wgSeal: (...a: unknown[]) => number };
    expect(t.wgSeal(new Uint8Array(32), 1, 1n, new Uint8Array(16), 16, new Uint8Array(48), 0)).toBe(48);
  });
});
