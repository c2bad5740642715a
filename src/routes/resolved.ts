/**
 * systemd-resolved. When /etc/resolv.conf names its stub (127.0.0.53, or 127.0.0.54, its
 * "proxy" stub), apps ask resolved on loopback, and resolved asks its upstream servers over
 * the link it picks per name (its routing domains), from sockets bound to that link
 * (IP_UNICAST_IF), which no route into the device catches. So, with DNS hijacked:
 *
 *   - the upstream servers resolved uses are routed into the device like the nameservers of
 *     /etc/resolv.conf (read from /run/systemd/resolve/resolv.conf, which resolved writes with
 *     every server it knows, from all links);
 *   - the device gets per-link DNS: the link DNS address (linkDnsAddress: in the device's own
 *     subnet, so it enters the device, where every query to port 53 is answered by tunroute),
 *     the routing domain `~.` and default-route yes, so resolved sends every query into the
 *     device (a `~.` link wins over the links without routing domains: resolved.service(8)).
 *     Made with `resolvectl dns/domain/default-route`, as wg-quick does for a tunnel's DNS=.
 *
 * The per-link settings are journaled before they are made (journal.ts `resolved`) and undone
 * with `resolvectl revert DEV` while the link exists. A link that is gone took them with it:
 * resolved forgets a link's settings when the kernel removes the link, and a TUN device that is
 * not persistent vanishes with the process that holds it, kill -9 included. So after a crash
 * there is nothing to revert, and resolved's own files (/run/systemd/resolve/*) are rewritten
 * by resolved as they were.
 *
 * Privileges: resolved grants these D-Bus calls to root and to its own user, and asks polkit
 * about anyone else (CAP_NET_ADMIN does not count: resolved cannot trust capabilities it would
 * read from /proc). So `up` makes them while it is root; after the drop (privileges.ts) its
 * revert at stop is usually refused, which costs nothing: the device, and the settings with it,
 * go when the process exits a moment later. The watchdog (unprivileged too) runs only after
 * tunroute died, when the device is gone. `down` runs as root and reverts a link that still
 * exists.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, lstatSync, openSync } from 'node:fs';
import { readToEnd } from '../config/input-file.js';
import { delimiter, dirname, join } from 'node:path';
import type { Logger } from '../logger.js';
import { u32ToIp, type Cidr } from '../net/ipv4.js';
import { parseResolvConf, RESOLV_CONF_MAX_BYTES, type ResolvConf } from './resolv-conf.js';
import { runTool, type ToolOptions, type ToolResult } from './run-tool.js';
import { dirsFromRoot } from './state-dir.js';

/** The stub addresses resolved answers on (127.0.0.54 passes answers through unchanged). */
export const RESOLVED_STUBS: readonly string[] = ['127.0.0.53', '127.0.0.54'];
/** The file resolved writes with every upstream server it uses (resolved.service(8)). */
export const RESOLVED_UPSTREAMS_FILE = '/run/systemd/resolve/resolv.conf';
/** The routing domain that matches every name. */
export const ROUTE_ALL_DOMAIN = '~.';

/** What the host says about systemd-resolved when /etc/resolv.conf names its stub. */
export interface ResolvedProbe {
  /** The upstreams resolved uses (none when its file could not be read: `why` says why). */
  readonly upstreams: ResolvConf;
  readonly why?: string;
  /** Whether resolvectl is on PATH. */
  readonly resolvectl: boolean;
}

/** The stub /etc/resolv.conf names (its first), or undefined when it names none. */
export function resolvedStubOf(rc: ResolvConf | undefined): string | undefined {
  return rc?.ipv4.find((a) => RESOLVED_STUBS.includes(a));
}

/**
 * The address tunroute gives resolved as the device's DNS server: the first host address of
 * the device's subnet that is not the device's own (198.18.0.2 for the default 198.18.0.1/15).
 * It lies in the subnet the kernel routes into the device, and the relay answers any query to
 * port 53 there. Undefined when the subnet has no room (a /31 or /32 device address).
 */
export function linkDnsAddress(device: Cidr): number | undefined {
  if (device.prefix > 30) return undefined;
  const size = 2 ** (32 - device.prefix);
  const network = device.addr - (device.addr % size);
  const first = network + 1;
  return (first === device.addr ? first + 1 : first) >>> 0;
}

/** linkDnsAddress as text. */
export function linkDnsText(device: Cidr): string | undefined {
  const a = linkDnsAddress(device);
  return a === undefined ? undefined : u32ToIp(a);
}

/** The highest uid of a system account (Debian's SYS_UID_MAX): resolved runs as one. */
const SYSTEM_UID_MAX = 999;

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * A file of the system's own (resolved's upstream list), read only if no ordinary user could
 * have written it: every dir from / down and the file itself owned by root or a system account,
 * none writable by group or others, no symbolic link on the way (the path is a fixed one), a
 * regular file no larger than `maxBytes`. Returns its text, or why it was not read.
 */
export function readSystemFile(path: string, maxBytes: number): { text: string } | { why: string } {
  const trusted = (uid: number): boolean => uid === 0 || (uid > 0 && uid <= SYSTEM_UID_MAX);
  for (const d of dirsFromRoot(dirname(path))) {
    let st;
    try {
      st = lstatSync(d);
    } catch (e) {
      return { why: `${d}: ${(e as NodeJS.ErrnoException).code ?? 'error'}` };
    }
    if (!st.isDirectory()) return { why: `${d} is not a directory` };
    if (!trusted(st.uid)) return { why: `${d} is owned by uid ${st.uid}, not by root or a system account` };
    if ((st.mode & 0o022) !== 0) return { why: `${d} is writable by group or others (mode ${modeText(st.mode)})` };
  }
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    return { why: code === 'ELOOP' ? `${path} is a symbolic link` : code === 'ENOENT' ? `${path} does not exist (is systemd-resolved running?)` : `${path}: ${code}` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { why: `${path} is not a regular file` };
    if (!trusted(st.uid)) return { why: `${path} is owned by uid ${st.uid}, not by root or a system account` };
    if ((st.mode & 0o022) !== 0) return { why: `${path} is writable by group or others (mode ${modeText(st.mode)})` };
    if (st.size > maxBytes) return { why: `${path} is larger than ${maxBytes} bytes` };
    const text = readToEnd(fd, st.size, maxBytes);
    return text === undefined ? { why: `${path} grew while it was read` } : { text };
  } catch (e) {
    return { why: `${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  } finally {
    closeSync(fd);
  }
}

/** The upstream servers resolved uses, from its file (none, and why, when it cannot be trusted). */
export function readResolvedUpstreams(path = RESOLVED_UPSTREAMS_FILE): { upstreams: ResolvConf; why?: string } {
  const r = readSystemFile(path, RESOLV_CONF_MAX_BYTES);
  if ('why' in r) return { upstreams: { ipv4: [], ipv6: [] }, why: r.why };
  const parsed = parseResolvConf(r.text);
  // resolved lists its own stub nowhere, but a foreign file might: a loopback address is no upstream.
  return { upstreams: { ipv4: parsed.ipv4.filter((a) => !a.startsWith('127.')), ipv6: parsed.ipv6 } };
}

/** PATH to find resolvectl on (tests put one first; default the process's), and a deadline. */
export type ResolvectlOptions = ToolOptions;
export type ResolvectlResult = ToolResult;

/** Whether an executable resolvectl is on PATH. */
export function resolvectlOnPath(opts: ResolvectlOptions = {}): boolean {
  const path = opts.path ?? process.env.PATH ?? '';
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, 'resolvectl'), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** Run `resolvectl ARGS`; never rejects (127: not installed). */
export function resolvectl(args: readonly string[], opts: ResolvectlOptions = {}): Promise<ResolvectlResult> {
  return runTool('resolvectl', args, opts);
}

/** The commands that point resolved at the device, in order (also what `--dry-run` shows). */
export function linkDnsCommands(dev: string, dns: string): string[][] {
  return [
    ['dns', dev, dns],
    ['domain', dev, ROUTE_ALL_DOMAIN],
    ['default-route', dev, 'yes'],
  ];
}

/** A command as a person would type it (the `~.` quoted for a shell). */
export function resolvectlCommandText(args: readonly string[]): string {
  return `resolvectl ${args.map((a) => (a === ROUTE_ALL_DOMAIN ? `'${a}'` : a)).join(' ')}`;
}

/**
 * Give the device per-link DNS (the link DNS address, `~.`, default-route yes). True when
 * resolved took all three; otherwise one warning that says what to do.
 */
export async function pointResolvedAtLink(dev: string, dns: string, log: Logger, opts: ResolvectlOptions = {}): Promise<boolean> {
  for (const args of linkDnsCommands(dev, dns)) {
    const r = await resolvectl(args, opts);
    if (r.code !== 0) {
      const why = r.code === 127 ? 'resolvectl is not installed' : (r.stderr.split('\n')[0] ?? '') || `exit ${r.code}`;
      log.warn(
        { dev, dns, command: resolvectlCommandText(args), stderr: r.stderr },
        `systemd-resolved did not take per-link DNS on ${dev} (${why}), so names it sends over other links leave outside the tunnel: check that systemd-resolved runs, then restart tunroute`,
      );
      return false;
    }
  }
  log.info({ dev, dns, domain: ROUTE_ALL_DOMAIN }, `systemd-resolved: every query goes into ${dev} (per-link DNS ${dns}, routing domain ~., default route)`);
  return true;
}

/** Whether network interface `dev` exists in this network namespace (`ip link show`). */
export function linkExists(dev: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['link', 'show', 'dev', dev], { stdio: 'ignore', timeout: 5000 });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}

/**
 * Undo pointResolvedAtLink: `resolvectl revert DEV` while the link exists. A link that is gone
 * took its settings with it (see the module comment): nothing to do.
 */
export async function revertResolvedLink(dev: string, log: Logger, opts: ResolvectlOptions & { exists?: (dev: string) => Promise<boolean> } = {}): Promise<'reverted' | 'gone' | 'failed'> {
  if (!(await (opts.exists ?? linkExists)(dev))) {
    log.debug({ dev }, `systemd-resolved: ${dev} is gone, and its per-link DNS with it`);
    return 'gone';
  }
  const r = await resolvectl(['revert', dev], opts);
  if (r.code === 0) {
    log.debug({ dev }, `systemd-resolved: per-link DNS of ${dev} reverted`);
    return 'reverted';
  }
  // After the privilege drop resolved refuses (polkit): the device goes with the process, and its settings with it.
  log.debug({ dev, code: r.code, stderr: r.stderr }, `systemd-resolved did not revert ${dev}; its per-link DNS goes with the device`);
  return 'failed';
}

/** The per-link DNS servers and domains of one link, as `resolvectl dns DEV` / `domain DEV` print them ("Link 5 (tun0): a b"). */
export function parseResolvectlLinkLine(text: string): string[] {
  const line = text.split('\n').find((l) => /^Link \d+ \([^)]*\):/.test(l));
  if (line === undefined) return [];
  return line.replace(/^Link \d+ \([^)]*\):/, '').trim().split(/\s+/).filter((w) => w !== '');
}
