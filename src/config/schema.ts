/**
 * The one schema for the config file and the command-line flags. Flags are mapped onto the same
 * shape (flags.ts holds the table of them) and merged over the file (load.ts), so every value is validated in one place and
 * every error names the field that is wrong.
 */
import { z } from 'zod';
import { parseAnyCidr, parseCidr } from '../net/ipv4.js';
import { parseDomainPattern } from '../net/domain-set.js';
import { ifName, logSchema, mtu, parsedText, tcpLimitsSchema, uiSchema, wgKey } from './fields.js';
import { parseEndpoint, parseIpv4Endpoint, type Endpoint } from '../net/endpoint.js';
import { parseSocks5Url, Socks5UrlError, type Socks5Url } from '../outbound/socks5-url.js';
import { OWN_TEXT } from './issues.js';

/** An IPv4 CIDR, parsed; host bits kept as written (the planner merges, the router refuses them in rules). */
const cidr = parsedText(parseCidr, 'is not an IPv4 CIDR like 10.0.0.0/8');

/** An interface address: the host part matters, so host bits are allowed (198.18.0.1/15). */
const interfaceAddress = cidr.refine((c) => c.prefix < 31, { message: 'needs a prefix of /30 or shorter so the device has room for peers' });

/**
 * `socks5://[user:pass@]host:port`, parsed once here. A bad URL is described by the URL parser
 * (the value with its password hidden, the problem and the fix); the error names the flag or field.
 */
const socks5Url = z
  .string()
  .min(1)
  .transform((s, ctx): Socks5Url => {
    try {
      return parseSocks5Url(s);
    } catch (e) {
      if (!(e instanceof Socks5UrlError)) throw e;
      ctx.addIssue({ code: 'custom', message: e.detail, params: { [OWN_TEXT]: true } });
      return z.NEVER;
    }
  });

/** A WireGuard peer's `HOST:PORT`: an IPv4 address or a name (resolved and pinned by tunnels.ts). */
const peerEndpoint = parsedText((s): Endpoint | undefined => {
  const e = parseEndpoint(s);
  return e?.kind === 'ipv6' ? undefined : e;
}, 'is not an IPv4 HOST:PORT like vpn.example.com:51820');

/** The DNS upstream: an IPv4 address and port 53 unless another is given. */
const dnsUpstream = parsedText((s) => parseIpv4Endpoint(s, 53), 'is not an IPv4 address with an optional port, like 1.1.1.1:53');

export const tunSchema = z
  .object({
    name: ifName.default('tun0'),
    /** 198.18.0.0/15 is reserved for benchmarking (RFC 2544), so it collides with nothing real. */
    address: interfaceAddress.prefault('198.18.0.1/15'),
    mtu: mtu.default(1500),
    /** The default 500 drops ~35% of a burst on this kernel; 5000 does not (FACTS). */
    txqueuelen: z.number().int().min(1).max(1_000_000).default(5000),
    /**
     * Segmentation and checksum offload through the virtio-net header: TCP moves in 64 KiB
     * super-packets between the kernel and tunroute (see README, Performance).
     */
    offload: z.boolean().default(true),
  })
  .strict();

const uid = z.number().int().min(0, 'is not a user id (0 or more)').max(4_294_967_294, 'is not a user id');

/** A routing table of our own: not 0 (unspec), 253 (default), 254 (main) or 255 (local). */
const tableId = z
  .number()
  .int()
  .min(1)
  .max(4_294_967_295)
  .refine((n) => n < 253 || n > 255, { message: 'is a table the kernel reserves (253 default, 254 main, 255 local); pick another number' });

/** The first of the two `ip rule` priorities tunroute uses (P: excluded users, P+1: lookup its table). */
export const DEFAULT_RULE_PRIORITY = 7300;
/** The routing table tunroute fills in policy-routing mode. */
export const DEFAULT_ROUTE_TABLE = 7300;

export const routesSchema = z
  .object({
    include: z.array(cidr).default([]),
    exclude: z.array(cidr).default([]),
    /** Files of one CIDR per line (`#` comments); relative paths start from the working directory. */
    includeFiles: z.array(z.string().min(1)).default([]),
    excludeFiles: z.array(z.string().min(1)).default([]),
    /** Keep the subnets of the default route's interface out of the tunnel ("auto"), or not ("off"). */
    lan: z.enum(['auto', 'off']).default('auto'),
    /**
     * "auto": a full tunnel (or excluded users) uses a table of its own and `ip rule`s; a plain
     * split tunnel adds its routes to the main table (as wg-quick does). "main" or a number
     * forces one or the other.
     */
    table: z.union([z.literal('auto'), z.literal('main'), tableId]).default('auto'),
    priority: z.number().int().min(1).max(32_764, 'must leave room below 32766 (the main table\'s rule)').default(DEFAULT_RULE_PRIORITY),
    /** Users whose traffic never enters the tunnel (a local proxy client such as ssh -D): uid or [first, last]. */
    excludeUids: z
      .array(z.union([uid, z.tuple([uid, uid]).refine(([a, b]) => a <= b, { message: 'is a range whose first uid is above its last' })]))
      .default([]),
    /** Full tunnel only: IPv6 is made unreachable (except link-local and multicast) so it cannot leak. */
    ipv6Guard: z.boolean().default(true),
    /** If tunroute dies, tunneled destinations stay unreachable (fail closed) until `tunroute down`. */
    killSwitch: z.boolean().default(false),
    /** A small separate process that restores the routes if tunroute dies (not with the kill switch). */
    watchdog: z.boolean().default(true),
  })
  .strict();

const outboundName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,32}$/, 'is not a valid outbound name (1–32 letters, digits, "_", "-" or ".")');

export const socks5OutboundSchema = z
  .object({
    name: outboundName,
    type: z.literal('socks5'),
    /** socks5://[user:pass@]host:port */
    url: socks5Url,
    /** Deadline for proxy connect + SOCKS handshake + CONNECT reply. */
    connectTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
  })
  .strict();

export const blockOutboundSchema = z.object({ name: outboundName, type: z.literal('block') }).strict();

/** An allowed IP or tunnel address: IPv4 parsed, IPv6 accepted (and skipped by tunnels.ts). */
const anyCidr = parsedText(parseAnyCidr, 'is not a CIDR like 10.8.0.0/16 (IPv6 entries are accepted and skipped)');

/** A WireGuard tunnel (the fields of a wg-quick file; `--tunnel wg0.conf` imports one, see wg-quick.ts). */
export const wireguardOutboundSchema = z
  .object({
    name: outboundName,
    type: z.literal('wireguard'),
    privateKey: wgKey,
    /** The tunnel address(es) of this machine; the first IPv4 one is the source its packets carry. */
    address: z.union([anyCidr, z.array(anyCidr)]).optional(),
    /** wg-quick's DNS line: reported at start, not applied (tunroute leaves resolv.conf alone). */
    dns: z.array(z.string()).optional(),
    mtu: mtu.default(1420),
    /** UDP port to listen on; absent or 0: any free port. */
    listenPort: z.number().int().min(0).max(65535).optional(),
    peers: z
      .array(
        z
          .object({
            publicKey: wgKey,
            presharedKey: wgKey.optional(),
            endpoint: peerEndpoint.optional(),
            allowedIPs: z.array(anyCidr).default([]),
            persistentKeepalive: z.number().int().min(0).max(65535).optional(),
          })
          .strict(),
      )
      .min(1, 'needs at least one peer'),
  })
  .strict();

export const outboundSchema = z.discriminatedUnion('type', [socks5OutboundSchema, blockOutboundSchema, wireguardOutboundSchema]);

const port = z.number().int().min(0).max(65535);

/** A domain pattern (net/domain-set.ts), kept as written: the router parses and explains it. */
const domainPattern = z.string().refine((t) => parseDomainPattern(t).ok, { message: 'is not a domain pattern like corp.example, *.corp.example or =www.corp.example' });

export const ruleSchema = z
  .object({
    cidrs: z.array(cidr).optional(),
    domains: z.array(domainPattern).min(1).optional(),
    protocol: z.enum(['tcp', 'udp', 'icmp']).optional(),
    ports: z.array(z.union([port, z.tuple([port, port])])).optional(),
    outbound: outboundName,
  })
  .strict();

/** The name `--proxy` gives its outbound, and the built-in outbound that refuses everything. */
export const PROXY_OUTBOUND = 'proxy';
export const BLOCK_OUTBOUND = 'block';

export const configSchema = z
  .object({
    tun: tunSchema.prefault({}),
    routes: routesSchema.prefault({}),
    /** Echo requests to addresses routed into the tun: answered by tunroute, or dropped. */
    icmp: z.enum(['reply', 'drop']).default('reply'),
    log: logSchema,
    /**
     * Where `up` keeps the journal of its route changes, so `down` can undo them after a crash.
     * Default /run/tunroute (/run/tunroute/netns/NAME inside a named network namespace).
     */
    stateDir: z.string().min(1).optional(),
    control: z
      .object({ socket: z.string().min(1).default('/run/tunroute/tunroute.sock') })
      .strict()
      .default({ socket: '/run/tunroute/tunroute.sock' }),
    /** Shorthand for one socks5 outbound named "proxy" that is also the default. */
    proxy: socks5Url.optional(),
    outbounds: z.array(outboundSchema).default([]),
    /** Most specific CIDR wins, then file order; see src/router/router.ts. */
    rules: z.array(ruleSchema).default([]),
    /** Where flows no rule matches go: "proxy" when a proxy is set, else "block". */
    defaultOutbound: outboundName.optional(),
    udp: z
      .object({
        /** Most UDP flows at once; the least recently active is evicted beyond it. */
        maxFlows: z.number().int().min(1).max(1_000_000).default(4096),
        idleTimeoutMs: z.number().int().min(1000).max(3_600_000).default(60_000),
        dnsIdleTimeoutMs: z.number().int().min(1000).max(3_600_000).default(10_000),
      })
      .strict()
      .default({ maxFlows: 4096, idleTimeoutMs: 60_000, dnsIdleTimeoutMs: 10_000 }),
    /** Reassembly of IPv4 fragments read from the device (bounded: the oldest go first). */
    fragments: z
      .object({
        maxBytes: z.number().int().min(65_536).max(256 * 1024 * 1024).default(4 * 1024 * 1024),
        timeoutMs: z.number().int().min(1000).max(120_000).default(30_000),
        maxDatagrams: z.number().int().min(1).max(65_536).default(256),
      })
      .strict()
      .default({ maxBytes: 4 * 1024 * 1024, timeoutMs: 30_000, maxDatagrams: 256 }),
    /**
     * DNS: `hijack` answers every UDP query to port 53 routed into the device from `upstream`,
     * reached through the outbound that routes it (or `outbound`); `fakeip` answers A queries
     * at once with an address from `fakeIpRange` (routed into the device) and carries flows to
     * it by name, the rest as hijack; `off` passes DNS like any UDP.
     */
    dns: z
      .object({
        mode: z.enum(['hijack', 'fakeip', 'off']).default('off'),
        /** The pool of fake addresses (dns/fake-ip.ts): never a real destination. */
        fakeIpRange: cidr.prefault('198.18.0.0/15').refine((c) => c.prefix <= 30, { message: 'needs a prefix of /30 or shorter' }),
        upstream: dnsUpstream.prefault('1.1.1.1:53'),
        outbound: outboundName.optional(),
        cacheMaxEntries: z.number().int().min(0).max(1_000_000).default(1024),
        cacheMaxTtlSec: z.number().int().min(0).max(86_400).default(3600),
      })
      .strict()
      .prefault({}),
    tcp: tcpLimitsSchema,
    /** The dashboard, Clash API and /metrics (off unless ui.listen or --ui). */
    ui: uiSchema,
  })
  .strict()
  .superRefine((c, ctx) => {
    const names = new Set<string>([BLOCK_OUTBOUND]);
    if (c.proxy !== undefined) names.add(PROXY_OUTBOUND);
    c.outbounds.forEach((o, i) => {
      if (names.has(o.name)) {
        ctx.addIssue({ code: 'custom', path: ['outbounds', i, 'name'], message: `is used twice (or clashes with a built-in name)` });
      }
      names.add(o.name);
    });
    c.rules.forEach((r, i) => {
      if (!names.has(r.outbound)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'outbound'], message: `names no outbound (known: ${[...names].join(', ')})` });
      }
    });
    if (c.dns.outbound !== undefined && !names.has(c.dns.outbound)) {
      ctx.addIssue({ code: 'custom', path: ['dns', 'outbound'], message: `names no outbound (known: ${[...names].join(', ')})` });
    }
    if (c.defaultOutbound !== undefined && !names.has(c.defaultOutbound)) {
      ctx.addIssue({ code: 'custom', path: ['defaultOutbound'], message: `names no outbound (known: ${[...names].join(', ')})` });
    }
  });

export type Config = z.infer<typeof configSchema>;
/** What a user may write: every field optional, defaults filled by the schema. */
export type ConfigInput = z.input<typeof configSchema>;
