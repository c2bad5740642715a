#!/usr/bin/env node
/**
 * The command line: parse, call the app, print. No logic beyond that (see DESIGN.md).
 */
import { Command, InvalidArgumentError, CommanderError } from 'commander';
import { isTunrouteError } from '../errors.js';
import { loadConfig, type FlagValues } from '../config/load.js';
import { planUp, describePlan } from '../routes/plan.js';
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
  dryRun?: boolean;
  control?: string;
}

function flagsOf(o: UpOptions): FlagValues {
  return { tun: o.tun, address: o.address, mtu: o.mtu, route: o.route, icmp: o.icmp, logLevel: o.logLevel, proxy: o.proxy, control: o.control, offload: o.offload === false ? false : undefined };
}

const program = new Command()
  .name('tunroute')
  .description('Userspace VPN / tun2socks router: steer IPv4 CIDRs into a TUN device and carry their traffic.')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

program
  .command('up')
  .description('create the TUN device, add its routes, and route packets until SIGINT/SIGTERM')
  .option('-c, --config <file>', 'config file (YAML or JSON); flags override it')
  .option('--proxy <url>', 'carry TCP through this SOCKS5 proxy: socks5://[user:pass@]host:port')
  .option('--tun <name>', 'TUN device name (default tun0)')
  .option('--address <cidr>', "the device's address (default 198.18.0.1/15)")
  .option('--mtu <n>', 'device MTU (default 1500)', intArg('--mtu'))
  .option('--route <cidr>', 'send this CIDR into the device (repeatable)', collect)
  .option('--icmp <mode>', 'answer echo requests routed into the device: reply|drop (default reply)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
  .option('--no-offload', 'plain MTU-sized packets instead of 64 KiB TSO super-packets (slower; for debugging)')
  .option('--dry-run', 'print the plan and change nothing')
  .option('--control <path>', `control socket for \`tunroute status\` (default ${DEFAULT_CONTROL_PATH})`)
  .action(async (o: UpOptions) => {
    const config = loadConfig({ file: o.config, flags: flagsOf(o) });
    if (o.dryRun) {
      process.stdout.write(describePlan(planUp(config)) + '\n');
      return;
    }
    const { runUp } = await import('../app.js');
    await runUp(config);
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
  .action((o: { config: string }) => {
    const config = loadConfig({ file: o.config });
    process.stdout.write(`${o.config}: valid\n` + describePlan(planUp(config)) + '\n');
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
