#!/usr/bin/env node
/**
 * The command line: parse, call the app, print. No logic beyond that (see DESIGN.md).
 */
import { Command, InvalidArgumentError, CommanderError } from 'commander';
import { isTunrouteError } from '../errors.js';
import { loadConfig, type FlagValues } from '../config/load.js';
import { DEFAULT_CONTROL_PATH } from '../control/protocol.js';

function intArg(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} needs a whole number, got "${v}".`);
    return Number(v);
  };
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

/** --exclude-uid 1000 or 1000-1999, repeatable. */
function collectUid(v: string, prev: Array<number | [number, number]> | undefined): Array<number | [number, number]> {
  const m = /^(\d+)(?:-(\d+))?$/.exec(v);
  if (!m) throw new InvalidArgumentError(`--exclude-uid needs a user id or a range like 1000-1999, got "${v}".`);
  const uid: number | [number, number] = m[2] === undefined ? Number(m[1]) : [Number(m[1]), Number(m[2])];
  return [...(prev ?? []), uid];
}

function tableArg(v: string): 'auto' | 'main' | number {
  if (v === 'auto' || v === 'main') return v;
  if (/^\d+$/.test(v)) return Number(v);
  throw new InvalidArgumentError(`--table needs auto, main or a table number, got "${v}".`);
}

/** The journal directory: --state-dir, else $TUNROUTE_STATE_DIR, else the config's (default: see resolveStateDir). */
function stateDirOf(flag: string | undefined): string | undefined {
  return flag ?? process.env.TUNROUTE_STATE_DIR;
}

interface UpOptions {
  config?: string;
  tun?: string;
  address?: string;
  mtu?: number;
  route?: string[];
  icmp?: string;
  logLevel?: string;
  proxy?: string;
  /** false with --no-offload; undefined when not given (commander sets true by default, see below). */
  offload?: boolean;
  dns?: string;
  tunnel?: string[];
  dryRun?: boolean;
  control?: string;
  exclude?: string[];
  routeFile?: string[];
  excludeFile?: string[];
  excludeUid?: Array<number | [number, number]>;
  table?: 'auto' | 'main' | number;
  lan?: string;
  /** false with --no-ipv6-guard, --no-watchdog */
  ipv6Guard?: boolean;
  watchdog?: boolean;
  killSwitch?: boolean;
  stateDir?: string;
}

function flagsOf(o: UpOptions): FlagValues {
  return {
    tun: o.tun, address: o.address, mtu: o.mtu, route: o.route, icmp: o.icmp, logLevel: o.logLevel, proxy: o.proxy, control: o.control, dns: o.dns, tunnel: o.tunnel, offload: o.offload === false ? false : undefined,
    exclude: o.exclude, routeFile: o.routeFile, excludeFile: o.excludeFile, excludeUid: o.excludeUid, table: o.table, lan: o.lan,
    ipv6Guard: o.ipv6Guard === false ? false : undefined, watchdog: o.watchdog === false ? false : undefined, killSwitch: o.killSwitch, stateDir: stateDirOf(o.stateDir),
  };
}

/** The route flags `up` and `why` share. */
function routeOptions(cmd: Command): Command {
  return cmd
    .option('--route <cidr>', 'send this CIDR into the device (repeatable); without any, --proxy makes a full tunnel', collect)
    .option('--exclude <cidr>', 'keep this CIDR out of the device (repeatable)', collect)
    .option('--route-file <file>', 'a file of CIDRs to route, one per line, # comments (repeatable)', collect)
    .option('--exclude-file <file>', 'a file of CIDRs to keep out (repeatable)', collect)
    .option('--exclude-uid <uid>', "this user's traffic never enters the device, e.g. a local ssh -D or shadowsocks client (uid or range, repeatable)", collectUid)
    .option('--lan <mode>', "auto: keep the default interface's subnets direct (default); off: tunnel them too")
    .option('--table <table>', 'auto (default), main, or a routing table number for policy routing (default table 7300)', tableArg)
    .option('--state-dir <dir>', 'where the route journal lives (default /run/tunroute, per network namespace; env TUNROUTE_STATE_DIR)');
}

const program = new Command()
  .name('tunroute')
  .description('Userspace VPN / tun2socks router: steer IPv4 CIDRs into a TUN device and carry their traffic.')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

routeOptions(program.command('up'))
  .description('create the TUN device, add its routes, and route packets until SIGINT/SIGTERM')
  .option('-c, --config <file>', 'config file (YAML or JSON); flags override it')
  .option('--proxy <url>', 'carry TCP through this SOCKS5 proxy: socks5://[user:pass@]host:port')
  .option('--tunnel <file>', 'a wg-quick file (wg0.conf): its AllowedIPs go through this WireGuard tunnel (repeatable)', collect)
  .option('--tun <name>', 'TUN device name (default tun0)')
  .option('--address <cidr>', "the device's address (default 198.18.0.1/15)")
  .option('--mtu <n>', 'device MTU (default 1500)', intArg('--mtu'))
  .option('--icmp <mode>', 'answer echo requests routed into the device: reply|drop (default reply)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
  .option('--dns <mode>', 'hijack: answer every DNS query routed into the device through the proxy; off (default)')
  .option('--no-offload', 'plain MTU-sized packets instead of 64 KiB TSO super-packets (slower; for debugging)')
  .option('--no-ipv6-guard', 'full tunnel: let IPv6 bypass the tunnel instead of blocking it')
  .option('--kill-switch', 'if tunroute dies, tunneled destinations stay unreachable until `tunroute down` (fail closed)')
  .option('--no-watchdog', 'no watchdog process (it restores the routes if tunroute dies; use ExecStopPost under systemd)')
  .option('--dry-run', 'print the plan and change nothing')
  .option('--control <path>', `control socket for \`tunroute status\` (default ${DEFAULT_CONTROL_PATH})`)
  .action(async (o: UpOptions) => {
    const config = loadConfig({ file: o.config, flags: flagsOf(o) });
    if (o.dryRun) {
      const { planForHost, describePlan, journalPath, resolveStateDir } = await import('../routes/index.js');
      const { expandTunnels } = await import('../config/tunnels.js');
      const t = await expandTunnels(config);
      process.stdout.write(describePlan(await planForHost(t.config), { journal: journalPath(resolveStateDir(config.stateDir), config.tun.name) }) + '\n' + t.notes.map((n) => `note: ${n}\n`).join(''));
      return;
    }
    const { runUp } = await import('../app.js');
    await runUp(config);
  });

program
  .command('server')
  .description('WireGuard-compatible tunnel server: peers\' TCP/UDP is re-originated from this host (no root needed)')
  .requiredOption('-c, --config <file>', 'server config file (YAML or JSON; see config/server.example.yaml)')
  .option('--control <path>', 'control socket for `tunroute status --control PATH` (default /run/tunroute/server.sock as root, else $XDG_RUNTIME_DIR/tunroute/server.sock)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
  .action(async (o: { config: string; control?: string; logLevel?: string }) => {
    const { loadServerConfig } = await import('../config/server-schema.js');
    const config = loadServerConfig({ file: o.config, flags: { control: o.control, logLevel: o.logLevel } });
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

program
  .command('check')
  .description('validate a config file and print the route plan')
  .requiredOption('-c, --config <file>', 'config file (YAML or JSON)')
  .action(async (o: { config: string }) => {
    const config = loadConfig({ file: o.config });
    const { planForHost, describePlan, journalPath, resolveStateDir } = await import('../routes/index.js');
    const { expandTunnels } = await import('../config/tunnels.js');
    const t = await expandTunnels(config);
    const plan = await planForHost(t.config);
    process.stdout.write(`${o.config}: valid\n` + describePlan(plan, { journal: journalPath(resolveStateDir(config.stateDir), config.tun.name) }) + '\n' + t.notes.map((n) => `note: ${n}\n`).join(''));
  });

program
  .command('down')
  .description('undo the route changes of tunroute (a running one is stopped first), also after a crash; needs no config')
  .option('--state-dir <dir>', 'where the route journal lives (default /run/tunroute, per network namespace; env TUNROUTE_STATE_DIR)')
  .option('--tun <name>', 'only this device (default: every journal in the state dir)')
  .option('--keep-kill-switch', 'leave a kill switch closed (for ExecStopPost: the network stays closed until a plain `down`)')
  .action(async (o: { stateDir?: string; tun?: string; keepKillSwitch?: boolean }) => {
    const { cleanupJournals, describeCleanup, ipBatchRunner, resolveStateDir } = await import('../routes/index.js');
    const { createLogger } = await import('../logger.js');
    const stateDir = resolveStateDir(stateDirOf(o.stateDir));
    const entries = await cleanupJournals({ stateDir, dev: o.tun, runner: ipBatchRunner, log: createLogger('warn'), live: 'stop', keepKillSwitch: o.keepKillSwitch });
    process.stdout.write(describeCleanup(entries, stateDir) + '\n');
  });

routeOptions(
  program
    .command('why')
    .description('does a destination enter the device, by which route, to which outbound (against -c FILE / flags, or the running tunroute)')
    .argument('<destination>', 'ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)')
    .option('-c, --config <file>', 'explain against this config (with the flags below) instead of the running tunroute')
    .option('--proxy <url>', 'as for up')
    .option('--tunnel <file>', 'as for up', collect)
    .option('--tun <name>', 'the device (default tun0, or the only running one)')
    .option('--proto <proto>', 'tcp|udp|icmp (default tcp)')
    .option('--json', 'print the answer as JSON'),
).action(async (dest: string, o: UpOptions & { proto?: string; json?: boolean }) => {
  if (o.proto !== undefined && o.proto !== 'tcp' && o.proto !== 'udp' && o.proto !== 'icmp') {
    throw new InvalidArgumentError(`--proto needs tcp, udp or icmp, got "${o.proto}".`);
  }
  const { parseDestination, whyFromConfig, whyFromJournal, resolveStateDir } = await import('../routes/index.js');
  const { Router } = await import('../router/router.js');
  const d = parseDestination(dest, o.proto as 'tcp' | 'udp' | 'icmp' | undefined);
  const decider = (e: { rules: ConstructorParameters<typeof Router>[0]['rules']; defaultOutbound: string }): InstanceType<typeof Router> =>
    new Router({ rules: e.rules, defaultOutbound: e.defaultOutbound, source: 'rules' });
  const againstConfig = o.config !== undefined || o.proxy !== undefined || o.tunnel !== undefined || o.route !== undefined || o.routeFile !== undefined;
  const { expandTunnels } = await import('../config/tunnels.js');
  const answer = againstConfig
    ? await whyFromConfig((await expandTunnels(loadConfig({ file: o.config, flags: flagsOf(o) }))).config, d, decider)
    : await whyFromJournal(resolveStateDir(stateDirOf(o.stateDir)), o.tun, d, decider);
  process.stdout.write((o.json ? JSON.stringify(answer, null, 2) : answer.text) + '\n');
});

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
      process.stderr.write(`tunroute: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`tunroute: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 70;
  }
}

const code = await main(process.argv);
// `up` keeps running on its own handles and sets the exit code itself when it stops.
if (code !== 0) process.exit(code);
