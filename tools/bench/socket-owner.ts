/**
 * The cost of the per-uid share's lookup (native/limits.c, socketOwner: one sock_diag request by
 * the 4-tuple), the figure in the README's Limits section. Opens SOCKETS loopback connections
 * (bounded: at most 5,000) in this network namespace, then looks their owners up LOOKUPS times
 * (bounded: at most 200,000), and as many 4-tuples that have no socket; prints one JSON line
 * with wall and CPU µs per lookup. Loopback only; needs the built addon, not root.
 *
 * Usage: node dist-tools/tools/bench/socket-owner.js [SOCKETS=2000] [LOOKUPS=20000]
 */
import { createServer, connect, type Socket } from 'node:net';
import { socketOwnerLookup } from '../../src/native/limits.js';

const LOOPBACK = 0x7f00_0001;

async function main(): Promise<void> {
  const sockets = Math.min(5000, Math.max(1, Number(process.argv[2] ?? 2000)));
  const lookups = Math.min(200_000, Math.max(1, Number(process.argv[3] ?? 20_000)));
  const owner = socketOwnerLookup();
  if (owner === undefined) throw new Error('the native addon has no socketOwner: build it with `npm run build`');
  const server = createServer((s) => s.on('error', () => {}));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const conns: Socket[] = [];
  try {
    for (let i = 0; i < sockets; i++) {
      conns.push(await new Promise<Socket>((resolve, reject) => {
        const c = connect(port, '127.0.0.1', () => resolve(c));
        c.once('error', reject);
      }));
    }
    const ports = conns.map((c) => c.localPort ?? 0);
    let found = 0;
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < lookups; i++) if (owner(LOOPBACK, ports[i % sockets], LOOPBACK, port) !== undefined) found++;
    const wallHit = Number(process.hrtime.bigint() - t0) / lookups / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuHit = (cpu.user + cpu.system) / lookups;
    const t1 = process.hrtime.bigint();
    // Ports below 1024 on the client side: no such socket.
    for (let i = 0; i < lookups; i++) owner(LOOPBACK, 1 + (i % 1000), LOOPBACK, port);
    const wallMiss = Number(process.hrtime.bigint() - t1) / lookups / 1000;
    process.stdout.write(
      `${JSON.stringify({ sockets, lookups, found, wallUsPerLookup: +wallHit.toFixed(1), cpuUsPerLookup: +cpuHit.toFixed(1), wallUsPerMiss: +wallMiss.toFixed(1) })}\n`,
    );
  } finally {
    for (const c of conns) c.destroy();
    server.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`socket-owner: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
