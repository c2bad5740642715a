/**
 * The config of `tunroute server -c FILE`: a WireGuard responder with a list of peers.
 *
 *   listen: "0.0.0.0:51820"        # UDP address:port the peers send to
 *   privateKey: "…"                # or privateKeyFile: /etc/tunroute/server.key (wg genkey)
 *   address: 10.8.0.1/16           # the server's own tunnel address (answers ping) and subnet
 *   mode: userspace                # userspace (default, no root) | tun (root: the kernel forwards)
 *   peers:
 *     - publicKey: "…"
 *       presharedKey: "…"          # optional
 *       allowedIPs: [10.8.0.2/32]
 *   control: {socket: /run/tunroute/server.sock}   # default: see serverControlPath
 *   log: {level: info}
 *
 * Loading follows config/load.ts: YAML or JSON, validated once, and every error names the
 * file, the field, the value and the fix.
 */
import { z } from 'zod';
import { TunrouteError } from '../errors.js';
import { parseKey } from '../wireguard/keys.js';
import { cidrToString, normalizeCidr, parseCidr } from '../net/ipv4.js';
import { parseIpv4Endpoint } from '../net/endpoint.js';
import { ifName, logSchema, mtu, parsedText, tcpLimitsSchema, uiSchema, wgKey, WG_KEY_HINT } from './fields.js';
import { flagsToInput, SERVER_FLAGS, type ConfigTree, type FlagValuesOf } from './flags.js';
import { configError } from './issues.js';
import { readInputFile, SMALL_FILE_MAX_BYTES, warnIfShared } from './input-file.js';
import type { Logger } from '../logger.js';
import { shownPath } from '../errors.js';
import { readConfigFile } from './load.js';

/** Where `tunroute server` run by root listens for `tunroute status --control …` unless told otherwise. */
export const DEFAULT_SERVER_CONTROL_PATH = '/run/tunroute/server.sock';

/**
 * Destinations peers may not reach through the server by default: "this network", the
 * server's own loopback services (a kernel router drops them as martians), and link-local —
 * which on a cloud VM is the instance metadata service (169.254.169.254) and its credentials.
 */
export const DEFAULT_SERVER_DENY = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16'] as const;

/** An IPv4 CIDR, parsed (host bits kept: the server's address is a host in its subnet). */
const cidr = parsedText(parseCidr, 'is not an IPv4 CIDR like 10.8.0.2/32');

/** The UDP address the peers send to. */
const listen = parsedText((s) => parseIpv4Endpoint(s), 'is not an IPv4 ADDRESS:PORT like 0.0.0.0:51820');

export const serverPeerSchema = z
  .object({
    /** A label for logs and `status` (default: the start of the public key). */
    name: z.string().min(1).max(64).optional(),
    publicKey: wgKey,
    presharedKey: wgKey.optional(),
    /** Cryptokey routing: the sources this peer may use, and where replies to them go. */
    allowedIPs: z.array(cidr).min(1, 'is empty: list the tunnel addresses of this peer, like [10.8.0.2/32]'),
  })
  .strict();

export const serverConfigSchema = z
  .object({
    listen: listen.prefault('0.0.0.0:51820'),
    privateKey: wgKey.optional(),
    privateKeyFile: z.string().min(1).optional(),
    address: cidr.refine((c) => c.prefix >= 8, { message: 'needs a prefix of /8 or longer' }),
    /** userspace: terminate and re-originate (no root); tun: a TUN device, the kernel forwards (root). */
    mode: z.enum(['userspace', 'tun']).default('userspace'),
    /** The tunnel MTU: our TCP's MSS is this minus 40. wg-quick's default is 1420. */
    mtu: mtu.default(1420),
    peers: z.array(serverPeerSchema).min(1, 'is empty: add at least one peer with publicKey and allowedIPs'),
    /** Echo requests to the server's own tunnel address: answered, or dropped. */
    icmp: z.enum(['reply', 'drop']).default('reply'),
    /** Destinations peers may not reach through the server (TCP gets RST, UDP ICMP prohibited). */
    deny: z.array(cidr).prefault([...DEFAULT_SERVER_DENY]),
    /**
     * The server host's own addresses and directly connected networks are refused too (read
     * from the kernel, see server/host-networks.ts); these CIDRs re-open parts of them.
     * `deny` still wins over `allow`.
     */
    allow: z.array(cidr).default([]),
    /** mode: tun only: the TUN device the kernel forwards through. */
    tun: z.object({ name: ifName.default('tunroute0') }).strict().default({ name: 'tunroute0' }),
    /** Absent: /run/tunroute/server.sock as root, $XDG_RUNTIME_DIR/tunroute/server.sock otherwise (see serverControlPath). */
    control: z
      .object({ socket: z.string().min(1).optional() })
      .strict()
      .default({}),
    log: logSchema,
    tcp: tcpLimitsSchema,
    /** The dashboard, Clash API and /metrics (off unless ui.listen or --ui). */
    ui: uiSchema,
    udp: z
      .object({
        /** Most concurrent UDP flows; each holds one socket; the least recently active is closed beyond. */
        maxFlows: z.number().int().min(1).max(1_000_000).default(4096),
      })
      .strict()
      .default({ maxFlows: 4096 }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.privateKey === undefined) === (c.privateKeyFile === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['privateKey'],
        message: c.privateKey === undefined ? 'is missing: set privateKey (from `wg genkey`) or privateKeyFile' : 'and privateKeyFile are both set: keep one',
      });
    }
    const keys = new Map<string, number>();
    const owners = new Map<string, number>();
    c.peers.forEach((p, i) => {
      const k = p.publicKey.trim();
      const first = keys.get(k);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['peers', i, 'publicKey'], message: `is the same key as peers[${first}] (list each peer once)` });
      }
      keys.set(k, i);
      p.allowedIPs.forEach((a, j) => {
        const norm = cidrToString(normalizeCidr(a));
        const owner = owners.get(norm);
        if (owner !== undefined && owner !== i) {
          ctx.addIssue({ code: 'custom', path: ['peers', i, 'allowedIPs', j], message: `is already allowed for peers[${owner}] (each range belongs to one peer)` });
        }
        owners.set(norm, i);
      });
    });
  });

export type ServerConfig = z.infer<typeof serverConfigSchema>;
export type ServerConfigInput = z.input<typeof serverConfigSchema>;
export type ServerPeerConfig = z.infer<typeof serverPeerSchema>;

/** What `tunroute server` flags may override (see flags.ts). */
export type ServerFlagValues = FlagValuesOf<typeof SERVER_FLAGS>;

/** Validate an already-read config object (a file's contents, or one built by a program). */
export function parseServerConfig(input: unknown, opts: { file?: string; flags?: ServerFlagValues } = {}): ServerConfig {
  const fromFile: ConfigTree = typeof input === 'object' && input !== null && !Array.isArray(input) ? { ...(input as ConfigTree) } : {};
  const { input: fromFlags, flagOf } = flagsToInput(SERVER_FLAGS, opts.flags ?? {});
  const merged: ConfigTree = { ...fromFile };
  for (const [k, v] of Object.entries(fromFlags)) merged[k] = { ...(merged[k] as ConfigTree | undefined), ...(v as ConfigTree) };
  const r = serverConfigSchema.safeParse(merged);
  if (!r.success) throw configError(r.error, merged, { file: opts.file, noFile: 'The server configuration', flagOf });
  return r.data;
}

/** Read and validate `tunroute server`'s config file. Throws TunrouteError. */
export function loadServerConfig(opts: { file: string; flags?: ServerFlagValues; log?: Pick<Logger, 'warn'> }): ServerConfig {
  return parseServerConfig(readConfigFile(opts.file, opts.log), opts);
}

/** The server's private key: from the config, or read from privateKeyFile (relative to the working directory). */
export function serverPrivateKey(config: ServerConfig, file?: string, log?: Pick<Logger, 'warn'>): Uint8Array {
  if (config.privateKey !== undefined) return parseKey(config.privateKey, 'private key');
  const path = config.privateKeyFile!;
  const { text, mode } = readInputFile(path, {
    what: 'The privateKeyFile',
    via: file ? `named in ${file}` : 'privateKeyFile',
    maxBytes: SMALL_FILE_MAX_BYTES,
    cannot: (code) => `Cannot read privateKeyFile ${shownPath(path)}${file ? ` named in ${file}` : ''} (${code}): check the path and that this user may read it.`,
  });
  warnIfShared(path, mode, log);
  try {
    return parseKey(text, 'private key');
  } catch {
    throw new TunrouteError('TR_BAD_CONFIG', `The privateKeyFile ${shownPath(path)} ${WG_KEY_HINT}: write the output of \`wg genkey\` into it.`);
  }
}

/**
 * The control socket's path: the configured one; else, for root, /run/tunroute/server.sock;
 * else (the unprivileged default mode) $XDG_RUNTIME_DIR/tunroute/server.sock — a directory only
 * this user may enter. Without either, the user must choose one (a guessable path in /tmp could
 * be taken by another user first).
 */
export function serverControlPath(config: ServerConfig, env: { uid: number | undefined; xdgRuntimeDir: string | undefined; file?: string }): string {
  if (config.control.socket !== undefined) return config.control.socket;
  if (env.uid === undefined || env.uid === 0) return DEFAULT_SERVER_CONTROL_PATH;
  if (env.xdgRuntimeDir !== undefined && env.xdgRuntimeDir.startsWith('/')) return `${env.xdgRuntimeDir}/tunroute/server.sock`;
  throw new TunrouteError(
    'TR_CONTROL',
    `As user ${env.uid} the server needs a place for its control socket: set control.socket${env.file === undefined ? '' : ` in ${env.file}`} (or --control PATH) to a path in a directory this user may write.`,
  );
}
