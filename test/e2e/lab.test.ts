/**
 * The lab itself: namespaces, veth, daemons, and above all that nothing is left behind — after
 * destroy, after a test body throws, after the process is interrupted or crashes.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Lab,
  labAvailable,
  runCommand,
  labBytes,
  labBytesSha256,
  startDante,
  startDnsmasq,
  startHttpServer,
  startIperf3,
  startMicrosocks,
  waitForPort,
  type LabProcess,
  type Namespace,
} from '../../tools/lab/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const avail = labAvailable();
if (!avail.ok) console.log(`[e2e/lab] SKIPPED: ${avail.reason}`);

const MB = 1024 * 1024;

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** 'R', 'S', 'Z', ... or undefined when no such process (a zombie still exists). */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** All descendants of pid, from /proc/<pid>/task/<tid>/children. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number): void => {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      let kids: string;
      try {
        kids = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(/\s+/).filter(Boolean).map(Number)) {
        out.push(k);
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

function runCommandHost(argv: string[]): ReturnType<typeof runCommand> {
  return runCommand(argv, { allowFail: true, timeoutMs: 10_000 });
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe.skipIf(!avail.ok)('lab', () => {
  describe('two namespaces joined by veth, with upstream daemons', () => {
    let lab: Lab;
    let client: Namespace;
    let server: Namespace;
    let names: string[] = [];

    beforeAll(async () => {
      lab = await Lab.create();
      client = await lab.addNamespace('client', { tcpTwReuse: true, wideLocalPortRange: true });
      server = await lab.addNamespace('server');
      await lab.link(client, server, { cidrA: '10.99.0.1/24', cidrB: '10.99.0.2/24' });
      names = lab.namespaces().map((n) => n.name);
      await startHttpServer(server, { listen: '10.99.0.2', port: 8080 });
    });

    afterAll(async () => {
      const tmp = lab?.tmpDir;
      await lab?.destroy();
      const left = netnsNames();
      for (const n of names) expect(left).not.toContain(n);
      if (tmp) expect(existsSync(tmp)).toBe(false);
    });

    it('names namespaces tr-<pid36>-<rand>-<role> and veths within 15 characters', () => {
      expect(lab.id).toMatch(new RegExp(`^tr-${process.pid.toString(36)}-[0-9a-z]{4}$`));
      expect(client.name).toBe(`${lab.id}-client`);
      expect(netnsNames()).toEqual(expect.arrayContaining(names));
    });

    it('sets the asked sysctls inside the namespace only', async () => {
      const r = await client.exec(['sysctl', '-n', 'net.ipv4.tcp_tw_reuse', 'net.ipv4.ip_local_port_range', 'net.ipv4.ip_forward']);
      expect(r.stdout.split('\n').map((l) => l.trim().replace(/\s+/g, ' '))).toEqual(['1', '1024 65535', '0', '']);
    });

    it('pings across the veth pair', async () => {
      const r = await client.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '10.99.0.2'], { timeoutMs: 10_000 });
      expect(r.stdout).toMatch(/2 received/);
    });

    it('rejects with the stderr of a failing command, or resolves with allowFail', async () => {
      await expect(client.exec(['ls', '/nonexistent-lab-path'])).rejects.toThrow(/No such file/);
      const r = await client.exec(['sh', '-c', 'echo out; echo err >&2; exit 3'], { allowFail: true });
      expect(r).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n' });
      await expect(client.exec(['sleep', '10'], { timeoutMs: 300 })).rejects.toThrow(/timed out/);
      const cat = await client.exec(['cat'], { input: 'stdin works' });
      expect(cat.stdout).toBe('stdin works');
    });

    it('serves deterministic bytes that labBytesSha256 predicts', async () => {
      const r = await client.sh('set -o pipefail; curl -sS --fail --max-time 10 http://10.99.0.2:8080/bytes/100000 | sha256sum', {
        timeoutMs: 15_000,
      });
      expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(100_000));
      expect(labBytesSha256(100_000)).toBe(createHash('sha256').update(labBytes(100_000)).digest('hex'));
    });

    const fetchVia = async (proxy: string, file: string): Promise<string> => {
      const out = join(lab.tmpDir, file);
      await client.exec(
        ['curl', '-sS', '--fail', '--max-time', '20', '--socks5', proxy, '-o', out, `http://10.99.0.2:8080/bytes/${MB}`],
        { timeoutMs: 30_000 },
      );
      return sha256File(out);
    };

    it('fetches 1 MB through dante (curl --socks5)', async () => {
      await startDante(server, { listen: '10.99.0.2', port: 1080 });
      expect(await fetchVia('10.99.0.2:1080', 'dante.bin')).toBe(labBytesSha256(MB));
    });

    it('fetches through dante with username/password, and refuses a wrong password', async () => {
      await startDante(server, { listen: '10.99.0.2', port: 1081, auth: { user: 'labuser', pass: 's3cret' } });
      expect(await fetchVia('labuser:s3cret@10.99.0.2:1081', 'dante-auth.bin')).toBe(labBytesSha256(MB));
      await expect(fetchVia('labuser:wrong@10.99.0.2:1081', 'dante-bad.bin')).rejects.toThrow();
      // The user exists only for processes in the server namespace.
      expect(readFileSync('/etc/passwd', 'utf8')).not.toMatch(/^labuser:/m);
      const inNs = await server.exec(['getent', 'passwd', 'labuser'], { allowFail: true });
      expect(inNs.stdout).toMatch(/^labuser:/);
    });

    it('fetches 1 MB through microsocks, also with auth', async () => {
      await startMicrosocks(server, { listen: '10.99.0.2', port: 1082 });
      expect(await fetchVia('10.99.0.2:1082', 'micro.bin')).toBe(labBytesSha256(MB));
      await startMicrosocks(server, { listen: '10.99.0.2', port: 1083, user: 'u', pass: 'p' });
      expect(await fetchVia('u:p@10.99.0.2:1083', 'micro-auth.bin')).toBe(labBytesSha256(MB));
    });

    it('uploads through dante and gets the sha256 back', async () => {
      const file = join(lab.tmpDir, 'up.bin');
      const data = labBytes(300_000);
      writeFileSync(file, data);
      const r = await client.exec(
        ['curl', '-sS', '--fail', '--max-time', '20', '--socks5', '10.99.0.2:1080', '--data-binary', `@${file}`, 'http://10.99.0.2:8080/upload'],
        { timeoutMs: 30_000 },
      );
      expect(JSON.parse(r.stdout)).toEqual({ bytes: 300_000, sha256: createHash('sha256').update(data).digest('hex') });
    });

    it('answers DNS from dnsmasq', async () => {
      await startDnsmasq(server, { listen: '10.99.0.2', port: 5353, records: { 'web.lab.test': '10.99.0.2' } });
      const r = await client.exec(['dig', '+short', '+time=2', '+tries=1', '-p', '5353', '@10.99.0.2', 'web.lab.test'], { timeoutMs: 10_000 });
      expect(r.stdout.trim()).toBe('10.99.0.2');
    });

    it('runs an iperf3 test against startIperf3', async () => {
      await startIperf3(server, 5201, { listen: '10.99.0.2' });
      const r = await client.exec(['iperf3', '-c', '10.99.0.2', '-p', '5201', '-n', '20M', '-J'], { timeoutMs: 30_000 });
      const report = JSON.parse(r.stdout) as { end: { sum_received: { bytes: number } } };
      expect(report.end.sum_received.bytes).toBeGreaterThan(10 * MB);
    });

    it('stops a forking daemon (dante) without leaving any worker behind, not even a zombie', async () => {
      const dante = await startDante(server, { listen: '10.99.0.2', port: 1090, workers: 3 });
      await fetchVia('10.99.0.2:1090', 'dante-workers.bin');
      const tree = descendants(dante.pid);
      expect(tree.length).toBeGreaterThan(3);
      const status = await dante.stop();
      expect(status.signal ?? status.code).toBeDefined();
      await new Promise((r) => setTimeout(r, 200));
      expect(tree.map(procState).filter((s) => s !== undefined)).toEqual([]);
    });

    it('waitForLine resolves on output and rejects when the process exits first', async () => {
      const p = server.spawn(['sh', '-c', 'echo starting; sleep 0.2; echo READY 42; exec sleep 30']);
      await expect(p.waitForLine(/READY (\d+)/, 5000)).resolves.toBe('READY 42');
      await p.stop();
      expect(procState(p.pid)).toBeUndefined();
      const q = server.spawn(['sh', '-c', 'echo bye >&2; exit 4']);
      await expect(q.waitForLine(/never/, 5000)).rejects.toThrow(/exited \(code 4\)[\s\S]*bye/);
      const r = server.spawn(['sleep', '30']);
      await expect(r.waitForLine(/x/, 200)).rejects.toThrow(/did not print/);
      // sleep has no SIGTERM handler but is not a PID-namespace init: SIGTERM ends it.
      expect((await r.stop('SIGTERM', 2000)).signal).toBe('SIGTERM');
    });

    it('stop escalates to SIGKILL when the signal is ignored, and logFile gets the output', async () => {
      const logFile = join(lab.tmpDir, 'stubborn.log');
      const p = server.spawn(['sh', '-c', 'trap "" TERM; echo stubborn; exec sleep 30'], { logFile });
      await p.waitForLine(/stubborn/, 5000);
      const t0 = Date.now();
      expect(await p.stop('SIGTERM', 300)).toEqual({ code: null, signal: 'SIGKILL' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      await new Promise((r) => setTimeout(r, 50)); // the log stream flushes on 'close'
      expect(readFileSync(logFile, 'utf8')).toBe('stubborn\n');
      expect(p.output().stdout).toBe('stubborn\n');
    });

    it('waitForPort gives up after its timeout', async () => {
      await expect(waitForPort(client, '10.99.0.2', 9, 300)).rejects.toThrow(/nothing accepted/);
    });
  });

  it('destroy stops daemons and removes namespaces, and is idempotent', async () => {
    const lab = await Lab.create();
    const a = await lab.addNamespace('a');
    const b = await lab.addNamespace('b');
    await lab.link(a, b, { cidrA: '10.98.0.1/30', cidrB: '10.98.0.2/30', mtu: 9000 });
    const mtu = await a.exec(['cat', `/sys/class/net/tr${lab.id.slice(-4)}0a/mtu`]);
    expect(mtu.stdout.trim()).toBe('9000');
    const sleeper = a.spawn(['sleep', '1000']);
    const http = await startHttpServer(b, { port: 8081 });
    await Promise.all([lab.destroy(), lab.destroy()]);
    await lab.destroy();
    expect(sleeper.exited && http.exited).toBe(true);
    expect(procState(sleeper.pid)).toBeUndefined();
    expect(netnsNames()).not.toContain(a.name);
    expect(netnsNames()).not.toContain(b.name);
    await expect(lab.addNamespace('c')).rejects.toThrow(/destroyed/);
  });

  it('a test body that throws still leaves nothing behind', async () => {
    let names: string[] = [];
    let pids: number[] = [];
    const body = async (): Promise<void> => {
      const lab = await Lab.create();
      try {
        const a = await lab.addNamespace('boom');
        const d: LabProcess = a.spawn(['sleep', '1000']);
        names = lab.namespaces().map((n) => n.name);
        pids = [d.pid];
        throw new Error('boom inside the test body');
      } finally {
        await lab.destroy();
      }
    };
    await expect(body()).rejects.toThrow('boom inside the test body');
    expect(names.length).toBe(1);
    for (const n of names) expect(netnsNames()).not.toContain(n);
    for (const p of pids) expect(procState(p)).toBeUndefined();
  });

  describe('scripts/malformed-burst.py --verify (its own TUN, inside a lab namespace)', () => {
    interface VerifyRow {
      unchanged: number;
      rewritten: number;
      missing: number;
      fields_rewritten: string[];
    }
    interface Summary {
      total_sent: number;
      sent: Record<string, number>;
      refused_by_kernel: Record<string, number>;
      kernel_rewrites: Record<string, string>;
      expected_drops: Record<string, number>;
      unpredictable: number;
      verify: Record<string, VerifyRow>;
    }
    const script = resolve(here, '../../scripts/malformed-burst.py');
    let lab: Lab;
    let ns: Namespace;
    const burst = async (mode: string): Promise<Summary> => {
      const args = ['--dst', '10.66.1.7', '--count', '1300', '--seed', '7', '--mode', mode, '--verify'];
      const r = await ns.exec(['python3', script, ...args], { timeoutMs: 30_000 });
      return JSON.parse(r.stdout) as Summary;
    };

    beforeAll(async () => {
      lab = await Lab.create();
      ns = await lab.addNamespace('burst');
    });
    afterAll(async () => {
      await lab?.destroy();
    });

    it('refuses --verify outside a named namespace (it would add a route)', async () => {
      const r = await runCommandHost(['python3', script, '--dst', '10.66.1.7', '--verify']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/only inside a named lab network namespace/);
    });

    it('--mode packet delivers every kind byte for byte', async () => {
      const s = await burst('packet');
      expect(s.total_sent).toBe(1300);
      expect(s.kernel_rewrites).toEqual({});
      for (const [kind, n] of Object.entries(s.sent)) {
        expect(s.verify[kind], kind).toMatchObject({ unchanged: n, rewritten: 0, missing: 0 });
      }
      expect(s.expected_drops.bad_header_checksum).toBe(100);
    });

    it('--mode ip: the kernel repairs exactly the kinds the summary lists, refuses too_short and bad_ihl', async () => {
      const s = await burst('ip');
      expect(Object.keys(s.kernel_rewrites).sort()).toEqual(['bad_header_checksum', 'bad_total_length']);
      expect(s.refused_by_kernel.too_short).toBe(100);
      expect(s.refused_by_kernel.bad_ihl).toBe(100);
      for (const [kind, n] of Object.entries(s.sent)) {
        if (n === 0 || kind === 'random_bytes') continue;
        const row = s.verify[kind];
        if (kind in s.kernel_rewrites) expect(row, kind).toMatchObject({ rewritten: n, missing: 0 });
        else expect(row, kind).toMatchObject({ unchanged: n, missing: 0 });
      }
      // Repaired packets still carry a bad ICMP checksum: they are dropped as that.
      expect(s.expected_drops.bad_icmp_checksum).toBe(300);
      expect(s.expected_drops.bad_header_checksum).toBeUndefined();
    });
  });

  describe('process-level cleanup', () => {
    let dir: string;

    beforeAll(() => {
      // A child Node process cannot import .ts: transpile the two lab modules it needs.
      dir = mkdtempSync(join(tmpdir(), 'tr-labhooks-'));
      writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
      for (const f of ['process', 'netns']) {
        const src = readFileSync(resolve(here, `../../tools/lab/${f}.ts`), 'utf8');
        const out = ts.transpileModule(src, {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        });
        writeFileSync(join(dir, `${f}.js`), out.outputText);
      }
      writeFileSync(
        join(dir, 'runner.js'),
        `import { Lab } from './netns.js';
const mode = process.argv[2];
const lab = await Lab.create({ log: () => {} });
const ns = await lab.addNamespace('hook');
const p = ns.spawn(['sleep', '1000']);
console.log(JSON.stringify({ ns: ns.name, pid: p.pid, tmp: lab.tmpDir }));
if (mode === 'throw') setTimeout(() => { throw new Error('uncaught in runner'); }, 50);
if (mode === 'reject') setTimeout(() => { void Promise.reject(new Error('unhandled in runner')); }, 50);
setInterval(() => {}, 1000);
`,
      );
    });

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const runChild = (mode: string): Promise<{ info: { ns: string; pid: number; tmp: string }; code: number | null; stderr: string }> =>
      new Promise((resolveRun, reject) => {
        const child = spawn(process.execPath, [join(dir, 'runner.js'), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        let info: { ns: string; pid: number; tmp: string } | undefined;
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        child.stdout.on('data', (c: Buffer) => {
          stdout += c.toString();
          if (!info && stdout.includes('\n')) {
            info = JSON.parse(stdout.split('\n')[0] ?? '') as { ns: string; pid: number; tmp: string };
            expect(netnsNames()).toContain(info.ns);
            if (mode === 'SIGTERM' || mode === 'SIGINT') child.kill(mode);
          }
        });
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          if (!info) reject(new Error(`runner printed nothing; stderr: ${stderr}`));
          else resolveRun({ info, code, stderr });
        });
      });

    it.each([
      ['SIGTERM', 143],
      ['SIGINT', 130],
      ['throw', 1],
      ['reject', 1],
    ])('removes the lab and reaps its daemons when the process gets %s', async (mode, exitCode) => {
      const { info, code, stderr } = await runChild(mode);
      expect(code, stderr).toBe(exitCode);
      expect(netnsNames()).not.toContain(info.ns);
      expect(procState(info.pid)).toBeUndefined();
      expect(existsSync(info.tmp)).toBe(false);
      if (mode === 'throw') expect(stderr).toMatch(/uncaught in runner/);
    });
  });
});
