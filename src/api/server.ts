/**
 * The API listener of a running `up` or `server` (`--ui` / `ui.listen`): the dashboard page, the
 * Clash API subset (clash.ts), Prometheus /metrics (metrics.ts) and a few tunroute endpoints
 * the page uses (/tunroute/...). Built only when enabled: app.ts imports this module lazily.
 *
 * Access:
 *   - every request needs the secret: `Authorization: Bearer S`, `?token=S` (how Clash
 *     dashboards open WebSockets), or the cookie the login form sets (HttpOnly, SameSite=Strict);
 *     without it: 401 (the page's URLs answer 401 with the login form);
 *   - a request from a browser page of another origin (Origin header) is refused (403) unless
 *     that origin is in ui.allowOrigins, WebSocket upgrades included: CORS is closed by default;
 *   - the listener refuses a non-loopback address unless ui.allowRemote (also checked by the
 *     config schema).
 *
 * Streams (/traffic, /memory, /connections over WebSocket, /logs) send one JSON object per
 * second (per `?interval=` ms for /connections), as chunked JSON lines over plain HTTP or as
 * WebSocket text messages. A client that does not read has its samples skipped, never queued.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { TunrouteError, isTunrouteError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Ipv4Endpoint } from '../net/endpoint.js';
import { clashConfigs, clashConnections, clashProxies, clashRules, clashVersion, parseConnectionId, type ClashMemory, type ClashTraffic } from './clash.js';
import { parseClashLevel, type LogTap } from './log-tap.js';
import type { ApiMetrics } from './metrics.js';
import { secretMatches } from './secret.js';
import type { ApiSource } from './source.js';
import { StaticFiles } from './static-files.js';

export interface ApiServerOptions {
  listen: Ipv4Endpoint;
  allowRemote: boolean;
  secret: string;
  allowOrigins: readonly string[];
  source: ApiSource;
  logs?: LogTap;
  logger: Logger;
  /** Most connections at once (streams included). Default 64. */
  maxConnections?: number;
}

export interface ApiServer {
  /** http://host:port (the port the kernel gave when listen.port is 0). */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const COOKIE = 'tunroute_ui';
/** Largest request body read (the login form). */
const MAX_BODY = 4096;
/** A client that lets this much pile up in its socket gets no more samples until it drains. */
const MAX_BUFFERED = 1 << 20;
const STREAM_INTERVAL_MS = 1000;

const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

function isLoopback(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function cookieSession(req: IncomingMessage): string | undefined {
  const h = req.headers.cookie;
  if (h === undefined) return undefined;
  for (const part of h.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return v.join('=');
  }
  return undefined;
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (h === undefined) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h);
  return m?.[1]?.trim();
}

/** A recurring sample for every stream subscriber; the timer runs only while someone listens. */
class Ticker {
  private readonly subs = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly beforeTick: () => void,
    /** When the timer starts: the first tick measures from here, not from the last time it ran. */
    private readonly onStart: () => void,
  ) {}

  add(fn: () => void): () => void {
    this.subs.add(fn);
    if (this.timer === undefined) {
      this.onStart();
      this.timer = setInterval(() => {
        this.beforeTick();
        for (const s of this.subs) s();
      }, STREAM_INTERVAL_MS);
    }
    return () => {
      this.subs.delete(fn);
      if (this.subs.size === 0 && this.timer !== undefined) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.subs.clear();
  }
}

/** One writer for a stream: a WebSocket or a chunked HTTP response. */
interface StreamSink {
  send(obj: unknown): void;
  onClose(fn: () => void): void;
}

function wsSink(ws: WebSocket): StreamSink {
  return {
    send(obj) {
      if (ws.readyState !== ws.OPEN || ws.bufferedAmount > MAX_BUFFERED) return;
      ws.send(JSON.stringify(obj));
    },
    onClose(fn) {
      ws.once('close', fn);
    },
  };
}

function httpSink(res: ServerResponse): StreamSink {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  // Headers out now, so a client sees the stream open before the first sample.
  res.flushHeaders();
  return {
    send(obj) {
      if (res.writableEnded || res.writableNeedDrain) return;
      res.write(JSON.stringify(obj) + '\n');
    },
    onClose(fn) {
      res.once('close', fn);
    },
  };
}

export async function startApiServer(o: ApiServerOptions): Promise<ApiServer> {
  const log = o.logger.child({ component: 'ui' });
  if (!o.allowRemote && !isLoopback(o.listen.host)) {
    throw new TunrouteError('TR_BAD_CONFIG', `The dashboard would listen on ${o.listen.host}, which is not a loopback address: set ui.allowRemote: true to serve other hosts, or listen on 127.0.0.1.`);
  }
  const src = o.source;
  const files = new StaticFiles();
  // The login cookie carries a value derived from the secret, never the secret itself.
  const session = createHmac('sha256', o.secret).update('tunroute ui session').digest('base64url');
  let metrics: ApiMetrics | undefined;
  const allowOrigins = new Set(o.allowOrigins);

  // Traffic: bytes each way in the last second, from the growing totals.
  let prev = src.counters();
  let traffic: ClashTraffic = { up: 0, down: 0 };
  const ticker = new Ticker(
    () => {
      const c = src.counters();
      traffic = { up: Math.max(0, c.bytesUp - prev.bytesUp), down: Math.max(0, c.bytesDown - prev.bytesDown) };
      prev = c;
    },
    () => {
      prev = src.counters();
    },
  );
  const memory = (): ClashMemory => ({ inuse: process.memoryUsage.rss(), oslimit: 0 });
  const defaultOutbound = (): string => src.rules().defaultOutbound;
  const connections = (): ReturnType<typeof clashConnections> => {
    const c = src.counters();
    return clashConnections(src.flows(), src.udpFlows(), { up: c.bytesUp, down: c.bytesDown, memory: process.memoryUsage.rss(), nowMs: Date.now() }, defaultOutbound());
  };

  /** Is the request's Origin (if a browser sent one) ours or allowed? */
  const originOk = (req: IncomingMessage): boolean => {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    if (origin === `http://${req.headers.host ?? ''}`) return true;
    return allowOrigins.has(origin);
  };
  const authorized = (req: IncomingMessage, url: URL): boolean =>
    secretMatches(bearer(req), o.secret) || secretMatches(url.searchParams.get('token') ?? undefined, o.secret) || secretMatches(cookieSession(req), session);

  const baseHeaders = (req: IncomingMessage): Record<string, string> => {
    const h: Record<string, string> = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store', 'referrer-policy': 'same-origin' };
    const origin = req.headers.origin;
    if (origin !== undefined && allowOrigins.has(origin)) {
      h['access-control-allow-origin'] = origin;
      h.vary = 'Origin';
    }
    return h;
  };
  const json = (req: IncomingMessage, res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { ...baseHeaders(req), 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const noContent = (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(204, baseHeaders(req));
    res.end();
  };
  const page = async (req: IncomingMessage, res: ServerResponse, status: number, name: string, extraHeaders: Record<string, string> = {}): Promise<void> => {
    const f = await files.get(name);
    if (f === undefined) return json(req, res, 404, { message: 'not found' });
    res.writeHead(status, { ...baseHeaders(req), 'content-type': f.type, 'content-security-policy': PAGE_CSP, 'x-frame-options': 'DENY', ...extraHeaders });
    res.end(req.method === 'HEAD' ? undefined : f.body);
  };
  const unauthorized = (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> | void => {
    // A person at the page gets the login form; a program gets Clash's JSON answer.
    if (url.pathname === '/' || url.pathname === '/ui' || url.pathname === '/ui/' || url.pathname === '/ui/index.html') return page(req, res, 401, 'login.html');
    json(req, res, 401, { message: 'Unauthorized' });
  };

  const readBody = (req: IncomingMessage): Promise<string | undefined> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        if (n > MAX_BODY) {
          resolve(undefined);
          req.destroy();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', () => resolve(undefined));
    });

  const login = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readBody(req);
    const given = body === undefined ? undefined : (new URLSearchParams(body).get('secret') ?? undefined);
    if (!secretMatches(given, o.secret)) {
      log.warn({ from: req.socket.remoteAddress }, 'dashboard login refused: wrong secret');
      return page(req, res, 401, 'login.html');
    }
    res.writeHead(303, {
      ...baseHeaders(req),
      location: '/ui/',
      'set-cookie': `${COOKIE}=${session}; Path=/; HttpOnly; SameSite=Strict`,
    });
    res.end();
  };

  const stream = (sink: StreamSink, kind: 'traffic' | 'memory'): void => {
    const off = ticker.add(() => sink.send(kind === 'traffic' ? traffic : memory()));
    sink.onClose(off);
  };
  const connectionsStream = (sink: StreamSink, intervalMs: number): void => {
    sink.send(connections());
    const timer = setInterval(() => sink.send(connections()), intervalMs);
    sink.onClose(() => clearInterval(timer));
  };
  const subscribeLogs = (sink: StreamSink, url: URL): void => {
    const level = parseClashLevel(url.searchParams.get('level')) ?? 'info';
    const off = o.logs?.subscribe(level, (line) => sink.send(line));
    if (off !== undefined) sink.onClose(off);
  };

  const intervalOf = (url: URL): number => {
    const v = Number(url.searchParams.get('interval') ?? STREAM_INTERVAL_MS);
    return Number.isFinite(v) ? Math.min(60_000, Math.max(100, Math.round(v))) : STREAM_INTERVAL_MS;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://tunroute');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const method = req.method ?? 'GET';
    if (!originOk(req)) return json(req, res, 403, { message: 'this origin may not use the API (ui.allowOrigins)' });
    if (method === 'OPTIONS') {
      // Only reached for allowed origins (originOk above).
      res.writeHead(204, { ...baseHeaders(req), 'access-control-allow-methods': 'GET, DELETE, OPTIONS', 'access-control-allow-headers': 'Authorization, Content-Type', 'access-control-max-age': '600' });
      res.end();
      return;
    }
    if (method === 'POST' && path === '/ui/login') return login(req, res);
    // Browsers ask for it on their own; there is none (and nothing to authorize).
    if (path === '/favicon.ico') return noContent(req, res);
    // The login form's stylesheet: the one file served without the secret (it holds nothing).
    if (method === 'GET' && path === '/ui/style.css') return page(req, res, 200, 'style.css');
    if (!authorized(req, url)) return unauthorized(req, res, url);

    if (path === '/' && method === 'GET') {
      res.writeHead(302, { ...baseHeaders(req), location: '/ui/' });
      res.end();
      return;
    }
    if (path === '/ui' || path.startsWith('/ui/')) {
      if (method === 'POST' && path === '/ui/logout') {
        res.writeHead(303, { ...baseHeaders(req), location: '/ui/', 'set-cookie': `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0` });
        res.end();
        return;
      }
      if (method !== 'GET' && method !== 'HEAD') return json(req, res, 405, { message: 'method not allowed' });
      const name = path === '/ui' ? '' : path.slice('/ui/'.length);
      if (name === 'login.html') return json(req, res, 404, { message: 'not found' });
      return page(req, res, 200, name);
    }

    const id = /^\/connections\/([^/]+)$/.exec(path)?.[1];
    if (id !== undefined && method === 'DELETE') {
      const parsed = parseConnectionId(id);
      if (parsed === undefined || !src.closeFlow(parsed[0], parsed[1])) return json(req, res, 404, { message: 'no such connection' });
      log.info({ flow: id }, 'flow closed from the API');
      return noContent(req, res);
    }
    if (path === '/connections' && method === 'DELETE') {
      let n = 0;
      for (const f of src.flows()) if (src.closeFlow('tcp', f.id)) n++;
      for (const f of src.udpFlows()) if (src.closeFlow('udp', f.id)) n++;
      log.info({ flows: n }, 'all flows closed from the API');
      return noContent(req, res);
    }
    if (method !== 'GET' && method !== 'HEAD') return json(req, res, 405, { message: 'method not allowed' });

    switch (path) {
      case '/version':
        return json(req, res, 200, clashVersion(src.version));
      case '/configs': {
        const s = src.snapshot();
        return json(req, res, 200, clashConfigs({ logLevel: src.logLevel, device: s.device.name }));
      }
      case '/rules': {
        const r = src.rules();
        return json(req, res, 200, clashRules(r.rules, r.defaultOutbound));
      }
      case '/proxies':
        return json(req, res, 200, clashProxies(src.outbounds(), defaultOutbound()));
      case '/connections':
        return json(req, res, 200, connections());
      case '/traffic':
        return stream(httpSink(res), 'traffic');
      case '/memory':
        return stream(httpSink(res), 'memory');
      case '/logs': {
        if (parseClashLevel(url.searchParams.get('level')) === undefined) return json(req, res, 400, { message: 'level must be one of debug, info, warning, error, silent' });
        return subscribeLogs(httpSink(res), url);
      }
      case '/metrics': {
        // prom-client (and its event-loop sampler) is loaded on the first scrape, not at start.
        metrics ??= new (await import('./metrics.js')).ApiMetrics(src);
        const text = await metrics.render();
        res.writeHead(200, { ...baseHeaders(req), 'content-type': metrics.contentType });
        res.end(text);
        return;
      }
      case '/tunroute/status':
        return json(req, res, 200, src.snapshot());
      case '/tunroute/plan':
        return json(req, res, 200, { lines: src.planLines?.() ?? [] });
      case '/tunroute/dns':
        return json(req, res, 200, { answers: src.dnsAnswers?.() ?? [] });
      case '/tunroute/why': {
        const addr = url.searchParams.get('addr') ?? '';
        const proto = url.searchParams.get('proto') ?? 'tcp';
        if (src.why === undefined) return json(req, res, 404, { message: 'why is answered by tunroute up only' });
        if (proto !== 'tcp' && proto !== 'udp' && proto !== 'icmp') return json(req, res, 400, { message: 'proto must be tcp, udp or icmp' });
        try {
          return json(req, res, 200, src.why(addr, proto));
        } catch (e) {
          if (isTunrouteError(e)) return json(req, res, 400, { message: e.message });
          throw e;
        }
      }
      default:
        return json(req, res, 404, { message: 'not found' });
    }
  };

  const wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false });
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = new URL(req.url ?? '/', 'http://tunroute');
    const path = url.pathname.replace(/\/+$/, '');
    const refuse = (status: string): void => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (!originOk(req)) return refuse('403 Forbidden');
    if (!authorized(req, url)) return refuse('401 Unauthorized');
    if (path === '/logs' && parseClashLevel(url.searchParams.get('level')) === undefined) return refuse('400 Bad Request');
    if (!['/traffic', '/memory', '/connections', '/logs'].includes(path)) return refuse('404 Not Found');
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', (e) => log.debug({ err: e.message }, 'websocket error'));
      // Clients send nothing we act on; a message is ignored (maxPayload bounds it).
      const sink = wsSink(ws);
      if (path === '/traffic') stream(sink, 'traffic');
      else if (path === '/memory') stream(sink, 'memory');
      else if (path === '/connections') connectionsStream(sink, intervalOf(url));
      else subscribeLogs(sink, url);
    });
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log.error({ err: e }, 'API request failed');
      if (!res.headersSent) json(req, res, 500, { message: 'internal error' });
      else res.destroy();
    });
  });
  server.maxConnections = o.maxConnections ?? 64;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('upgrade', upgrade);
  server.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(new TunrouteError('TR_BAD_CONFIG', `Cannot listen for the dashboard on ${o.listen.host}:${o.listen.port} (${e.code ?? e.message}): pick another address with --ui ADDR or ui.listen.`, e));
    };
    server.once('error', onError);
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : o.listen.port;
  const url = `http://${o.listen.host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    close() {
      closing ??= (async () => {
        ticker.stop();
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
}
