/**
 * `npm run demo`: tunroute carrying real traffic in a throwaway network namespace, nothing on
 * the host touched. Prints what it does and what tunroute counted. Needs root.
 */
import { fileURLToPath } from 'node:url';
import { Lab, labAvailable, type LabProcess } from './lab/index.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = `${ROOT}dist/cli/main.js`;

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
    const ns = await lab.addNamespace('demo');
    say(`1. A fresh network namespace (${ns.name}); its routing table:`);
    const before = (await ns.exec(['ip', 'route', 'show', 'table', 'all'])).stdout;
    say(indent(before || '(empty)'));

    say('\n2. tunroute up --route 10.66.1.0/24');
    const up = ns.spawn(['node', CLI, 'up', '--route', '10.66.1.0/24'], { name: 'tunroute' });
    await up.waitForLine(/"msg":"tunroute is up"/, 15_000);
    say(indent((await ns.exec(['ip', 'route'])).stdout));

    say('\n3. ping -c 5 10.66.1.7 — the address exists nowhere; tunroute answers from tun0:');
    say(indent((await ns.exec(['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.66.1.7'])).stdout));

    say('\n4. 2,000 malformed packets written straight into tun0 (random bytes, lying lengths, bad checksums, fragments):');
    const burst = await ns.exec([
      'python3', `${ROOT}scripts/malformed-burst.py`, '--dst', '10.66.1.7', '--count', '2000', '--seed', '7', '--mode', 'packet', '--dev', 'tun0',
    ]);
    const summary = JSON.parse(burst.stdout) as { total_sent: number };
    say(`    sent ${summary.total_sent}; ping still answered: ${(await ns.exec(['ping', '-c', '1', '-W', '2', '10.66.1.7'])).code === 0}`);

    say('\n5. SIGTERM: tunroute removes its routes and the device, and logs its counters:');
    await up.stop('SIGTERM', 5000);
    const c = counters(up);
    if (c) {
      say(`    packets read from tun0: ${c.link.rxPackets}, written: ${c.link.txPackets}, echo replies: ${c.icmpEchoReplied}, dropped: ${c.dropped}`);
      const reasons = Object.entries(c.drops).filter(([, n]) => n > 0);
      say(`    dropped by reason: ${reasons.map(([r, n]) => `${r} ${n}`).join(', ')}`);
    }
    const after = (await ns.exec(['ip', 'route', 'show', 'table', 'all'])).stdout;
    say(`    routing table identical to step 1: ${after === before}`);
    return after === before && c !== undefined ? 0 : 1;
  } finally {
    await lab.destroy();
  }
}

process.exitCode = await main();
