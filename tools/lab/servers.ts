/**
 * Starters for the lab's upstream programs. Each writes what it needs into the lab's temp dir,
 * starts the program inside a namespace as a tracked LabProcess, and resolves only once the
 * program is ready (accepting connections or having said so); if it dies first, the error
 * carries its output. Binaries are looked up on PATH (plus the sbin dirs); a missing one fails
 * with the apt package that provides it.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIPv4, waitForPort, type Namespace } from './netns.js';
import { LabError, runCommand, type LabProcess } from './process.js';

/** Absolute path of `name`, or a LabError naming the apt package that provides it. */
export function requireBinary(name: string, aptPackage: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // Next dir.
    }
  }
  throw new LabError(`${name} is not installed (not on PATH): apt-get install -y ${aptPackage}`);
}

function checkListen(what: string, ip: string): void {
  if (!isIPv4(ip)) throw new LabError(`${what}: listen address must be an IPv4 address, got ${JSON.stringify(ip)}`);
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new LabError(`${what}: bad port ${port}`);
}

/**
 * Resolve when `ready` does; if the process exits first, reject with its output (and the tail
 * of `logFile`, for daemons that log to a file), and stop it if readiness fails otherwise.
 */
export async function readyOrDie(proc: LabProcess, ready: Promise<unknown>, what: string, logFile?: string): Promise<LabProcess> {
  const died = proc.waitForExit().then((s) => {
    throw new LabError(`${what} exited during startup (${s.signal ?? `code ${s.code}`})`);
  });
  try {
    await Promise.race([ready, died]);
    return proc;
  } catch (e) {
    let log = '';
    if (logFile && existsSync(logFile)) log = `\nlog ${logFile}: ${readFileSync(logFile, 'utf8').slice(-2000).trim()}`;
    await proc.stop('SIGTERM', 1000).catch(() => undefined);
    throw new LabError(`${what} did not become ready: ${e instanceof Error ? e.message : String(e)}\n${proc.outputTail()}${log}`);
  } finally {
    died.catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// dante

export interface DanteOptions {
  /** Address dante listens on inside the namespace, e.g. '10.99.0.2'. */
  listen: string;
  /** Default 1080. */
  port?: number;
  /** Address outgoing connections use; default: `listen`. */
  external?: string;
  /**
   * Require username/password (RFC 1929). Dante checks system users, so the user is added to
   * an /etc/passwd + /etc/shadow overlay that only processes in this namespace see
   * (/etc/netns/<ns>/, removed with the lab): no user is created on the host. Needs `openssl`
   * to hash the password.
   */
  auth?: { user: string; pass: string };
  /** Dante's -N (processes accepting clients); default 2. */
  workers?: number;
  /**
   * SO_RCVBUF of dante's UDP sockets (`internal|external.udp.so_rcvbuf`; the kernel caps it at
   * net.core.rmem_max). Left out, they get net.core.rmem_default (208 KiB), which one dante
   * process overflows at 200 Mbit/s on a busy 2-core machine, and which cannot be raised inside
   * a lab namespace on this kernel.
   */
  udpRcvbuf?: number;
}

const LAB_USER_UID = 61_234;

function overlayUser(ns: Namespace, user: string, pass: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_-]{0,30}$/.test(user)) throw new LabError(`dante auth: bad user name ${JSON.stringify(user)}`);
  if (!/^[\x21-\x7e]{1,64}$/.test(pass)) throw new LabError('dante auth: the password must be 1-64 printable ASCII characters without spaces');
  const openssl = requireBinary('openssl', 'openssl');
  return runCommand([openssl, 'passwd', '-6', '-stdin'], { input: `${pass}\n`, timeoutMs: 10_000 }).then((r) => {
    const hash = r.stdout.trim();
    if (!hash.startsWith('$6$')) throw new LabError(`openssl passwd gave an unexpected hash: ${hash}`);
    const dir = ns.lab.etcOverlayDir(ns);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const hostPasswd = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith(`${user}:`));
    hostPasswd.push(`${user}:x:${LAB_USER_UID}:65534:tunroute lab:/nonexistent:/usr/sbin/nologin`);
    writeFileSync(join(dir, 'passwd'), `${hostPasswd.join('\n')}\n`, { mode: 0o644 });
    // Only the lab user: the host's own password hashes are never copied.
    writeFileSync(join(dir, 'shadow'), `${user}:${hash}:19000:0:99999:7:::\n`, { mode: 0o600 });
  });
}

/** What a danted.conf says; shared by the lab and the loopback starter of the unit tests. */
export interface DanteConfig {
  logFile: string;
  listen: string;
  port: number;
  external: string;
  /** Username/password against system users, else no authentication. */
  auth: boolean;
  /**
   * dante's `udp.connectdst` (its default: yes): its UDP socket is connected to the first
   * destination, so ICMP errors come back but replies only from that destination; no:
   * full-cone replies (from any remote) and no ICMP errors.
   */
  connectdst: boolean;
  udpRcvbuf?: number;
  /** Run as root with `nobody` for unprivileged work (dante's user.* settings need root). */
  privileged: boolean;
}

/** The config text for `danted -f` (CONNECT, BIND and UDP ASSOCIATE from anywhere). */
export function danteConfigText(c: DanteConfig): string {
  // Rule blocks must be multi-line for dante 1.4.2.
  return [
    `logoutput: ${c.logFile}`,
    `internal: ${c.listen} port = ${c.port}`,
    `external: ${c.external}`,
    'clientmethod: none',
    `socksmethod: ${c.auth ? 'username' : 'none'}`,
    ...(c.privileged ? ['user.privileged: root', 'user.unprivileged: nobody'] : []),
    ...(c.connectdst ? [] : ['udp.connectdst: no']),
    ...(c.udpRcvbuf === undefined ? [] : [`internal.udp.so_rcvbuf: ${c.udpRcvbuf}`, `external.udp.so_rcvbuf: ${c.udpRcvbuf}`]),
    'client pass {',
    '  from: 0.0.0.0/0 to: 0.0.0.0/0',
    '}',
    'socks pass {',
    '  from: 0.0.0.0/0 to: 0.0.0.0/0',
    '  command: bind connect udpassociate bindreply udpreply',
    '}',
    '',
  ].join('\n');
}

/** dante-server (`danted`) as a SOCKS5 server with CONNECT, BIND and UDP ASSOCIATE. */
export async function startDante(ns: Namespace, opts: DanteOptions): Promise<LabProcess> {
  const danted = requireBinary('danted', 'dante-server');
  requireBinary('unshare', 'util-linux');
  const port = opts.port ?? 1080;
  const external = opts.external ?? opts.listen;
  checkListen('startDante', opts.listen);
  checkListen('startDante external', external);
  checkPort('startDante', port);
  if (opts.auth) await overlayUser(ns, opts.auth.user, opts.auth.pass);
  const tag = `danted-${ns.role}-${port}`;
  const logFile = join(ns.lab.tmpDir, `${tag}.log`);
  const confFile = join(ns.lab.tmpDir, `${tag}.conf`);
  // Replies from any address reach the client (full-cone), as games and STUN expect.
  const conf = danteConfigText({ logFile, listen: opts.listen, port, external, auth: opts.auth !== undefined, connectdst: false, udpRcvbuf: opts.udpRcvbuf, privileged: true });
  writeFileSync(confFile, conf);
  // Dante forks workers that outlive their parent: run it in its own PID namespace so the
  // kernel reaps them all when it exits (PID 1 of the host does not).
  const proc = ns.spawn([danted, '-f', confFile, '-N', String(opts.workers ?? 2)], { name: tag, pidns: true });
  return readyOrDie(proc, waitForPort(ns, opts.listen, port, 15_000), `danted on ${opts.listen}:${port}`, logFile);
}

// ---------------------------------------------------------------------------------------------
// microsocks

export interface MicrosocksOptions {
  listen: string;
  /** Default 1080. */
  port?: number;
  user?: string;
  pass?: string;
}

/**
 * microsocks: CONNECT only (UDP ASSOCIATE is refused), a thread per connection. Known to hang
 * when greeting and request arrive in one write; a poor benchmark peer (FACTS).
 */
export async function startMicrosocks(ns: Namespace, opts: MicrosocksOptions): Promise<LabProcess> {
  const bin = requireBinary('microsocks', 'microsocks');
  const port = opts.port ?? 1080;
  checkListen('startMicrosocks', opts.listen);
  checkPort('startMicrosocks', port);
  if ((opts.user === undefined) !== (opts.pass === undefined)) throw new LabError('startMicrosocks: give both user and pass, or neither');
  const auth = opts.user !== undefined && opts.pass !== undefined ? ['-u', opts.user, '-P', opts.pass] : [];
  const proc = ns.spawn([bin, '-i', opts.listen, '-p', String(port), ...auth], { name: `microsocks-${ns.role}-${port}` });
  return readyOrDie(proc, waitForPort(ns, opts.listen, port, 10_000), `microsocks on ${opts.listen}:${port}`);
}

// ---------------------------------------------------------------------------------------------
// tinyproxy

export interface TinyproxyOptions {
  listen: string;
  /** Default 8888. */
  port?: number;
  /** Require Basic authentication with this user and password (tinyproxy's BasicAuth). */
  auth?: { user: string; pass: string };
  /** Source address of its outgoing connections (tinyproxy's Bind), so a server can tell it apart. */
  bind?: string;
}

/** What a tinyproxy.conf says; shared by the lab and the loopback test of the outbound. */
export interface TinyproxyConfig {
  listen: string;
  port: number;
  logFile: string;
  auth?: { user: string; pass: string };
  bind?: string;
  /** Drop to nobody after binding (tinyproxy started as root). */
  dropPrivileges: boolean;
}

/**
 * The config text for `tinyproxy -d -c`: CONNECT to any port (no ConnectPort line means all
 * ports are allowed), from anyone, with Basic auth when `auth` is given.
 */
export function tinyproxyConfigText(c: TinyproxyConfig): string {
  if (c.auth !== undefined && (!/^[A-Za-z0-9_-]{1,32}$/.test(c.auth.user) || !/^[\x21-\x7e]{1,64}$/.test(c.auth.pass) || c.auth.pass.includes('"'))) {
    throw new LabError('tinyproxy auth: the user must be 1-32 letters, digits, "_" or "-", the password printable ASCII without spaces or quotes');
  }
  return [
    `Port ${c.port}`,
    `Listen ${c.listen}`,
    ...(c.dropPrivileges ? ['User nobody', 'Group nogroup'] : []),
    'Timeout 60',
    'MaxClients 200',
    `LogFile "${c.logFile}"`,
    'LogLevel Connect',
    ...(c.auth === undefined ? [] : [`BasicAuth ${c.auth.user} ${c.auth.pass}`]),
    ...(c.bind === undefined ? [] : [`Bind ${c.bind}`]),
    '',
  ].join('\n');
}

/** Debian's tinyproxy, an HTTP proxy with CONNECT (and Basic auth), in the foreground. */
export async function startTinyproxy(ns: Namespace, opts: TinyproxyOptions): Promise<LabProcess> {
  const bin = requireBinary('tinyproxy', 'tinyproxy');
  const port = opts.port ?? 8888;
  checkListen('startTinyproxy', opts.listen);
  checkPort('startTinyproxy', port);
  if (opts.bind !== undefined) checkListen('startTinyproxy bind', opts.bind);
  const tag = `tinyproxy-${ns.role}-${port}`;
  const logFile = join(ns.lab.tmpDir, `${tag}.log`);
  const confFile = join(ns.lab.tmpDir, `${tag}.conf`);
  // As root without User, tinyproxy keeps root; the log file is ours either way (written
  // before any drop), so it stays root and readable by the test.
  writeFileSync(confFile, tinyproxyConfigText({ listen: opts.listen, port, logFile, auth: opts.auth, bind: opts.bind, dropPrivileges: false }));
  const proc = ns.spawn([bin, '-d', '-c', confFile], { name: tag });
  return readyOrDie(proc, waitForPort(ns, opts.listen, port, 10_000), `tinyproxy on ${opts.listen}:${port}`, logFile);
}

// ---------------------------------------------------------------------------------------------
// HTTP server

/**
 * The HTTP server's deterministic data: the AES-128-CTR keystream under a fixed key (fast,
 * native, never periodic, so a shifted or repeated chunk changes the hash).
 */
const LAB_BYTES_KEY = createHash('sha256').update('tunroute-lab-bytes').digest().subarray(0, 16);
const LAB_BYTES_CHUNK = 64 * 1024;

/** The first `n` bytes the HTTP server sends for GET /bytes/<n>. */
export function labBytes(n: number): Buffer {
  const c = createCipheriv('aes-128-ctr', LAB_BYTES_KEY, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(n)), c.final()]);
}

/** sha256 (hex) of labBytes(n), computed in 64 KiB steps (works for sizes beyond memory). */
export function labBytesSha256(n: number): string {
  const c = createCipheriv('aes-128-ctr', LAB_BYTES_KEY, Buffer.alloc(16));
  const h = createHash('sha256');
  const zero = Buffer.alloc(LAB_BYTES_CHUNK);
  for (let left = n; left > 0; left -= LAB_BYTES_CHUNK) h.update(c.update(zero.subarray(0, Math.min(LAB_BYTES_CHUNK, left))));
  return h.digest('hex');
}

const HTTP_SERVER_SOURCE = String.raw`// tunroute lab HTTP server (generated by tools/lab/servers.ts)
import http from 'node:http';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { resolve, sep } from 'node:path';

const [host, portArg, sizeArg, root] = process.argv.slice(2);
const port = Number(portArg);
const defaultSize = Number(sizeArg);
const KEY = createHash('sha256').update('tunroute-lab-bytes').digest().subarray(0, 16);
const CHUNK = 64 * 1024;
const ZERO = Buffer.alloc(CHUNK);
const MAX = 2 ** 40;

function stream(res, n, zero) {
  const cipher = zero ? null : createCipheriv('aes-128-ctr', KEY, Buffer.alloc(16));
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
  let left = n;
  const pump = () => {
    while (left > 0) {
      const k = Math.min(CHUNK, left);
      left -= k;
      const chunk = cipher ? cipher.update(ZERO.subarray(0, k)) : ZERO.subarray(0, k);
      if (!res.write(chunk)) { res.once('drain', pump); return; }
    }
    res.end();
  };
  pump();
}

function text(res, code, body) {
  res.writeHead(code, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://lab');
  const path = url.pathname;
  if (req.method === 'POST' || req.method === 'PUT') {
    const h = createHash('sha256');
    let bytes = 0;
    req.on('data', (c) => { bytes += c.length; h.update(c); });
    req.on('end', () => {
      const body = JSON.stringify({ bytes, sha256: h.digest('hex') }) + '\n';
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    });
    req.on('error', () => res.destroy());
    return;
  }
  if (path === '/health') return text(res, 200, 'ok\n');
  if (path === '/ip') return text(res, 200, (req.socket.remoteAddress ?? '') + '\n');
  let m = /^\/(bytes|zero)\/(\d+)$/.exec(path);
  if (m) {
    const n = Number(m[2]);
    if (!(n <= MAX)) return text(res, 400, 'too large\n');
    return stream(res, n, m[1] === 'zero');
  }
  if (path === '/' && defaultSize >= 0) return stream(res, defaultSize, false);
  m = /^\/files\/(.+)$/.exec(path);
  if (m && root) {
    const base = resolve(root);
    const file = resolve(base, decodeURIComponent(m[1]));
    if (!file.startsWith(base + sep)) return text(res, 403, 'outside root\n');
    let st;
    try { st = statSync(file); } catch { return text(res, 404, 'not found\n'); }
    if (!st.isFile()) return text(res, 404, 'not a file\n');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(st.size) });
    createReadStream(file).pipe(res);
    return;
  }
  text(res, 404, 'routes: /health /ip /bytes/N /zero/N /files/PATH, POST|PUT any path -> sha256\n');
});
server.keepAliveTimeout = 30_000;
server.listen(port, host, () => console.log('listening ' + host + ':' + server.address().port));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
`;

export interface HttpServerOptions {
  /** Default '0.0.0.0'. */
  listen?: string;
  port: number;
  /** Bytes served at GET / (deterministic, = labBytes(size)); default: / is 404. */
  size?: number;
  /** Serve files under this directory at GET /files/<path>. */
  root?: string;
}

/**
 * A small Node HTTP server:
 *   GET /bytes/N  N deterministic bytes (labBytes(N); hash with labBytesSha256(N))
 *   GET /zero/N   N zero bytes (cheapest to produce, for throughput)
 *   GET /         `size` deterministic bytes, when `size` is given
 *   GET /files/P  a file under `root`
 *   GET /ip       the client's address as the server sees it
 *   GET /health   ok
 *   POST|PUT any  replies {"bytes":N,"sha256":"..."} for the uploaded body
 */
export async function startHttpServer(ns: Namespace, opts: HttpServerOptions): Promise<LabProcess> {
  const listen = opts.listen ?? '0.0.0.0';
  checkListen('startHttpServer', listen);
  checkPort('startHttpServer', opts.port);
  const script = join(ns.lab.tmpDir, 'http-server.mjs');
  if (!existsSync(script)) writeFileSync(script, HTTP_SERVER_SOURCE);
  const proc = ns.spawn(
    [process.execPath, script, listen, String(opts.port), String(opts.size ?? -1), opts.root ?? ''],
    { name: `http-${ns.role}-${opts.port}` },
  );
  return readyOrDie(proc, proc.waitForLine(/^listening /, 15_000), `http server on ${listen}:${opts.port}`);
}

// ---------------------------------------------------------------------------------------------
// delay relay

export interface DelayRelayOptions {
  listen: string;
  port: number;
  target: string;
  targetPort: number;
  /** Held in each direction, ms. */
  delayMs: number;
}

/**
 * A TCP relay (delay-relay.ts) on `listen:port` that forwards to `target:targetPort`, holding
 * every chunk `delayMs` in each direction: the lab's stand-in for netem, which this kernel lacks.
 */
export async function startDelayRelay(ns: Namespace, opts: DelayRelayOptions): Promise<LabProcess> {
  checkListen('startDelayRelay', opts.listen);
  checkListen('startDelayRelay target', opts.target);
  checkPort('startDelayRelay', opts.port);
  checkPort('startDelayRelay target', opts.targetPort);
  const script = join(dirname(fileURLToPath(import.meta.url)), 'delay-relay.js');
  const proc = ns.spawn(
    [process.execPath, script, opts.listen, String(opts.port), opts.target, String(opts.targetPort), String(opts.delayMs)],
    { name: `delay-relay-${ns.role}-${opts.port}` },
  );
  return readyOrDie(proc, proc.waitForLine(/^listening /, 15_000), `delay relay on ${opts.listen}:${opts.port}`);
}

// ---------------------------------------------------------------------------------------------
// iperf3

export interface Iperf3Options {
  /** Bind to this address; default: all. */
  listen?: string;
}

/** `iperf3 -s` (serves one test at a time, stays up between tests). */
export async function startIperf3(ns: Namespace, port = 5201, opts: Iperf3Options = {}): Promise<LabProcess> {
  const bin = requireBinary('iperf3', 'iperf3');
  checkPort('startIperf3', port);
  if (opts.listen !== undefined) checkListen('startIperf3', opts.listen);
  const bind = opts.listen ? ['-B', opts.listen] : [];
  const proc = ns.spawn([bin, '-s', '-p', String(port), '--forceflush', ...bind], { name: `iperf3-${ns.role}-${port}` });
  return readyOrDie(proc, proc.waitForLine(/Server listening on/, 10_000), `iperf3 on port ${port}`);
}

// ---------------------------------------------------------------------------------------------
// dnsmasq

export interface DnsmasqOptions {
  listen: string;
  /** Default 53. */
  port?: number;
  /** name -> address(es); `--address=/name/ip` also answers for subdomains of name. */
  records: Record<string, string | readonly string[]>;
  /** Extra dnsmasq arguments. */
  extraArgs?: readonly string[];
}

/**
 * dnsmasq (from dnsmasq-base) answering `records` over UDP and TCP; it has no upstream
 * servers, so other names are refused. `--no-daemon` keeps it in the foreground, as root,
 * without forking for TCP queries.
 */
export async function startDnsmasq(ns: Namespace, opts: DnsmasqOptions): Promise<LabProcess> {
  const bin = requireBinary('dnsmasq', 'dnsmasq-base');
  const port = opts.port ?? 53;
  checkListen('startDnsmasq', opts.listen);
  checkPort('startDnsmasq', port);
  const addrs: string[] = [];
  for (const [name, ips] of Object.entries(opts.records)) {
    if (!/^[A-Za-z0-9.-]+$/.test(name)) throw new LabError(`startDnsmasq: bad name ${JSON.stringify(name)}`);
    for (const ip of typeof ips === 'string' ? [ips] : ips) {
      if (!isIPv4(ip)) throw new LabError(`startDnsmasq: ${name} -> ${ip} is not an IPv4 address`);
      addrs.push(`--address=/${name}/${ip}`);
    }
  }
  const proc = ns.spawn(
    [
      bin,
      '--no-daemon',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${opts.listen}`,
      `--port=${port}`,
      '--log-facility=-',
      ...addrs,
      ...(opts.extraArgs ?? []),
    ],
    { name: `dnsmasq-${ns.role}-${port}` },
  );
  return readyOrDie(proc, proc.waitForLine(/started, version/, 10_000), `dnsmasq on ${opts.listen}:${port}`);
}
