/**
 * The flags that set config fields, in one table: the command line (cli/flags.ts) builds its
 * commander options from it, loading maps the values onto the config's shape with it, and an
 * error about a field names the flag that set it. A flag is declared here once.
 *
 * A flag's value key is commander's: `--route-file` → `routeFile`, `--no-watchdog` → `watchdog`.
 */
import { DEFAULT_UI_LISTEN } from './fields.js';

/**
 * How a flag's text becomes a value:
 * - `text`: as typed; `int`: a whole number; `list`: repeatable, collected in order;
 * - `uids`: repeatable uid or uid range (1000 or 1000-1999); `table`: auto, main or a number;
 * - `on`: a switch that sets true; `off`: a `--no-…` switch that sets false (absent: the file decides);
 * - `opt`: a switch with an optional value (`--ui` or `--ui 127.0.0.1:9091`): bare, it sets `bare`.
 */
export type FlagKind = 'text' | 'int' | 'list' | 'uids' | 'table' | 'on' | 'off' | 'opt';

export interface FlagSpec {
  /** `--route`, `--no-offload`. */
  readonly flag: string;
  /** The placeholder in help: `<cidr>` (none for switches). */
  readonly arg?: string;
  /** The config field it sets, dotted (`routes.include`); none for a flag loading handles itself (`--tunnel`). */
  readonly field?: string;
  readonly kind: FlagKind;
  readonly help: string;
  /** Appended to the help as "(default …)". */
  readonly defaultText?: string;
  /** kind `opt`: the value a bare flag sets. */
  readonly bare?: string;
}

/** The dashboard flag `up` and `server` share (src/api/). */
export const UI_FLAG = {
  flag: '--ui',
  arg: '[addr]',
  field: 'ui.listen',
  kind: 'opt',
  bare: DEFAULT_UI_LISTEN,
  help: 'serve the dashboard, the Clash API and /metrics on this address (loopback unless ui.allowRemote; secret: ui.secret or generated into the state dir)',
  defaultText: '127.0.0.1:9090 when given bare; off without it',
} as const satisfies FlagSpec;

/** The route flags `up` and `why` share. */
export const ROUTE_FLAGS = [
  { flag: '--route', arg: '<cidr>', field: 'routes.include', kind: 'list', help: 'send this CIDR into the device (repeatable); without any, --proxy makes a full tunnel' },
  { flag: '--exclude', arg: '<cidr>', field: 'routes.exclude', kind: 'list', help: 'keep this CIDR out of the device (repeatable)' },
  { flag: '--route-file', arg: '<file>', field: 'routes.includeFiles', kind: 'list', help: 'a file of CIDRs to route, one per line, # comments (repeatable)' },
  { flag: '--exclude-file', arg: '<file>', field: 'routes.excludeFiles', kind: 'list', help: 'a file of CIDRs to keep out (repeatable)' },
  { flag: '--route-domain', arg: '<name>', field: 'routes.includeDomains', kind: 'list', help: 'with --dns fakeip: only names under NAME (and *.NAME / =NAME forms) enter the device; the rest resolve and go direct (repeatable)' },
  { flag: '--exclude-domain', arg: '<name>', field: 'routes.excludeDomains', kind: 'list', help: 'with --dns fakeip: names under NAME stay direct (most specific wins; repeatable)' },
  { flag: '--route-domain-file', arg: '<file>', field: 'routes.domainFiles', kind: 'list', help: 'a file of domain names to route, one per line, # comments (repeatable)' },
  { flag: '--exclude-domain-file', arg: '<file>', field: 'routes.excludeDomainFiles', kind: 'list', help: 'a file of domain names to keep direct (repeatable)' },
  { flag: '--exclude-uid', arg: '<uid>', field: 'routes.excludeUids', kind: 'uids', help: "this user's traffic never enters the device, e.g. a local ssh -D or shadowsocks client (uid or range, repeatable)" },
  { flag: '--exclude-interface', arg: '<name>', field: 'routes.excludeInterfaces', kind: 'list', help: 'keep this interface (name or glob, e.g. br-*) out of the device both ways, as container bridges are by default (repeatable)' },
  { flag: '--from-interface', arg: '<name>', field: 'routes.fromInterfaces', kind: 'list', help: 'gateway mode: traffic forwarded from this interface (name or glob) enters the device too (repeatable)' },
  { flag: '--lan', arg: '<mode>', field: 'routes.lan', kind: 'text', help: "auto: keep the default interface's subnets direct (default); off: tunnel them too" },
  { flag: '--table', arg: '<table>', field: 'routes.table', kind: 'table', help: 'auto (default), main, or a routing table number for policy routing (default table 7300)' },
  { flag: '--state-dir', arg: '<dir>', field: 'stateDir', kind: 'text', help: 'where the route journal lives (default /run/tunroute, per network namespace; env TUNROUTE_STATE_DIR)' },
] as const satisfies readonly FlagSpec[];

/** The upstream flags `up` and `why` share. */
export const UPSTREAM_FLAGS = [
  { flag: '--proxy', arg: '<url>', field: 'proxy', kind: 'text', help: 'carry TCP through this proxy: socks5://[user:pass@]host:port, or http://[user:pass@]host:port (HTTP CONNECT, TCP only)' },
  { flag: '--tunnel', arg: '<file>', kind: 'list', help: 'a wg-quick file (wg0.conf): its AllowedIPs go through this WireGuard tunnel (repeatable)' },
] as const satisfies readonly FlagSpec[];

/** `up`'s device, DNS, logging and safety flags. */
export const DEVICE_FLAGS = [
  { flag: '--tun', arg: '<name>', field: 'tun.name', kind: 'text', help: 'TUN device name', defaultText: 'tun0' },
  { flag: '--address', arg: '<cidr>', field: 'tun.address', kind: 'text', help: "the device's address", defaultText: '198.18.0.1/15' },
  { flag: '--mtu', arg: '<n>', field: 'tun.mtu', kind: 'int', help: 'device MTU', defaultText: '1500' },
  { flag: '--icmp', arg: '<mode>', field: 'icmp', kind: 'text', help: 'answer echo requests routed into the device: reply|drop', defaultText: 'reply' },
  { flag: '--log-level', arg: '<level>', field: 'log.level', kind: 'text', help: 'fatal|error|warn|info|debug|trace|silent', defaultText: 'info' },
  { flag: '--log-format', arg: '<format>', field: 'log.format', kind: 'text', help: 'auto: readable lines when stderr is a terminal, else JSON lines; json; pretty', defaultText: 'auto' },
  { flag: '--dns', arg: '<mode>', field: 'dns.mode', kind: 'text', help: 'hijack: answer every DNS query routed into the device through the proxy; fakeip: answer names with addresses from dns.fakeIpRange and carry their flows by name (the proxy resolves); off (default)' },
  { flag: '--no-offload', field: 'tun.offload', kind: 'off', help: 'plain MTU-sized packets instead of 64 KiB TSO super-packets (slower; for debugging)' },
  { flag: '--no-ipv6-guard', field: 'routes.ipv6Guard', kind: 'off', help: 'full tunnel: let IPv6 bypass the tunnel instead of blocking it' },
  { flag: '--kill-switch', field: 'routes.killSwitch', kind: 'on', help: 'if tunroute dies, tunneled destinations stay unreachable until `tunroute down` (fail closed)' },
  { flag: '--no-watchdog', field: 'routes.watchdog', kind: 'off', help: 'no watchdog process (it restores the routes if tunroute dies; use ExecStopPost under systemd)' },
  { flag: '--control', arg: '<path>', field: 'control.socket', kind: 'text', help: 'control socket for `tunroute status`', defaultText: '/run/tunroute/tunroute.sock' },
  { flag: '--user', arg: '<name>', field: 'user', kind: 'text', help: 'once the device is open and the routes are applied, handle packets as this user with CAP_NET_ADMIN only; root: keep root', defaultText: 'tunroute' },
  UI_FLAG,
] as const satisfies readonly FlagSpec[];

/** Every flag of `up` that sets the config. */
export const UP_FLAGS = [...ROUTE_FLAGS, ...UPSTREAM_FLAGS, ...DEVICE_FLAGS] as const;

/** `tunroute server`'s flags. */
export const SERVER_FLAGS = [
  {
    flag: '--control',
    arg: '<path>',
    field: 'control.socket',
    kind: 'text',
    help: 'control socket for `tunroute status --control PATH`',
    defaultText: '/run/tunroute/server.sock as root, else $XDG_RUNTIME_DIR/tunroute/server.sock',
  },
  { flag: '--log-level', arg: '<level>', field: 'log.level', kind: 'text', help: 'fatal|error|warn|info|debug|trace|silent', defaultText: 'info' },
  { flag: '--log-format', arg: '<format>', field: 'log.format', kind: 'text', help: 'auto: readable lines when stderr is a terminal, else JSON lines; json; pretty', defaultText: 'auto' },
  UI_FLAG,
] as const satisfies readonly FlagSpec[];

type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;

/** The value key of a flag, as commander names it: `--no-ipv6-guard` → `ipv6Guard`. */
export type FlagKey<F extends string> = F extends `--no-${infer R}` ? Camel<R> : F extends `--${infer R}` ? Camel<R> : never;

type ValueOfKind<K extends FlagKind> = K extends 'int'
  ? number
  : K extends 'list'
    ? string[]
    : K extends 'uids'
      ? Array<number | [number, number]>
      : K extends 'table'
        ? 'auto' | 'main' | number
        : K extends 'on' | 'off'
          ? boolean
          : K extends 'opt'
            ? string | boolean
            : string;

/** The values of a flag table, keyed as commander keys them. */
export type FlagValuesOf<T extends readonly FlagSpec[]> = { [S in T[number] as FlagKey<S['flag']>]?: ValueOfKind<S['kind']> };

/** The key a flag's value has in the values object. */
export function flagKey(flag: string): string {
  return flag.replace(/^--(no-)?/, '').replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** The help line: the text and, if the table gives one, the default. */
export function flagHelp(spec: FlagSpec): string {
  return spec.defaultText === undefined ? spec.help : `${spec.help} (default ${spec.defaultText})`;
}

/** A plain config tree, as read from YAML or JSON. */
export type ConfigTree = { [k: string]: unknown };

function setPath(obj: ConfigTree, path: string, value: unknown): void {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    const next = cur[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[k] = {};
    cur = cur[k] as ConfigTree;
  }
  cur[keys[keys.length - 1]] = value;
}

/**
 * The given flags in the config's shape, and which fields they set (so an error can name the
 * flag instead of the file). A `--no-…` switch counts only when given (commander's default for
 * it is true, which must not override the file).
 */
export function flagsToInput(table: readonly FlagSpec[], values: object): { input: ConfigTree; flagOf: (field: string) => string | undefined } {
  const input: ConfigTree = {};
  const given = new Map<string, string>();
  const v = values as Record<string, unknown>;
  for (const spec of table) {
    if (spec.field === undefined) continue;
    const value = v[flagKey(spec.flag)];
    if (value === undefined || (spec.kind === 'off' && value !== false)) continue;
    setPath(input, spec.field, spec.kind === 'opt' && value === true ? spec.bare : value);
    given.set(spec.field, spec.flag);
  }
  return { input, flagOf: (field) => given.get(field) };
}
