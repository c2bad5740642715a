/**
 * A real systemd-resolved inside a lab namespace, touching nothing of the host's.
 *
 * Installing Debian's systemd-resolved would rewrite the host's /etc/resolv.conf, so the lab
 * runs an unpacked copy (`apt-get download systemd-resolved` + `dpkg -x`, scripts/install.sh)
 * in a private mount namespace of the lab namespace:
 *
 *   - /run/systemd is a tmpfs there (resolved writes /run/systemd/resolve/* into it);
 *   - /etc/passwd and /etc/group are bind-mounted copies that add the `systemd-resolve` user
 *     it drops to (no user is created on the host);
 *   - /etc/resolv.conf is the namespace's own (/etc/netns/NS/resolv.conf, bound by
 *     `ip netns exec`), so resolved reads the lab's, not the host's;
 *   - the system bus is a dbus-daemon of the lab's (its socket in the lab's temp dir), found
 *     through DBUS_SYSTEM_BUS_ADDRESS by resolved and resolvectl alike.
 *
 * Everything that must see resolved's files runs in that mount namespace: `argv(cmd)` wraps a
 * command in `nsenter -m` into it, with the bus address and the unpacked resolvectl first on
 * PATH. The namespace, its mounts and the daemons go with the lab.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecOptions, ExecResult, LabProcess } from './process.js';
import { LabError } from './process.js';
import type { Namespace, SpawnOptions } from './netns.js';

/** Where scripts/install.sh unpacks systemd-resolved (env TUNROUTE_LAB_RESOLVED overrides). */
export const LAB_RESOLVED_DIR = process.env.TUNROUTE_LAB_RESOLVED ?? '/var/cache/tunroute-lab/systemd-resolved';

export interface LabResolved {
  readonly proc: LabProcess;
  readonly dbus: LabProcess;
  /** DBUS_SYSTEM_BUS_ADDRESS of the lab's bus. */
  readonly busAddress: string;
  /** The dir holding the unpacked resolvectl. */
  readonly binDir: string;
  /** `cmd` run in resolved's mount namespace, with its bus and resolvectl. */
  argv(cmd: readonly string[]): string[];
  exec(cmd: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  sh(script: string, opts?: ExecOptions): Promise<ExecResult>;
  spawn(cmd: readonly string[], opts?: SpawnOptions): LabProcess;
}

/** Why the lab cannot run resolved here, or undefined when it can. */
export function labResolvedMissing(dir = LAB_RESOLVED_DIR): string | undefined {
  for (const f of ['lib/systemd/systemd-resolved', 'usr/bin/resolvectl']) {
    if (!existsSync(join(dir, f))) return `${join(dir, f)} is missing (scripts/install.sh unpacks systemd-resolved there)`;
  }
  for (const b of ['/usr/bin/dbus-daemon', '/usr/bin/nsenter', '/usr/bin/unshare']) if (!existsSync(b)) return `${b} is missing`;
  return undefined;
}

/**
 * A system uid (and gid) that /etc/passwd and /etc/group do not use, for the lab's
 * systemd-resolve: a system account, as on a real host (tunroute trusts resolved's files only
 * when root or a system account owns them: routes/resolved.ts).
 */
function freeId(passwd: string, group: string): number {
  const used = new Set([...passwd.split('\n'), ...group.split('\n')].map((l) => Number(l.split(':')[2])).filter((n) => Number.isInteger(n)));
  for (let id = 999; id >= 100; id--) if (!used.has(id)) return id;
  throw new LabError('startLabResolved: no free system uid (100-999) for the lab\'s systemd-resolve user');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Start dbus-daemon and systemd-resolved for `ns`; resolves once resolvectl can talk to it. */
export async function startLabResolved(ns: Namespace, opts: { dir?: string } = {}): Promise<LabResolved> {
  const dir = opts.dir ?? LAB_RESOLVED_DIR;
  const missing = labResolvedMissing(dir);
  if (missing !== undefined) throw new LabError(`startLabResolved: ${missing}`);
  const tmp = join(ns.lab.tmpDir, `resolved-${ns.role}`);
  mkdirSync(tmp, { recursive: true, mode: 0o755 });
  // resolved drops to its user before it connects to the bus: it must reach the socket (the
  // lab's dir stays unlistable to others).
  chmodSync(ns.lab.tmpDir, 0o711);
  const passwd = readFileSync('/etc/passwd', 'utf8');
  const group = readFileSync('/etc/group', 'utf8');
  const id = freeId(passwd, group);
  writeFileSync(join(tmp, 'passwd'), `${passwd.trimEnd()}\nsystemd-resolve:x:${id}:${id}:systemd Resolver:/run/systemd/resolve:/usr/sbin/nologin\n`);
  writeFileSync(join(tmp, 'group'), `${group.trimEnd()}\nsystemd-resolve:x:${id}:\n`);
  const socket = join(tmp, 'system_bus_socket');
  const busAddress = `unix:path=${socket}`;
  writeFileSync(
    join(tmp, 'bus.conf'),
    [
      '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">',
      '<busconfig>',
      '  <type>system</type>',
      `  <listen>${busAddress}</listen>`,
      '  <auth>EXTERNAL</auth>',
      '  <policy context="default">',
      '    <allow user="*"/>',
      '    <allow own="*"/>',
      '    <allow send_destination="*"/>',
      '    <allow receive_sender="*"/>',
      '  </policy>',
      '</busconfig>',
      '',
    ].join('\n'),
  );
  // resolved drops to systemd-resolve, and the bus looks up every peer's uid: both see a passwd with it.
  const binds = `mount --bind ${tmp}/passwd /etc/passwd && mount --bind ${tmp}/group /etc/group`;
  // resolved makes /run/systemd/resolve itself (owned by its user); it refuses one of root's.
  writeFileSync(
    join(tmp, 'start.sh'),
    [
      'set -e',
      'mount -t tmpfs -o mode=0755 tmpfs /run/systemd',
      binds,
      `exec ${dir}/lib/systemd/systemd-resolved`,
      '',
    ].join('\n'),
  );
  const dbus = ns.spawn(['unshare', '-m', '--propagation', 'private', 'sh', '-c', `${binds} && exec dbus-daemon --config-file ${tmp}/bus.conf --nofork --nopidfile --print-address`], { name: `dbus-${ns.role}` });
  await dbus.waitForLine(/unix:path=/, 10_000);
  const env = { DBUS_SYSTEM_BUS_ADDRESS: busAddress };
  const proc = ns.spawn(['unshare', '-m', '--propagation', 'private', 'sh', join(tmp, 'start.sh')], { name: `systemd-resolved-${ns.role}`, env });
  const binDir = join(dir, 'usr/bin');
  const argv = (cmd: readonly string[]): string[] => ['nsenter', '-t', String(proc.pid), '-m', '--', 'env', `DBUS_SYSTEM_BUS_ADDRESS=${busAddress}`, `PATH=${binDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`, ...cmd];
  const r: LabResolved = {
    proc,
    dbus,
    busAddress,
    binDir,
    argv,
    exec: (cmd, o) => ns.exec(argv(cmd), o),
    sh: (script, o) => ns.exec(argv(['bash', '-c', script]), o),
    spawn: (cmd, o) => ns.spawn(argv(cmd), o),
  };
  // Ready once it owns its bus name (resolvectl answers) and wrote its files.
  for (let i = 0; ; i++) {
    const st = await r.exec(['resolvectl', 'status'], { allowFail: true, timeoutMs: 5000 });
    const files = await r.exec(['test', '-f', '/run/systemd/resolve/resolv.conf'], { allowFail: true, timeoutMs: 5000 });
    if (st.code === 0 && files.code === 0) break;
    if (i >= 50) throw new LabError(`systemd-resolved in ${ns.name} did not come up: ${st.stderr.trim()}\n${proc.outputTail()}\n${dbus.outputTail()}`);
    await sleep(100);
  }
  return r;
}
