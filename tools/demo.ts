/**
 * `npm run demo`: tunroute carrying real traffic in a throwaway network namespace, nothing on
 * the host touched. Prints what it does and what tunroute counted. Needs root.
 */
import { CLI_PATH, REPO_ROOT } from './repo-root.js';
import { Lab, labAvailable, labBytesSha256, startDante, startHttpServer, type LabProcess } from './lab/index.js';

const ROOT = `${REPO_ROOT}/`;
const CLI = CLI_PATH;

function say(line = ''): void {
  process.stdout.write(line + '\n');
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

interface Counters {
  link: { rxPackets: number; txPackets: number };
  icmpEchoReplied: number;
  dropped: number;
  drops: Record<string, number>;
  tcp: { flowsTotal: number; bytesUp: number; bytesDown: number };
}

function counters(proc: LabProcess): Counters | undefined {
  for (const line of proc.output().stderr.split('\n')) {
    if (line.includes('"msg":"tunroute stopped; packet counters"')) return JSON.parse(line) as Counters;
  }
  return undefined;
}

async function main(): Promise<number> {
  const avail = labAvailable();
  if (!avail.ok) {
    process.stderr.write(`demo: the lab cannot run here: ${avail.reason}\n`);
    return 1;
  }
  const lab = await Lab.create();
  try {
    const ns = await lab.addNamespace('client');
    const server = await lab.addNamespace('server');
    await lab.link(ns, server, { cidrA: '10.99.0.1/24', cidrB: '10.99.0.2/24' });
    // The "remote" destination lives in the server namespace; only the proxy can reach it.
    await server.exec(['ip', 'addr', 'add', '10.66.1.7/32', 'dev', 'lo']);
    await startDante(server, { listen: '10.99.0.2', port: 1080 });
    await startHttpServer(server, { port: 8080 });
    say(`1. Two fresh network namespaces: a client (${ns.name}) and a server with dante (a SOCKS5`);
    say('   server) on 10.99.0.2:1080 and a web server on 10.66.1.7:8080. The client\'s routing table:');
    const before = (await ns.exec(['ip', '-4', 'route', 'show', 'table', 'all'])).stdout;
    say(indent(before));

    say('\n2. tunroute up --route 10.66.1.0/24 --proxy socks5://10.99.0.2:1080');
    const up = ns.spawn(['node', CLI, 'up', '--route', '10.66.1.0/24', '--proxy', 'socks5://10.99.0.2:1080', '--control', `${lab.tmpDir}/tunroute.sock`], { name: 'tunroute' });
    await up.waitForLine(/"msg":"tunroute is up"/, 15_000);
    say(indent((await ns.exec(['ip', 'route'])).stdout));

    const size = 50 * 1024 * 1024;
    say(`\n3. curl http://10.66.1.7:8080/bytes/${size} — through tun0, tunroute's TCP, and the SOCKS5 proxy:`);
    const t0 = performance.now();
    const curl = await ns.exec(['sh', '-c', `curl -sS http://10.66.1.7:8080/bytes/${size} | sha256sum`], { timeoutMs: 120_000 });
    const secs = (performance.now() - t0) / 1000;
    const got = curl.stdout.trim().split(/\s+/)[0] ?? '';
    const want = labBytesSha256(size);
    say(`    ${size / 1024 / 1024} MiB in ${secs.toFixed(2)} s (${((size * 8) / secs / 1e9).toFixed(2)} Gbit/s, hashing included)`);
    say(`    sha256 ${got}\n    expect ${want}  ${got === want ? 'MATCH' : 'MISMATCH'}`);

    say('\n4. ping -c 3 10.66.1.7 — answered by tunroute itself from tun0:');
    say(indent((await ns.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.66.1.7'])).stdout));

    say('\n5. 2,000 malformed packets written straight into tun0 (random bytes, lying lengths, bad checksums, fragments):');
    const burst = await ns.exec([
      'python3', `${ROOT}scripts/malformed-burst.py`, '--dst', '10.66.1.7', '--count', '2000', '--seed', '7', '--mode', 'packet', '--dev', 'tun0',
    ]);
    const summary = JSON.parse(burst.stdout) as { total_sent: number };
    say(`    sent ${summary.total_sent}; ping still answered: ${(await ns.exec(['ping', '-c', '1', '-W', '2', '10.66.1.7'], { allowFail: true })).code === 0}`);

    say('\n6. SIGTERM: tunroute removes its routes and the device, and logs its counters:');
    await up.stop('SIGTERM', 5000);
    const c = counters(up);
    if (c) {
      say(`    TCP flows: ${c.tcp.flowsTotal}, bytes app→proxy ${c.tcp.bytesUp}, proxy→app ${c.tcp.bytesDown}`);
      say(`    packets read from tun0: ${c.link.rxPackets}, written: ${c.link.txPackets}, echo replies: ${c.icmpEchoReplied}, dropped: ${c.dropped}`);
      const reasons = Object.entries(c.drops).filter(([, n]) => n > 0);
      say(`    dropped by reason: ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}`);
    }
    const after = (await ns.exec(['ip', '-4', 'route', 'show', 'table', 'all'])).stdout;
    say(`    routing table identical to step 1: ${after === before}`);
    if (got !== want) return 1;
    return after === before && c !== undefined ? 0 : 1;
  } finally {
    await lab.destroy();
  }
}

process.exitCode = await main();
