/**
 * The control socket end to end on a temp path: a real server, real unix sockets, no root.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { chmod } from 'node:fs/promises';
import { connectError, queryControl } from '../../src/control/client.js';
import { MAX_REQUEST_BYTES, type StatusSnapshot } from '../../src/control/protocol.js';
import { startControlServer, statusSnapshotOf, type ControlServer } from '../../src/control/server.js';
import { emptyLinkStats } from '../../src/link/link.js';
import { silentLogger } from '../../src/logger.js';
import { newOutboundStats } from '../../src/outbound/outbound.js';
import { isTunrouteError, TunrouteError } from '../../src/errors.js';
import { newDropCounters } from '../../src/wire/drop.js';

// Every chmod by path is recorded: the socket must be created with its mode, never chmod-ed
// after (a chmod by path follows a symlink put there between listen and chmod).
vi.mock('node:fs/promises', async (importOriginal) => {
  const m = await importOriginal<typeof import('node:fs/promises')>();
  return { ...m, chmod: vi.fn(m.chmod) };
});

let dir: string;
let sockPath: string;
const servers: ControlServer[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tr-ctl-'));
  sockPath = join(dir, 'run', 'tunroute.sock');
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

function snapshot(): StatusSnapshot {
  return statusSnapshotOf(
    {
      link: { name: 'tun0', mtu: 1500, stats: { ...emptyLinkStats(), rxPackets: 7 } },
      plan: { prefixes: [1, 2, 3] },
      stats: () => ({
        packets: { rxPackets: 7, tcpPackets: 5, udpPackets: 0, icmpEchoReplied: 2, icmpEchoDropped: 0, fragments: 0, dropped: 0, drops: newDropCounters() },
        tcp: { flowsOpen: 1, flowsTotal: 1, refusedLimit: 0, refusedMemory: 0, refusedFds: 0, refusedUid: 0, refusedNoName: 0, upstreamErrors: newOutboundStats().tcpFailures, bytesUp: 100, bytesDown: 200 },
        outbounds: { proxy: newOutboundStats() },
      }),
      flows: () => [{ id: 1, src: '198.18.0.1:5000', dst: '10.0.0.1:80', outbound: 'proxy', state: 'ESTABLISHED', bytesUp: 100, bytesDown: 200, ageMs: 1500 }],
    },
    { version: '0.1.0-test', address: '198.18.0.1/15', startedAt: new Date('2024-05-01T10:00:00Z'), now: () => Date.parse('2024-05-01T10:00:05Z') },
  );
}

async function start(opts: Partial<Parameters<typeof startControlServer>[0]> = {}): Promise<ControlServer> {
  const s = await startControlServer({ path: sockPath, snapshot, logger: silentLogger(), ...opts });
  servers.push(s);
  return s;
}

/** A raw connection that collects response lines. */
function rawClient(path: string): { sock: Socket; lines: () => Promise<string[]>; next: (n: number) => Promise<string[]>; closed: Promise<void> } {
  const sock = createConnection(path);
  let buf = '';
  const got: string[] = [];
  let waiters: Array<() => void> = [];
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      got.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
    waiters.forEach((w) => w());
  });
  sock.on('error', () => {});
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  const next = (n: number): Promise<string[]> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (got.length >= n) {
          waiters = waiters.filter((w) => w !== check);
          resolve(got.splice(0, n));
        }
      };
      waiters.push(check);
      check();
    });
  return { sock, lines: () => Promise.resolve([...got]), next, closed };
}

async function errorOf(p: Promise<unknown>): Promise<Error> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  if (!(e instanceof Error)) throw new Error('expected a rejection');
  return e;
}

describe('control server and client', () => {
  it('answers fakeip with the entry for a name or an address, and enabled false without a table', async () => {
    await start({ fakeIp: (arg) => (arg === 'web.lab' ? { enabled: true, range: '198.18.0.0/15', name: 'web.lab', ip: '198.18.0.2', inUse: true } : { enabled: true, range: '198.18.0.0/15' }) });
    expect(await queryControl(sockPath, 'fakeip', { arg: 'web.lab' })).toEqual({ enabled: true, range: '198.18.0.0/15', name: 'web.lab', ip: '198.18.0.2', inUse: true });
    expect(await queryControl(sockPath, 'fakeip', { arg: '198.18.0.9' })).toEqual({ enabled: true, range: '198.18.0.0/15' });
    for (const s of servers.splice(0)) await s.close();
    await start();
    expect(await queryControl(sockPath, 'fakeip', { arg: 'web.lab' })).toEqual({ enabled: false });
  });

  it('answers status, flows and ping', async () => {
    await start();
    const s = await queryControl(sockPath, 'status');
    expect(s).toEqual(snapshot());
    expect(s.uptimeMs).toBe(5000);
    expect(s.routes).toBe(3);
    expect(s.device).toEqual({ name: 'tun0', mtu: 1500, address: '198.18.0.1/15' });
    expect(await queryControl(sockPath, 'flows')).toEqual(snapshot().flows);
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it('creates the missing directory 0755 and the socket 0660 (bound with that mode, never chmod-ed), and removes the socket on close', async () => {
    vi.mocked(chmod).mockClear();
    const s = await start();
    expect(vi.mocked(chmod)).not.toHaveBeenCalled();
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o755 & ~process.umask());
    const st = lstatSync(sockPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    await s.close();
    expect(existsSync(sockPath)).toBe(false);
    await s.close(); // idempotent
  });

  it('never follows a symlink planted at the socket path', async () => {
    mkdirSync(join(dir, 'run'));
    const target = join(dir, 'secret');
    writeFileSync(target, 'x', { mode: 0o600 });
    symlinkSync(target, sockPath);
    const e = await errorOf(start());
    expect(e.message).toBe(`${sockPath} exists and is not a socket: remove it, or give another --control path.`);
    expect(statSync(target).mode & 0o777).toBe(0o600);
  });

  it('answers many clients at once', async () => {
    await start();
    const all = await Promise.all(Array.from({ length: 40 }, (_, i) => queryControl(sockPath, i % 2 === 0 ? 'status' : 'ping')));
    expect(all).toHaveLength(40);
    expect(all.filter((r) => 'version' in r)).toHaveLength(20);
  });

  it('answers pipelined requests in order on one connection', async () => {
    await start();
    const c = rawClient(sockPath);
    c.sock.write('{"v":1,"cmd":"ping"}\n\n{"v":1,"cmd":"flows"}\r\n{"v":1,"cmd":"nope"}\n{"v":1,"cmd":"status"}\n');
    const lines = (await c.next(4)).map((l) => JSON.parse(l) as { ok: boolean; data?: unknown; error?: string });
    expect(lines.map((l) => l.ok)).toEqual([true, true, false, true]);
    expect(lines[0].data).toEqual({ pid: process.pid });
    expect(lines[2].error).toMatch(/^unknown command "nope"/);
    c.sock.destroy();
  });

  it('answers malformed lines with errors and keeps the connection and the server', async () => {
    await start();
    const c = rawClient(sockPath);
    c.sock.write('hello\n42\n{"v":9,"cmd":"status"}\n\u0000\u00ff\n');
    const lines = (await c.next(4)).map((l) => JSON.parse(l) as { v: number; ok: boolean; error: string });
    expect(lines.every((l) => l.v === 1 && !l.ok && typeof l.error === 'string')).toBe(true);
    c.sock.write('{"v":1,"cmd":"ping"}\n');
    expect(JSON.parse((await c.next(1))[0])).toEqual({ v: 1, ok: true, data: { pid: process.pid } });
    c.sock.destroy();
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it.each([
    ['without a newline', 'x'.repeat(MAX_REQUEST_BYTES + 10)],
    ['with a newline', 'y'.repeat(MAX_REQUEST_BYTES + 10) + '\n{"v":1,"cmd":"ping"}\n'],
  ])('answers an oversized line (%s) once, hangs up, and goes on serving others', async (_n, payload) => {
    await start();
    const c = rawClient(sockPath);
    c.sock.write(payload);
    const [line] = await c.next(1);
    expect(JSON.parse(line)).toEqual({ v: 1, ok: false, error: expect.stringMatching(/^a request line is longer than 65536 bytes/) as unknown });
    await c.closed;
    expect(await c.lines()).toEqual([]);
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it('reload: the config and files reach the daemon; its answer, or its refusal in one sentence, reaches the client, in order with other requests', async () => {
    const got: Array<{ config: Record<string, unknown>; files: Record<string, string> }> = [];
    await start({
      source: () => ({ file: '/etc/tunroute/t.yaml', flags: { proxy: 'socks5://10.0.0.1:1080' }, cwd: '/' }),
      reload: async (config, files) => {
        got.push({ config, files: Object.fromEntries(files) });
        await new Promise((r) => setTimeout(r, 20));
        if (config.bad === true) throw new TunrouteError('TR_BAD_CONFIG', 'Reload refused: the new config changes "tun", which only a restart applies.');
        return { summary: 'reloaded: routes +1 -0' };
      },
    });
    expect(await queryControl(sockPath, 'source')).toEqual({ file: '/etc/tunroute/t.yaml', flags: { proxy: 'socks5://10.0.0.1:1080' }, cwd: '/' });
    const ok = await queryControl(sockPath, 'reload', { payload: { config: { routes: { include: ['10.0.0.0/8'] } }, files: { 'list.txt': '10.1.0.0/16\n' } } });
    expect(ok).toEqual({ summary: 'reloaded: routes +1 -0' });
    expect(got[0]).toEqual({ config: { routes: { include: ['10.0.0.0/8'] } }, files: { 'list.txt': '10.1.0.0/16\n' } });
    await expect(queryControl(sockPath, 'reload', { payload: { config: { bad: true } } })).rejects.toThrow(/refused "reload": Reload refused: the new config changes "tun", which only a restart applies\.$/);
    // Pipelined: the reply to the slow reload comes before the ping's.
    const c = rawClient(sockPath);
    c.sock.write('{"v":1,"cmd":"reload","config":{}}\n{"v":1,"cmd":"ping"}\n');
    const [first, second] = await c.next(2);
    expect(JSON.parse(first)).toMatchObject({ ok: true, data: { summary: 'reloaded: routes +1 -0' } });
    expect(JSON.parse(second)).toMatchObject({ ok: true, data: { pid: process.pid } });
    c.sock.destroy();
  });

  it('a daemon without reload (tunroute server) says so', async () => {
    await start();
    await expect(queryControl(sockPath, 'reload', { payload: { config: {} } })).rejects.toThrow(/does not take "reload" \(only tunroute up does\)/);
  });

  it('stops reading requests while a client does not read its replies', async () => {
    const big = snapshot();
    big.flows = Array.from({ length: 2000 }, (_, i) => ({ ...big.flows[0], id: i }));
    let calls = 0;
    await start({
      snapshot: () => {
        calls++;
        return big;
      },
    });
    const c = rawClient(sockPath);
    c.sock.pause();
    c.sock.write('{"v":1,"cmd":"status"}\n'.repeat(100));
    await new Promise((r) => setTimeout(r, 200));
    // Each reply is ~200 KiB: a few fill the socket buffers, then the server waits.
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThan(20);
    c.sock.resume();
    const lines = await c.next(100);
    expect(calls).toBe(100);
    expect(lines.every((l) => l.startsWith('{"v":1,"ok":true,'))).toBe(true);
    c.sock.destroy();
  });

  it('answers with an error when the snapshot throws, and survives', async () => {
    let fail = true;
    await start({
      snapshot: () => {
        if (fail) throw new Error('boom');
        return snapshot();
      },
    });
    const e = await errorOf(queryControl(sockPath, 'status'));
    expect(isTunrouteError(e) && e.code).toBe('TR_CONTROL');
    expect(e.message).toBe(`The tunroute on control socket ${sockPath} refused "status": internal error while answering "status": boom.`);
    fail = false;
    expect((await queryControl(sockPath, 'status')).version).toBe('0.1.0-test');
  });

  it('closes a connection that stays idle', async () => {
    await start({ idleTimeoutMs: 100 });
    const c = rawClient(sockPath);
    await c.closed;
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it('drops open connections on close', async () => {
    const s = await start();
    const c = rawClient(sockPath);
    await new Promise((r) => c.sock.once('connect', r));
    await s.close();
    await c.closed;
  });
});

describe('one daemon per socket path', () => {
  it('replaces a stale socket left by a crashed daemon', async () => {
    // A daemon that dies by SIGKILL leaves its socket file behind; nothing answers on it.
    mkdirSync(join(dir, 'run'));
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(sockPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((r) => child.once('exit', r));
    expect(lstatSync(sockPath).isSocket()).toBe(true);
    expect((await errorOf(queryControl(sockPath, 'ping'))).message).toMatch(/^No tunroute is running/);

    await start();
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it('refuses to start on a path a live daemon answers on, and leaves that daemon alone', async () => {
    await start();
    const e = await errorOf(startControlServer({ path: sockPath, snapshot, logger: silentLogger() }));
    expect(isTunrouteError(e) && e.code).toBe('TR_CONTROL');
    expect(e.message).toBe(`Another tunroute is running with control socket ${sockPath}: stop it (tunroute down) or give this one another --control path.`);
    expect(await queryControl(sockPath, 'ping')).toEqual({ pid: process.pid });
  });

  it('refuses a path that is some other file, and leaves the file alone', async () => {
    const file = join(dir, 'precious');
    writeFileSync(file, 'data');
    const e = await errorOf(startControlServer({ path: file, snapshot, logger: silentLogger() }));
    expect(e.message).toBe(`${file} exists and is not a socket: remove it, or give another --control path.`);
    expect(existsSync(file)).toBe(true);
  });

  it('refuses a path longer than a unix socket address holds', async () => {
    const long = join(dir, 'x'.repeat(120), 's.sock');
    const e = await errorOf(startControlServer({ path: long, snapshot, logger: silentLogger() }));
    expect(e.message).toMatch(/is \d+ bytes long and Linux allows at most 107: give a shorter --control path\.$/);
  });
});

describe('queryControl errors', () => {
  it('says no tunroute is running when the path does not exist', async () => {
    const e = await errorOf(queryControl(sockPath, 'status'));
    expect(isTunrouteError(e) && e.code).toBe('TR_CONTROL');
    expect(e.message).toBe(`No tunroute is running with control socket ${sockPath}: start one with \`sudo tunroute up\`, or pass the --control path it uses.`);
  });

  it('says when the daemon does not answer in time', async () => {
    mkdirSync(join(dir, 'run'));
    const mute: Server = createServer(() => {});
    await new Promise<void>((r) => mute.listen(sockPath, r));
    try {
      const e = await errorOf(queryControl(sockPath, 'status', { timeoutMs: 100 }));
      expect(e.message).toBe(
        `The tunroute on control socket ${sockPath} did not answer "status" within 100 ms: it may be hung or overloaded; check its logs, or try again with a longer timeout.`,
      );
    } finally {
      mute.close();
    }
  });

  it('says when something other than tunroute answers', async () => {
    mkdirSync(join(dir, 'run'));
    const other: Server = createServer((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n'));
    await new Promise<void>((r) => other.listen(sockPath, r));
    try {
      const e = await errorOf(queryControl(sockPath, 'status'));
      expect(e.message).toMatch(/answered with something that is not a tunroute reply \(not JSON: "SSH-2\.0/);
    } finally {
      other.close();
    }
  });

  it('says when the daemon hangs up without answering', async () => {
    mkdirSync(join(dir, 'run'));
    const rude: Server = createServer((s) => s.end());
    await new Promise<void>((r) => rude.listen(sockPath, r));
    try {
      const e = await errorOf(queryControl(sockPath, 'ping'));
      expect(e.message).toMatch(/closed the connection without answering "ping"/);
    } finally {
      rude.close();
    }
  });

  it.skipIf(process.getuid?.() !== 0)('keeps other users out (socket 0660): they get EACCES', async () => {
    await start();
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'run'), 0o755);
    const child = spawn(
      process.execPath,
      ['-e', `require('net').createConnection(${JSON.stringify(sockPath)}).on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(0) })`],
      { uid: 65534, gid: 65534 },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => child.once('exit', r));
    expect(out.trim()).toBe('EACCES');
  });
});

describe('connectError', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  it.each([
    ['ENOENT', /^No tunroute is running with control socket \/x\.sock: start one with `sudo tunroute up`/],
    ['ECONNREFUSED', /^No tunroute is running with control socket \/x\.sock/],
    ['EACCES', /^The control socket \/x\.sock is for root only \(it lists where every connection goes\), so this needs root: run it with sudo\.$/],
    ['EPERM', /needs root: run it with sudo\.$/],
    ['ENOTSOCK', /^\/x\.sock is not a socket/],
    ['EIO', /^Cannot reach the control socket \/x\.sock \(EIO\)/],
  ])('%s', (code, message) => {
    const e = connectError('/x.sock', err(code));
    expect(e.code).toBe('TR_CONTROL');
    expect(e.message).toMatch(message);
  });
});
