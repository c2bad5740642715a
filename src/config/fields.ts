/**
 * Field schemas that `up`'s config (schema.ts) and the server's (server-schema.ts) share, so a
 * value means, and is refused with, the same words in both.
 */
import { z } from 'zod';
import { LOG_FORMATS, LOG_LEVELS } from '../logger.js';
import { parseKey } from '../wireguard/keys.js';
import { parseIpv4Endpoint } from '../net/endpoint.js';

/**
 * A text field that the schema parses into a value, so nothing after loading parses it again;
 * text `parse` refuses is the field's error, worded by `message` ("is not an IPv4 CIDR like …").
 */
export function parsedText<T>(parse: (s: string) => T | undefined, message: string) {
  return z.string().transform((s, ctx): T => {
    const v = parse(s);
    if (v !== undefined) return v;
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  });
}

export const WG_KEY_HINT = 'is not a WireGuard key (44 base64 characters as printed by `wg genkey` or `wg pubkey`)';

/** Whether `s` is a key in wg's format. */
export function isWgKey(s: string): boolean {
  try {
    parseKey(s);
    return true;
  } catch {
    return false;
  }
}

/** A WireGuard key as `wg genkey` / `wg pubkey` print it (kept as text: errors never show it). */
export const wgKey = z.string().refine(isWgKey, { message: WG_KEY_HINT });

/**
 * A network interface name: what the kernel accepts (at most IFNAMSIZ - 1 = 15 bytes, no "/",
 * no whitespace, not "." or ".."), narrowed to letters, digits, "_", "-" and ".", and never
 * starting with "-" (the name is passed to `ip` as an argument, where it would read as an option).
 */
export const IFNAME_RE = /^(?!-)(?!\.\.?$)[A-Za-z0-9_.-]{1,15}$/;

/** A network interface name as the kernel accepts it (see IFNAME_RE). */
export const ifName = z
  .string()
  .regex(IFNAME_RE, 'is not a valid interface name: use 1–15 letters, digits, "_", "-" or ".", not starting with "-" and not "." or ".."');

/** A link or tunnel MTU. */
export const mtu = z.number().int().min(576, 'must be at least 576 (the IPv4 minimum)').max(65535, 'must be at most 65535');

export const logSchema = z
  .object({
    level: z.enum(LOG_LEVELS).default('info'),
    /** auto: readable lines on a terminal, JSON lines otherwise (see logger.ts). */
    format: z.enum(LOG_FORMATS).default('auto'),
  })
  .strict()
  .default({ level: 'info', format: 'auto' });

/** The terminating TCP stack's limits. */
export const tcpLimitsSchema = z
  .object({
    /** Most concurrent TCP flows; each holds one socket of this host (open-file limit!). */
    maxFlows: z.number().int().min(1).max(1_000_000).default(16_000),
    /** Per-flow buffer each way; also the largest window we advertise. */
    bufferBytes: z.number().int().min(16 * 1024).max(64 * 1024 * 1024).default(1024 * 1024),
    /** What all flows' buffers may add up to: many flows share it, a few get bufferBytes each. */
    memoryBytes: z.number().int().min(1024 * 1024).max(64 * 1024 * 1024 * 1024).default(256 * 1024 * 1024),
    /**
     * Most TCP flows one local user (the uid owning the app's socket) may hold; 0: no share.
     * Default: half of maxFlows (as derived from the open-file limit).
     */
    perUidFlows: z.number().int().min(0).max(1_000_000).optional(),
  })
  .strict()
  .default({ maxFlows: 16_000, bufferBytes: 1024 * 1024, memoryBytes: 256 * 1024 * 1024 });

/** Where `--ui` with no address listens: loopback only, the port Clash dashboards expect. */
export const DEFAULT_UI_LISTEN = '127.0.0.1:9090';

/** 127.0.0.0/8: the only addresses the dashboard listens on unless ui.allowRemote says otherwise. */
function isLoopbackIpv4(addr: number): boolean {
  return addr >>> 24 === 127;
}

/**
 * The dashboard, Clash API and /metrics listener (src/api/). Absent `listen`: off, and nothing
 * of it is loaded. Everything it serves needs the secret; a non-loopback address needs
 * `allowRemote: true` too, since the page lists every flow of the host.
 */
export const uiSchema = z
  .object({
    listen: parsedText((s) => parseIpv4Endpoint(s), `is not an IPv4 address and port like ${DEFAULT_UI_LISTEN}`).optional(),
    allowRemote: z.boolean().default(false),
    /** Absent: one is generated on first use and kept (0600) in the state dir. */
    secret: z.string().min(8, 'is too short: use at least 8 characters (or leave it out and let tunroute generate one)').optional(),
    /** Origins allowed to call the API from a browser page they serve (CORS); none by default. */
    allowOrigins: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'is not an origin like http://127.0.0.1:9090')).default([]),
  })
  .strict()
  .refine((u) => u.listen === undefined || u.allowRemote || isLoopbackIpv4(u.listen.addr), {
    message: 'listens on a non-loopback address, which would show every flow of this host to the network: set ui.allowRemote: true to mean it, or listen on 127.0.0.1',
    path: ['listen'],
  })
  .prefault({});

export type UiConfig = z.infer<typeof uiSchema>;
