#!/usr/bin/env node
/**
 * The command line: parse, call the app, print. No logic beyond that (see DESIGN.md).
 */
// First: V8 settings that must precede the allocations of everything below (see the module).
import './v8-flags.js';
import { resolve } from 'node:path';
import { Command, CommanderError } from 'commander';
import { escapeTerminal, isTunrouteError, shown, TunrouteError } from '../errors.js';
import { loadConfig, type FlagValues } from '../config/load.js';
import { DEVICE_FLAGS, ROUTE_FLAGS, SERVER_FLAGS, UPSTREAM_FLAGS } from '../config/flags.js';
import { IFNAME_RE } from '../config/fields.js';
import type { ServerFlagValues } from '../config/server-schema.js';
import { addFlags, intArg } from './flags.js';
import { DEFAULT_CONTROL_PATH } from '../control/protocol.js';
import { createLogger } from '../logger.js';

/** Loading's warnings (a file with a private key that others may read), before the daemon's own logger exists. */
const loadLog = (): ReturnType<typeof createLogger> => createLogger('warn');

/** The journal directory: --state-dir, else $TUNROUTE_STATE_DIR, else the config's (default: see resolveStateDir). */
function stateDirOf(flag: string | undefined): string | undefined {
  return flag ?? process.env.TUNROUTE_STATE_DIR;
}

/** `up`'s options: the config flags of the table, and the command's own. */
type UpOptions = FlagValues & { config?: string; dryRun?: boolean };

/** The flags as loading takes them; the state dir falls back to $TUNROUTE_STATE_DIR. */
function flagsOf(o: UpOptions): FlagValues {
  return { ...o, stateDir: stateDirOf(o.stateDir) };
}

const program = new Command()
  .name('tunroute')
  .description('Userspace VPN / tun2socks router: steer IPv4 CIDRs into a TUN device and carry their traffic.')
  .showHelpAfterError('(run with --help for usage)')
  // Commander quotes flags as typed: their control characters must not reach the terminal.
  .configureOutput({ writeErr: (s) => process.stderr.write(escapeTerminal(s)) })
  .exitOverride();

addFlags(
  addFlags(program.command('up'), ROUTE_FLAGS)
    .description('create the TUN device, add its routes, and route packets until SIGINT/SIGTERM')
    .option('-c, --config <file>', 'config file (YAML or JSON); flags override it'),
  [...UPSTREAM_FLAGS, ...DEVICE_FLAGS],
)
  .option('--dry-run', 'print the plan and change nothing')
  .action(async (o: UpOptions) => {
    const config = loadConfig({ file: o.config, flags: flagsOf(o), log: loadLog() });
    if (o.dryRun) {
      const { planForHost, describePlanLines, journalPath, resolveStateDir } = await import('../routes/index.js');
      const { expandTunnels } = await import('../config/tunnels.js');
      const t = await expandTunnels(config);
      await writeOut(describePlanLines(await planForHost(t.config), { journal: journalPath(resolveStateDir(config.stateDir), config.tun.name) }));
      process.stdout.write(t.notes.map((n) => `note: ${n}\n`).join(''));
      return;
    }
    const { runUp } = await import('../app.js');
    await runUp(config, { file: o.config === undefined ? undefined : resolve(o.config), flags: flagsOf(withoutCommandOptions(o)) });
  });

addFlags(program.command('server'), SERVER_FLAGS)
  .description('WireGuard-compatible tunnel server: peers\' TCP/UDP is re-originated from this host (no root needed)')
  .requiredOption('-c, --config <file>', 'server config file (YAML or JSON; see config/server.example.yaml)')
  .action(async (o: ServerFlagValues & { config: string }) => {
    const { loadServerConfig } = await import('../config/server-schema.js');
    const config = loadServerConfig({ file: o.config, flags: o, log: loadLog() });
    const { runServer } = await import('../server/run.js');
    await runServer(config, { file: o.config });
  });

program
  .command('genkey')
  .description("print a new WireGuard private key (as `wg genkey`)")
  .action(async () => {
    const { genkeyText, worldReadableWarning } = await import('./keys.js');
    const warning = worldReadableWarning();
    if (warning !== undefined) process.stderr.write(warning);
    process.stdout.write(genkeyText());
  });

program
  .command('pubkey')
  .description('read a private key on stdin, print its public key (as `wg pubkey`)')
  .action(async () => {
    const { pubkeyText, readStdin } = await import('./keys.js');
    process.stdout.write(pubkeyText(await readStdin()));
  });

program
  .command('status')
  .description("show the running tunroute's device, counters and busiest flows")
  .option('--json', 'print the full status snapshot as JSON')
  .option('--control <path>', `control socket of the running tunroute (default ${DEFAULT_CONTROL_PATH})`)
  .option('--flows <n>', 'most flows to list (default 20)', intArg('--flows'))
  .action(async (o: { json?: boolean; control?: string; flows?: number }) => {
    const { queryControl, formatStatus } = await import('../control/index.js');
    const s = await queryControl(o.control ?? DEFAULT_CONTROL_PATH, 'status');
    process.stdout.write((o.json ? JSON.stringify(s, null, 2) : formatStatus(s, { maxFlows: o.flows })) + '\n');
  });

/** The config flags alone: `-c` and `--dry-run` are the command's, not the config's. */
function withoutCommandOptions(o: UpOptions): FlagValues {
  const { config: _file, dryRun: _dry, ...flags } = o;
  return flags;
}

program
  .command('reload')
  .description("apply a changed config to the running tunroute without a restart (only the difference; run as root: it reads the files)")
  .option('-c, --config <file>', 'the new config file (default: the one the running tunroute was started with)')
  .option('--control <path>', `control socket of the running tunroute (default ${DEFAULT_CONTROL_PATH})`)
  .action(async (o: { config?: string; control?: string }) => {
    const { queryControl } = await import('../control/index.js');
    const { loadConfigInput } = await import('../config/load.js');
    const { readCidrFiles } = await import('../routes/index.js');
    const path = o.control ?? DEFAULT_CONTROL_PATH;
    const source = await queryControl(path, 'source');
    const file = o.config === undefined ? source.file : resolve(o.config);
    // Relative CIDR file paths start from the running tunroute's directory, as they did at its start.
    process.chdir(source.cwd);
    const { config, input } = loadConfigInput({ file, flags: source.flags, log: loadLog() });
    const files = await readCidrFiles(config);
    const r = await queryControl(path, 'reload', { timeoutMs: 60_000, payload: { config: input, files: Object.fromEntries(files) } });
    process.stdout.write(`${r.summary}\n`);
  });

program
  .command('check')
  .description('validate a config file and print the route plan')
  .requiredOption('-c, --config <file>', 'config file (YAML or JSON)')
  .action(async (o: { config: string }) => {
    const config = loadConfig({ file: o.config, log: loadLog() });
    const { planForHost, describePlanLines, journalPath, resolveStateDir } = await import('../routes/index.js');
    const { expandTunnels } = await import('../config/tunnels.js');
    const t = await expandTunnels(config);
    const plan = await planForHost(t.config);
    process.stdout.write(`${o.config}: valid\n`);
    await writeOut(describePlanLines(plan, { journal: journalPath(resolveStateDir(config.stateDir), config.tun.name) }));
    process.stdout.write(t.notes.map((n) => `note: ${n}\n`).join(''));
  });

program
  .command('down')
  .description('undo the route changes of tunroute (a running one is stopped first), also after a crash; needs no config')
  .option('--state-dir <dir>', 'where the route journal lives (default /run/tunroute, per network namespace; env TUNROUTE_STATE_DIR)')
  .option('--tun <name>', 'only this device (default: every journal in the state dir)')
  .option('--keep-kill-switch', 'leave a kill switch closed (for ExecStopPost: the network stays closed until a plain `down`)')
  .action(async (o: { stateDir?: string; tun?: string; keepKillSwitch?: boolean }) => {
    const { cleanupJournals, describeCleanup, ipBatchRunner, resolveStateDir } = await import('../routes/index.js');
    if (o.tun !== undefined && !IFNAME_RE.test(o.tun)) {
      throw new TunrouteError('TR_BAD_FLAG', `The flag --tun ${shown(o.tun)} is not a valid interface name: use 1–15 letters, digits, "_", "-" or ".", not starting with "-" and not "." or "..".`);
    }
    const stateDir = resolveStateDir(stateDirOf(o.stateDir));
    const entries = await cleanupJournals({ stateDir, dev: o.tun, runner: ipBatchRunner, log: createLogger('warn'), live: 'stop', keepKillSwitch: o.keepKillSwitch });
    process.stdout.write(describeCleanup(entries, stateDir) + '\n');
  });

addFlags(
  addFlags(
    program
      .command('why')
      .description('does a destination enter the device, by which route, to which outbound (against -c FILE / flags, or the running tunroute)'),
    ROUTE_FLAGS,
  )
    .argument('<destination>', 'ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)')
    .option('-c, --config <file>', 'explain against this config (with the flags below) instead of the running tunroute'),
  [...UPSTREAM_FLAGS, DEVICE_FLAGS[0]],
  { '--proxy': 'as for up', '--tunnel': 'as for up', '--tun': 'the device (default tun0, or the only running one)' },
)
  .option('--proto <proto>', 'tcp|udp|icmp (default tcp)')
  .option('--json', 'print the answer as JSON')
  .action(async (dest: string, o: UpOptions & { proto?: string; json?: boolean }) => {
  if (o.proto !== undefined && o.proto !== 'tcp' && o.proto !== 'udp' && o.proto !== 'icmp') {
    // (An InvalidArgumentError thrown here, after parsing, was printed by no one.)
    throw new TunrouteError('TR_BAD_FLAG', `The flag --proto needs tcp, udp or icmp, got ${shown(o.proto)}.`);
  }
  const { parseDestination, whyFromConfig, whyFromJournal, resolveStateDir } = await import('../routes/index.js');
  const { Router } = await import('../router/router.js');
  const d = parseDestination(dest, o.proto);
  const decider = (e: { rules: ConstructorParameters<typeof Router>[0]['rules']; defaultOutbound: string }): InstanceType<typeof Router> =>
    new Router({ rules: e.rules, defaultOutbound: e.defaultOutbound, source: 'rules' });
  const againstConfig = o.config !== undefined || o.proxy !== undefined || o.tunnel !== undefined || o.route !== undefined || o.routeFile !== undefined;
  const { expandTunnels } = await import('../config/tunnels.js');
  const answer = againstConfig
    ? await whyFromConfig((await expandTunnels(loadConfig({ file: o.config, flags: flagsOf(o), log: loadLog() }))).config, d, decider)
    : await whyFromJournal(resolveStateDir(stateDirOf(o.stateDir)), o.tun, d, decider);
  process.stdout.write((o.json ? JSON.stringify(answer, null, 2) : answer.text) + '\n');
});

/**
 * Lines to stdout in chunks, with backpressure: a plan of a million routes is ~2 million lines.
 * A reader that goes away (`| head`) ends the output quietly (EPIPE), as for other CLI tools.
 */
async function writeOut(lines: Iterable<string>): Promise<void> {
  let closed = false;
  let wake: (() => void) | undefined;
  process.stdout.on('error', () => {
    closed = true;
    wake?.();
  });
  let chunk: string[] = [];
  const flush = async (): Promise<void> => {
    const ok = process.stdout.write(chunk.join('\n') + '\n');
    chunk = [];
    if (!ok && !closed) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        process.stdout.once('drain', resolve);
      });
    }
  };
  for (const line of lines) {
    if (closed) return;
    chunk.push(line);
    if (chunk.length >= 4096) await flush();
  }
  if (chunk.length > 0 && !closed) await flush();
}

async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message; help and version are not failures.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : 2;
    }
    if (isTunrouteError(e)) {
      process.stderr.write(`tunroute: ${escapeTerminal(e.message)}\n`);
      return 1;
    }
    process.stderr.write(`tunroute: unexpected error: ${escapeTerminal(e instanceof Error ? (e.stack ?? e.message) : String(e))}\n`);
    return 70;
  }
}

const code = await main(process.argv);
// `up` keeps running on its own handles and sets the exit code itself when it stops.
if (code !== 0) process.exit(code);
