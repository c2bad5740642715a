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
import { createLogger, LOG_FORMATS, type LogFormat } from '../logger.js';

/**
 * Loading's warnings (a file with a private key that others may read), before the daemon's own
 * logger exists; in the --log-format asked for (a bad one is refused by loading right after).
 */
const loadLog = (format?: string): ReturnType<typeof createLogger> =>
  createLogger('warn', LOG_FORMATS.find((f): f is LogFormat => f === format) ?? 'auto');

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
    const config = loadConfig({ file: o.config, flags: flagsOf(o), log: loadLog(o.logFormat) });
    const { refuseNothingToDo } = await import('../config/work.js');
    refuseNothingToDo(config);
    if (o.dryRun) {
      const { planForHost, describePlanLines, journalPath, resolveStateDir } = await import('../routes/index.js');
      const { expandTunnels } = await import('../config/tunnels.js');
      const t = await expandTunnels(config);
      await writeOut(describePlanLines(await planForHost(t.config), { journal: journalPath(resolveStateDir(config.stateDir), config.tun.name) }));
      process.stdout.write(t.notes.map((n) => `note: ${n}\n`).join(''));
      return;
    }
    const { runUp } = await import('../run-up.js');
    await runUp(config, { file: o.config === undefined ? undefined : resolve(o.config), flags: flagsOf(withoutCommandOptions(o)) });
  });

addFlags(program.command('server'), SERVER_FLAGS)
  .description('WireGuard-compatible tunnel server: peers\' TCP/UDP is re-originated from this host (no root needed)')
  .requiredOption('-c, --config <file>', 'server config file (YAML or JSON; see config/server.example.yaml)')
  .action(async (o: ServerFlagValues & { config: string }) => {
    const { loadServerConfig } = await import('../config/server-schema.js');
    const config = loadServerConfig({ file: o.config, flags: o, log: loadLog(o.logFormat) });
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
  .option('--watch', 'a live view, refreshed every second: rates both ways, busiest flows, drops, tunnels (q quits)')
  .action(async (o: { json?: boolean; control?: string; flows?: number; watch?: boolean }) => {
    if (o.watch) {
      if (o.json) throw new TunrouteError('TR_BAD_FLAG', 'The flags --watch and --json do not go together: use --json alone from scripts (once per call), --watch alone at a terminal.');
      const { watchStatus } = await import('./watch.js');
      return watchStatus({ control: o.control ?? DEFAULT_CONTROL_PATH });
    }
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

program
  .command('verify')
  .description('probe from this host that TCP, DNS and IPv6 take the paths the running tunroute plans (marked probes it counts); one line per leak')
  .option('--control <path>', 'the running tunroute\'s control socket (default /run/tunroute/tunroute.sock)')
  .option('--state-dir <dir>', 'where its route journal lives (default /run/tunroute, per network namespace)')
  .action(async (o: { control?: string; stateDir?: string }) => {
    const { verifyRunning, describeVerify } = await import('../verify.js');
    const { resolveStateDir } = await import('../routes/index.js');
    const checks = await verifyRunning({ control: o.control ?? DEFAULT_CONTROL_PATH, stateDir: resolveStateDir(stateDirOf(o.stateDir)) });
    process.stdout.write(describeVerify(checks) + '\n');
    const leaks = checks.filter((c) => !c.ok).length;
    if (leaks > 0) {
      process.stderr.write(`tunroute: ${leaks} of ${checks.length} probes did not take the planned path (lines marked FAIL): fix what each names, then run verify again.\n`);
      process.exitCode = 1;
    }
  });

program
  .command('exec')
  .description('run a command whose every socket (children included) bypasses the tunnel (--direct) or takes one outbound (--outbound NAME); needs root and a running tunroute')
  .option('--direct', 'bypass the device: the main table\'s routes, as without tunroute')
  .option('--outbound <name>', 'everything through this outbound (a SOCKS5 or HTTP proxy of the running config), whatever the rules say')
  .option('--tun <name>', 'the running tunroute\'s device', 'tun0')
  .option('--state-dir <dir>', 'where the route journal lives (default /run/tunroute, per network namespace; env TUNROUTE_STATE_DIR)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent', 'warn')
  .argument('<command...>', 'the command and its arguments (put -- before it)')
  .action(async (argv: string[], o: { direct?: boolean; outbound?: string; tun: string; stateDir?: string; logLevel: string }) => {
    if (!IFNAME_RE.test(o.tun)) throw new TunrouteError('TR_BAD_FLAG', `The flag --tun ${shown(o.tun)} is not a valid interface name: use 1–15 letters, digits, "_", "-" or ".".`);
    const { resolveStateDir } = await import('../routes/index.js');
    const { runExec } = await import('../run-exec.js');
    const level = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(o.logLevel) ? (o.logLevel as 'warn') : 'warn';
    process.exitCode = await runExec({ stateDir: resolveStateDir(stateDirOf(o.stateDir)), dev: o.tun, outbound: o.outbound, direct: o.direct === true, argv, log: createLogger(level) });
  });

addFlags(
  addFlags(
    program
      .command('why')
      .description('does a destination enter the device, by which route, to which outbound (against -c FILE / flags, or the running tunroute)'),
    ROUTE_FLAGS,
  )
    .argument('<destination>', 'ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT), or NAME or NAME:PORT (with dns.mode fakeip: by name)')
    .option('-c, --config <file>', 'explain against this config (with the flags below) instead of the running tunroute'),
  [...UPSTREAM_FLAGS, DEVICE_FLAGS[0], DEVICE_FLAGS.find((f) => f.flag === '--dns')!],
  { '--proxy': 'as for up', '--tunnel': 'as for up', '--tun': 'the device (default tun0, or the only running one)', '--dns': 'as for up' },
)
  .option('--proto <proto>', 'tcp|udp|icmp (default tcp)')
  .option('--control <path>', `control socket of the running tunroute, asked for its fake-IP table (default ${DEFAULT_CONTROL_PATH})`)
  .option('--json', 'print the answer as JSON')
  .action(async (dest: string, o: UpOptions & { proto?: string; json?: boolean; control?: string }) => {
  if (o.proto !== undefined && o.proto !== 'tcp' && o.proto !== 'udp' && o.proto !== 'icmp') {
    // (An InvalidArgumentError thrown here, after parsing, was printed by no one.)
    throw new TunrouteError('TR_BAD_FLAG', `The flag --proto needs tcp, udp or icmp, got ${shown(o.proto)}.`);
  }
  const r = await import('../routes/index.js');
  const { Router } = await import('../router/router.js');
  const { queryControl } = await import('../control/index.js');
  const decider = (e: { rules: ConstructorParameters<typeof Router>[0]['rules']; defaultOutbound: string }): InstanceType<typeof Router> =>
    new Router({ rules: e.rules, defaultOutbound: e.defaultOutbound, source: 'rules' });
  const againstConfig =
    o.config !== undefined || o.proxy !== undefined || o.tunnel !== undefined || o.route !== undefined || o.routeFile !== undefined || o.routeDomain !== undefined || o.dns !== undefined;
  const { expandTunnels } = await import('../config/tunnels.js');
  // The running tunroute's fake-IP table, if one answers (a config may describe another one: still the best guess).
  const fakeIpEntry = (arg: string): Promise<{ ip?: string; name?: string; inUse?: boolean } | undefined> =>
    queryControl(o.control ?? DEFAULT_CONTROL_PATH, 'fakeip', { arg, timeoutMs: 1000 }).then(
      (x) => (x.enabled ? x : undefined),
      () => undefined,
    );
  // The plan data, once: planned for this host from the config, or the running one's journal.
  const explainData = async (): Promise<{ explain: import('../routes/index.js').ExplainData; prefixes?: import('../net/ipv4.js').Cidr[]; note?: string }> => {
    if (!againstConfig) return r.explainDataFromJournal(r.resolveStateDir(stateDirOf(o.stateDir)), o.tun);
    const plan = await r.planForHost((await expandTunnels(loadConfig({ file: o.config, flags: flagsOf(o), log: loadLog() }))).config);
    return { explain: plan.explain, prefixes: plan.prefixes };
  };
  const byName = r.parseNameDestination(dest, o.proto);
  if (byName !== undefined) {
    const { explain, note } = await explainData();
    if (explain.dns === undefined) throw new TunrouteError('TR_CONTROL', 'The running tunroute is of an older version and keeps no DNS plan: ask about a config with -c FILE.');
    const entry = explain.dns.mode === 'fakeip' ? await fakeIpEntry(byName.name) : undefined;
    const a = r.explainName(explain.dev, explain.dns, byName, decider(explain), entry);
    if (note !== undefined) a.text += `\n${note}`;
    process.stdout.write((o.json ? JSON.stringify(a, null, 2) : a.text) + '\n');
    return;
  }
  const d = r.parseDestination(dest, o.proto);
  const { explain, prefixes, note } = await explainData();
  const kernel = againstConfig ? undefined : await r.hostProbe().routeGet(d.ip);
  const answer = r.explainDestination(explain, d, decider(explain), kernel, prefixes);
  if (note !== undefined) answer.text += `\n${note}`;
  // A fake address: which name it stands for (the running tunroute knows), and that name's way.
  let named: import('../routes/index.js').WhyNameAnswer | undefined;
  const dnsPlan = explain.dns;
  const { parseCidr, ipToU32, cidrContains } = await import('../net/ipv4.js');
  const range = dnsPlan?.fakeIpRange === undefined ? undefined : parseCidr(dnsPlan.fakeIpRange);
  const addr = ipToU32(d.ip);
  if (dnsPlan !== undefined && range !== undefined && addr !== undefined && cidrContains(range, addr)) {
    const entry = await fakeIpEntry(d.ip);
    if (entry?.name === undefined) {
      answer.text += `\n${d.ip} is a fake-IP address (${dnsPlan.fakeIpRange}): ${entry === undefined ? 'no running tunroute answered for the name it stands for' : 'the running tunroute holds no name for it (a flow to it is refused)'}.`;
    } else {
      named = r.explainName(answer.dev, dnsPlan, { name: entry.name, port: d.port, proto: d.proto }, decider(explain), { ip: d.ip, inUse: entry.inUse });
      answer.text += `\n${d.ip} is the fake address of ${entry.name}:\n${named.text}`;
    }
  }
  process.stdout.write((o.json ? JSON.stringify(named === undefined ? answer : { ...answer, name: named }, null, 2) : answer.text) + '\n');
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
      // Nothing to do is a usage mistake (like a missing argument), not a failure to run.
      return e.code === 'TR_NOTHING_TO_DO' ? 2 : 1;
    }
    process.stderr.write(`tunroute: unexpected error: ${escapeTerminal(e instanceof Error ? (e.stack ?? e.message) : String(e))}\n`);
    return 70;
  }
}

const code = await main(process.argv);
// `up` keeps running on its own handles and sets the exit code itself when it stops.
if (code !== 0) process.exit(code);
