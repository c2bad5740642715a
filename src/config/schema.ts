/**
 * The one schema for the config file and the command-line flags. Flags are mapped onto the same
 * shape (flags.ts holds the table of them) and merged over the file (load.ts), so every value is validated in one place and
 * every error names the field that is wrong.
 */
import { z } from 'zod';
import { isIP } from 'node:net';
import { canonicalDomain } from '../net/domain.js';
import { parseAnyCidr, parseCidr } from '../net/ipv4.js';
import { parseDomainPattern } from '../net/domain-set.js';
import { ifName, logSchema, mtu, parsedText, tcpLimitsSchema, uiSchema, wgKey } from './fields.js';
import { parseEndpoint, parseIpv4Endpoint, type Endpoint } from '../net/endpoint.js';
import { ProxyUrlError, parseWith, type HttpProxyUrl, type ProxyScheme, type ProxyUrl, type Socks5Url } from '../outbound/proxy-url.js';
import { OWN_TEXT } from './issues.js';

/** An IPv4 CIDR, parsed; host bits kept as written (the planner merges, the router refuses them in rules). */
const cidr = parsedText(parseCidr, 'is not an IPv4 CIDR like 10.0.0.0/8');

/** An interface address: the host part matters, so host bits are allowed (198.18.0.1/15). */
const interfaceAddress = cidr.refine((c) => c.prefix < 31, { message: 'needs a prefix of /30 or shorter so the device has room for peers' });

/**
 * A proxy URL of the given schemes, parsed once here. A bad URL is described by the URL parser
 * (the value with its password hidden, the problem and the fix); the error names the flag or field.
 */
function proxyUrlOf<S extends ProxyScheme>(accept: readonly S[]) {
  return z
    .string()
    .min(1)
    .transform((s, ctx): Extract<ProxyUrl, { scheme: S }> => {
      try {
        return parseWith(s, {}, accept);
      } catch (e) {
        if (!(e instanceof ProxyUrlError)) throw e;
        ctx.addIssue({ code: 'custom', message: e.detail, params: { [OWN_TEXT]: true } });
        return z.NEVER;
      }
    });
}

/** `socks5://[user:pass@]host:port` */
const socks5Url = proxyUrlOf(['socks5', 'socks5h']);
/** `http://[user:pass@]host:port`: an HTTP proxy reached by CONNECT. */
const httpProxyUrl = proxyUrlOf(['http']);
/** `--proxy` and `proxy:`: either kind. */
const anyProxyUrl = proxyUrlOf(['socks5', 'socks5h', 'http']);
export type { HttpProxyUrl, ProxyUrl, Socks5Url };

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

/** An interface name, or a glob of one (`*`, `?`): br-*, veth?. */
const ifGlob = z.string().regex(/^(?!-)[A-Za-z0-9_.*?-]{1,15}$/, 'is not an interface name or glob (1–15 letters, digits, "_", "-", ".", "*" or "?")');

/** The first of the two `ip rule` priorities tunroute uses (P: excluded users, P+1: lookup its table). */
export const DEFAULT_RULE_PRIORITY = 7300;
/** The routing table tunroute fills in policy-routing mode. */
export const DEFAULT_ROUTE_TABLE = 7300;

/** A domain pattern (net/domain-set.ts), kept as written: the router parses and explains it. */
const domainPattern = z.string().refine((t) => parseDomainPattern(t).ok, { message: 'is not a domain pattern like corp.example, *.corp.example or =www.corp.example' });

export const routesSchema = z
  .object({
    include: z.array(cidr).default([]),
    exclude: z.array(cidr).default([]),
    /** Files of one CIDR per line (`#` comments); relative paths start from the working directory. */
    includeFiles: z.array(z.string().min(1)).default([]),
    excludeFiles: z.array(z.string().min(1)).default([]),
    /**
     * A split tunnel by domain (dns.mode fakeip): only names these patterns cover (and no
     * exclude covers more specifically) get fake addresses and enter the device; every other
     * name is answered by the system's resolver and goes direct. Without any: every name.
     */
    includeDomains: z.array(domainPattern).default([]),
    excludeDomains: z.array(domainPattern).default([]),
    /** Files of one domain pattern per line (`#` comments). */
    domainFiles: z.array(z.string().min(1)).default([]),
    excludeDomainFiles: z.array(z.string().min(1)).default([]),
    /** Keep the subnets of the default route's interface out of the tunnel ("auto"), or not ("off"). */
    lan: z.enum(['auto', 'off']).default('auto'),
    /**
     * "auto": local container and VM bridges (any bridge; docker0, br-*, virbr*, podman*, cni*,
     * lxcbr*, lxdbr* and host-side veths by name) stay out of the tunnel both ways: their
     * subnets are not routed into the device, and what is forwarded from them keeps the main
     * table (so published container ports answer). "off": treat them like any interface.
     */
    containers: z.enum(['auto', 'off']).default('auto'),
    /** Interfaces (names or globs like br-*) kept out as containers are: their subnets and what they forward. */
    excludeInterfaces: z.array(ifGlob).default([]),
    /**
     * Gateway mode: what is forwarded from these interfaces (names or globs) enters the tunnel
     * like this host's own traffic, also from a container bridge that would be kept out.
     * Needs net.ipv4.ip_forward=1.
     */
    fromInterfaces: z.array(ifGlob).default([]),
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
    /**
     * cgroup v2 paths (relative to the cgroup2 root, e.g. system.slice/sshd.service) whose
     * sockets never enter the tunnel: a service's traffic, children included (see routes/apps.ts).
     */
    excludeCgroups: z
      .array(
        z
          .string()
          .transform((s) => s.replace(/^\/+|\/+$/g, ''))
          .refine((s) => /^[A-Za-z0-9_.@:-]+(\/[A-Za-z0-9_.@:-]+)*$/.test(s) && !s.split('/').some((p) => p === '.' || p === '..'), {
            message: 'is not a cgroup path like system.slice/sshd.service (relative to the cgroup2 root, no "." or "..")',
          }),
      )
      .default([]),
    /**
     * Per-app routing (`tunroute exec`, routes/apps.ts) where policy routing, cgroup v2 and
     * nftables allow it: "on"; "off": none of it (its nat rules turn on connection tracking
     * in the namespace, which a host without a stateful firewall may not want).
     */
    perApp: z.enum(['on', 'off']).default('on'),
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

/** An HTTP proxy reached by CONNECT: TCP only (UDP is refused with ICMP, DNS goes over TCP). */
export const httpOutboundSchema = z
  .object({
    name: outboundName,
    type: z.literal('http'),
    /** http://[user:pass@]host:port (Basic authentication) */
    url: httpProxyUrl,
    /** Deadline for proxy connect + CONNECT reply. */
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
    /**
     * wg-quick's DNS line: with dns.mode hijack or fakeip, names that go through this tunnel are
     * asked of its first IPv4 server, through the tunnel (dns/tunnel-dns.ts). Search domains
     * (wg-quick lists them here too) and IPv6 servers are accepted and not used.
     */
    dns: z.array(z.string().refine((t) => isIP(t) !== 0 || canonicalDomain(t) !== undefined, { message: 'is not an IP address (a DNS server) or a domain name (a search domain)' })).optional(),
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

export const outboundSchema = z.discriminatedUnion('type', [socks5OutboundSchema, httpOutboundSchema, blockOutboundSchema, wireguardOutboundSchema]);

const port = z.number().int().min(0).max(65535);


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
    /**
     * `up` as root: once the device is open and the routes are applied, the process carries
     * packets as this user, keeping only CAP_NET_ADMIN (src/privileges.ts). "root" keeps root.
     * A user that does not exist: root is kept, with a warning naming the fix.
     */
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}\$?$/, 'a user name (lower case letters, digits, _ and -), or root')
      .default('tunroute'),
    control: z
      .object({ socket: z.string().min(1).default('/run/tunroute/tunroute.sock') })
      .strict()
      .default({ socket: '/run/tunroute/tunroute.sock' }),
    /** Shorthand for one outbound named "proxy" (socks5:// or http://) that is also the default. */
    proxy: anyProxyUrl.optional(),
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
     * DNS: `hijack` answers every query to port 53 (UDP or TCP) routed into the device from `upstream`,
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
        /**
         * Route the nameservers of /etc/resolv.conf into the device (a /32 each, even inside
         * the LAN), so the system's queries reach tunroute in a split tunnel too.
         */
        routeSystemResolvers: z.boolean().default(true),
        /**
         * Where names that go direct (a split tunnel by domain) are asked, out of the default
         * route's device; default the first nameserver of /etc/resolv.conf.
         */
        directUpstream: dnsUpstream.optional(),
        /** Split DNS: names of these domains are asked of `server` through `outbound` (default: the one that routes it). */
        servers: z
          .array(
            z
              .object({
                domains: z.array(domainPattern).min(1),
                server: dnsUpstream,
                outbound: outboundName.optional(),
              })
              .strict(),
          )
          .default([]),
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
    const r = c.routes;
    if (c.dns.mode !== 'fakeip' && r.includeDomains.length + r.domainFiles.length + r.excludeDomains.length + r.excludeDomainFiles.length > 0) {
      const field = r.includeDomains.length > 0 ? 'includeDomains' : r.domainFiles.length > 0 ? 'domainFiles' : r.excludeDomains.length > 0 ? 'excludeDomains' : 'excludeDomainFiles';
      ctx.addIssue({ code: 'custom', path: ['routes', field], message: 'routes by domain need dns.mode fakeip (--dns fakeip): only names tunroute answers can be routed by name' });
    }
    c.dns.servers.forEach((srv, i) => {
      if (srv.outbound !== undefined && !names.has(srv.outbound)) {
        ctx.addIssue({ code: 'custom', path: ['dns', 'servers', i, 'outbound'], message: `names no outbound (known: ${[...names].join(', ')})` });
      }
    });
    if (c.defaultOutbound !== undefined && !names.has(c.defaultOutbound)) {
      ctx.addIssue({ code: 'custom', path: ['defaultOutbound'], message: `names no outbound (known: ${[...names].join(', ')})` });
    }
  });

export type Config = z.infer<typeof configSchema>;
/** What a user may write: every field optional, defaults filled by the schema. */
export type ConfigInput = z.input<typeof configSchema>;
