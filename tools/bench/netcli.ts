/**
 * Small TCP and DNS helpers that the benchmark runs inside the lab namespaces (as separate processes,
 * because a Node process cannot enter a network namespace itself):
 *
 *   node dist-tools/tools/bench/netcli.js serve HOST PORT
 *       an echo server (what arrives is written back; the server half-closes when the client does)
 *   node dist-tools/tools/bench/netcli.js rr HOST PORT SECONDS MAX SIZE
 *       one connection, sequential round trips of SIZE bytes (write, wait for SIZE bytes back)
 *   node dist-tools/tools/bench/netcli.js cps HOST PORT SECONDS MAX SIZE
 *       sequential connections: connect, send SIZE bytes, read SIZE bytes back, close (the client
 *       closes first and waits until the socket is fully closed), one after another
 *   node dist-tools/tools/bench/netcli.js dns HOST PORT SECONDS MAX DOMAIN
 *       sequential DNS queries over UDP (dgram): ask A q<N>.DOMAIN (a new name each time), wait
 *       for the answer (matching ID, NOERROR, at least one record), ask the next
 *   node dist-tools/tools/bench/netcli.js socks-cps HOST PORT SECONDS MAX SIZE PROXY_HOST PROXY_PORT
 *       like cps, but each connection goes to the SOCKS5 proxy (no authentication) and asks it to
 *       CONNECT to HOST:PORT: the greeting and the CONNECT request leave in one write (pipelined,
 *       as a good client does), then SIZE bytes are echoed once both replies are in
 *   node dist-tools/tools/bench/netcli.js ttfb HOST PORT SECONDS MAX PATH
 *       sequential HTTP/1.1 GETs of PATH (Connection: close), each on a new connection; the time
 *       is from connect() to the first byte of the response; the response is read to its end
 *   node dist-tools/tools/bench/netcli.js hold HOST PORT COUNT SECONDS CONCURRENCY
 *       open COUNT connections (at most CONCURRENCY connecting at a time, giving up after SECONDS),
 *       each proven by a 1-byte echo, print one JSON line (HoldResult), then keep them all open,
 *       idle, until SIGTERM (then exit at once: the kernel closes them all)
 *
 * The clients stop after SECONDS or MAX round trips / connections / queries, whichever comes
 * first; every connect, reply and answer is bounded by a timeout, and after a few errors the
 * client gives up.
 * They print one JSON line (ClientResult) on stdout and exit 0 if anything was measured.
 */
import dgram from 'node:dgram';
import net from 'node:net';

export interface ClientResult {
  mode: 'rr' | 'cps' | 'dns' | 'socks-cps' | 'ttfb';
  /** Completed round trips (rr), connections (cps, socks-cps), answered queries (dns) or requests (ttfb). */
  count: number;
  errors: number;
  firstError?: string;
  elapsedS: number;
  /** count / elapsedS */
  rate: number;
  /**
   * Per round trip (rr), per connection from connect() to the reply (cps, socks-cps), per query
   * (dns), or per request from connect() to the response's first byte (ttfb), µs.
   */
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Reason the loop ended: 'time', 'count' or 'errors'. */
  stoppedBy: 'time' | 'count' | 'errors';
}

const STEP_TIMEOUT_MS = 5000;
const MAX_ERRORS = 20;

function nowNs(): bigint {
  return process.hrtime.bigint();
}

function summarize(
  mode: ClientResult['mode'],
  lat: Float64Array,
  count: number,
  errors: number,
  firstError: string | undefined,
  startNs: bigint,
  stoppedBy: ClientResult['stoppedBy'],
): ClientResult {
  const elapsedS = Number(nowNs() - startNs) / 1e9;
  const xs = lat.slice(0, count).sort();
  const pick = (q: number): number => (count === 0 ? 0 : xs[Math.min(count - 1, Math.floor(q * count))]);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += xs[i];
  const r: ClientResult = {
    mode,
    count,
    errors,
    elapsedS,
    rate: elapsedS > 0 ? count / elapsedS : 0,
    meanUs: count === 0 ? 0 : sum / count,
    p50Us: pick(0.5),
    p99Us: pick(0.99),
    maxUs: count === 0 ? 0 : xs[count - 1],
    stoppedBy,
  };
  if (firstError !== undefined) r.firstError = firstError;
  return r;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function serve(host: string, port: number): void {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      sock.write(d);
    });
    sock.on('error', () => sock.destroy());
  });
  server.on('error', (e) => {
    process.stderr.write(`netcli serve: ${errText(e)}\n`);
    process.exit(1);
  });
  server.listen({ host, port, backlog: 4096 }, () => {
    process.stdout.write(`listening ${host}:${port}\n`);
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

/** Sequential round trips over one connection. */
function rr(host: string, port: number, seconds: number, max: number, size: number): Promise<ClientResult> {
  return new Promise((resolve) => {
    const lat = new Float64Array(max);
    const msg = Buffer.alloc(size, 0x61);
    let count = 0;
    let got = 0;
    let sentAt = 0n;
    let startNs = 0n;
    let deadline = 0n;
    let finished = false;
    const sock = net.connect({ host, port });
    const finish = (by: ClientResult['stoppedBy'], error?: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(summarize('rr', lat, count, error === undefined ? 0 : 1, error, startNs === 0n ? nowNs() : startNs, by));
    };
    let timer = setTimeout(() => finish('errors', `no connection within ${STEP_TIMEOUT_MS} ms`), STEP_TIMEOUT_MS);
    const send = (): void => {
      got = 0;
      sentAt = nowNs();
      sock.write(msg);
      clearTimeout(timer);
      timer = setTimeout(() => finish('errors', `no reply within ${STEP_TIMEOUT_MS} ms after ${count} round trips`), STEP_TIMEOUT_MS);
    };
    sock.setNoDelay(true);
    sock.on('connect', () => {
      startNs = nowNs();
      deadline = startNs + BigInt(Math.round(seconds * 1e9));
      send();
    });
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got < size) return;
      const t = nowNs();
      lat[count++] = Number(t - sentAt) / 1e3;
      if (count >= max) return finish('count');
      if (t >= deadline) return finish('time');
      send();
    });
    sock.on('error', (e) => finish('errors', errText(e)));
    sock.on('close', () => finish('errors', `connection closed after ${count} round trips`));
  });
}

/**
 * One connection: connect, write, read the echo, end, wait for close. Resolves µs from
 * connect() to the echo. With `socks`, the connection goes to that SOCKS5 proxy instead: its
 * `request` (greeting and CONNECT in one write) goes first, and the message follows once both
 * replies are in.
 */
function oneConnection(host: string, port: number, msg: Buffer, socks?: { host: string; port: number; request: Buffer }): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = nowNs();
    let replyUs = -1;
    /** The proxy's replies read so far; null once the handshake is over (or without one). */
    let handshake: Buffer | null = socks ? Buffer.alloc(0) : null;
    let got = 0;
    let settled = false;
    const sock = socks ? net.connect({ host: socks.host, port: socks.port }) : net.connect({ host, port });
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(
      () => fail(handshake ? `no SOCKS5 reply within ${STEP_TIMEOUT_MS} ms` : replyUs < 0 ? `no reply within ${STEP_TIMEOUT_MS} ms` : `close not finished within ${STEP_TIMEOUT_MS} ms`),
      STEP_TIMEOUT_MS,
    );
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(socks ? socks.request : msg));
    sock.on('data', (d: Buffer) => {
      if (handshake) {
        handshake = Buffer.concat([handshake, d]);
        let n: number;
        try {
          n = socksRepliesLength(handshake);
        } catch (e) {
          return fail(errText(e));
        }
        if (n === 0) return;
        d = handshake.subarray(n);
        handshake = null;
        sock.write(msg);
      }
      got += d.length;
      if (got >= msg.length && replyUs < 0) {
        replyUs = Number(nowNs() - t0) / 1e3;
        sock.end();
      }
    });
    sock.on('error', (e) => fail(errText(e)));
    sock.on('close', () => {
      if (settled) return;
      if (replyUs < 0) return fail(handshake ? 'the proxy closed during the SOCKS5 handshake' : `closed after ${got} of ${msg.length} reply bytes`);
      settled = true;
      clearTimeout(timer);
      resolve(replyUs);
    });
  });
}

async function cps(host: string, port: number, seconds: number, max: number, size: number): Promise<ClientResult> {
  const msg = Buffer.alloc(size, 0x62);
  return sequential('cps', seconds, max, () => oneConnection(host, port, msg));
}

/** `one` after `one` until SECONDS, MAX successes or MAX_ERRORS failures; each resolves µs. */
async function sequential(mode: ClientResult['mode'], seconds: number, max: number, one: () => Promise<number>): Promise<ClientResult> {
  const lat = new Float64Array(max);
  let count = 0;
  let errors = 0;
  let firstError: string | undefined;
  const startNs = nowNs();
  const deadline = startNs + BigInt(Math.round(seconds * 1e9));
  let by: ClientResult['stoppedBy'] = 'time';
  while (nowNs() < deadline) {
    if (count >= max) {
      by = 'count';
      break;
    }
    if (errors >= MAX_ERRORS) {
      by = 'errors';
      break;
    }
    try {
      lat[count] = await one();
      count++;
    } catch (e) {
      errors++;
      firstError ??= errText(e);
    }
  }
  return summarize(mode, lat, count, errors, firstError, startNs, by);
}

/** Greeting (no authentication) and CONNECT to an IPv4 `host:port`, in one buffer (RFC 1928). */
export function socksConnectRequest(host: string, port: number): Buffer {
  const b = Buffer.alloc(3 + 10);
  b.set([5, 1, 0], 0); // VER, NMETHODS, NO AUTHENTICATION REQUIRED
  b.set([5, 1, 0, 1], 3); // VER, CONNECT, RSV, ATYP IPv4
  b.set(host.split('.').map(Number), 7);
  b.writeUInt16BE(port, 11);
  return b;
}

/**
 * Bytes of the proxy's replies to a pipelined greeting and CONNECT, once `buf` holds them all:
 * the method selection (2) and the CONNECT reply (its length depends on the address type);
 * 0 while incomplete; throws on a refusal.
 */
export function socksRepliesLength(buf: Buffer): number {
  if (buf.length < 2) return 0;
  if (buf[0] !== 5 || buf[1] !== 0) throw new Error(`proxy refused the greeting (${buf.subarray(0, 2).toString('hex')})`);
  if (buf.length < 7) return 0;
  if (buf[2] !== 5 || buf[3] !== 0) throw new Error(`proxy refused CONNECT (reply ${buf[3] ?? '?'})`);
  const atyp = buf[5];
  const addr = atyp === 1 ? 4 : atyp === 4 ? 16 : atyp === 3 ? 1 + (buf[6] ?? 0) : -1;
  if (addr < 0) throw new Error(`proxy replied with address type ${atyp ?? '?'}`);
  const total = 2 + 4 + addr + 2;
  return buf.length >= total ? total : 0;
}

async function socksCps(host: string, port: number, seconds: number, max: number, size: number, proxyHost: string, proxyPort: number): Promise<ClientResult> {
  const msg = Buffer.alloc(size, 0x63);
  const request = socksConnectRequest(host, port);
  return sequential('socks-cps', seconds, max, () => oneConnection(host, port, msg, { host: proxyHost, port: proxyPort, request }));
}

/** One HTTP/1.1 GET on a new connection: µs from connect() to the response's first byte. */
function oneRequest(host: string, port: number, request: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = nowNs();
    let firstUs = -1;
    let head = '';
    let settled = false;
    const sock = net.connect({ host, port });
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(firstUs < 0 ? `no response within ${STEP_TIMEOUT_MS} ms` : `response not finished within ${STEP_TIMEOUT_MS} ms`), STEP_TIMEOUT_MS);
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (d: Buffer) => {
      if (firstUs < 0) firstUs = Number(nowNs() - t0) / 1e3;
      if (head.length < 64) head += d.toString('latin1', 0, Math.min(d.length, 64));
    });
    sock.on('error', (e) => fail(errText(e)));
    // Connection: close: the server ends the connection after the response.
    sock.on('end', () => sock.end());
    sock.on('close', () => {
      if (settled) return;
      if (firstUs < 0) return fail('closed before any response');
      if (!/^HTTP\/1\.[01] 200 /.test(head)) return fail(`unexpected response ${JSON.stringify(head.split('\r\n')[0] ?? '')}`);
      settled = true;
      clearTimeout(timer);
      resolve(firstUs);
    });
  });
}

async function ttfb(host: string, port: number, seconds: number, max: number, path: string): Promise<ClientResult> {
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`, 'latin1');
  return sequential('ttfb', seconds, max, () => oneRequest(host, port, request));
}

export interface HoldResult {
  mode: 'hold';
  /** Connections open (connected and echoed 1 byte) when the opening ended. */
  open: number;
  failed: number;
  firstError?: string;
  /** From the first connect() to the last connection proven (or the give-up), s. */
  openS: number;
  /** 'count': all were tried; 'time': SECONDS ran out first. */
  stoppedBy: 'count' | 'time';
}

/**
 * Open `count` connections, at most `concurrency` in progress at a time, each proven by a
 * 1-byte echo; report; hold them idle until SIGTERM. A connection that fails is not retried.
 */
function hold(host: string, port: number, count: number, seconds: number, concurrency: number): void {
  const socks: net.Socket[] = [];
  const t0 = nowNs();
  const deadline = t0 + BigInt(Math.round(seconds * 1e9));
  const one = Buffer.from([0x68]);
  let started = 0;
  let inFlight = 0;
  let open = 0;
  let failed = 0;
  let firstError: string | undefined;
  let reported = false;
  const report = (by: HoldResult['stoppedBy']): void => {
    if (reported) return;
    reported = true;
    clearInterval(clock);
    const r: HoldResult = { mode: 'hold', open, failed, openS: Number(nowNs() - t0) / 1e9, stoppedBy: by };
    if (firstError !== undefined) r.firstError = firstError;
    process.stdout.write(JSON.stringify(r) + '\n');
  };
  const settle = (ok: boolean, why?: string): void => {
    inFlight--;
    if (ok) open++;
    else {
      failed++;
      firstError ??= why;
    }
    next();
  };
  const next = (): void => {
    if (reported) return;
    while (inFlight < concurrency && started < count) {
      started++;
      inFlight++;
      let done = false;
      const sock = net.connect({ host, port });
      socks.push(sock);
      sock.on('connect', () => sock.write(one));
      sock.once('data', () => {
        if (done) return;
        done = true;
        settle(true);
      });
      sock.on('error', (e) => {
        if (done) return;
        done = true;
        settle(false, errText(e));
      });
    }
    if (inFlight === 0 && started >= count) report('count');
  };
  const clock = setInterval(() => {
    if (nowNs() >= deadline) report('time');
  }, 100);
  next();
  process.on('SIGTERM', () => process.exit(0));
}

/** A DNS query (RFC 1035 §4.1): recursion desired, one question `name` A IN. */
export function dnsQuery(id: number, name: string): Buffer {
  const labels = name.split('.').filter((l) => l.length > 0);
  const qname = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(1, 0); // A
  tail.writeUInt16BE(1, 2); // IN
  return Buffer.concat([header, qname, tail]);
}

/**
 * Sequential DNS queries over one connected UDP socket (answers from elsewhere never reach it):
 * each asks a new name, q<N>.DOMAIN, so no cache on the way can answer it. An answer counts
 * when it carries the query's ID, QR, NOERROR and at least one answer record; an answer to an
 * earlier query (after its timeout) is ignored.
 */
function dnsClient(host: string, port: number, seconds: number, max: number, domain: string): Promise<ClientResult> {
  return new Promise((resolve) => {
    const lat = new Float64Array(max);
    const sock = dgram.createSocket('udp4');
    let count = 0;
    let errors = 0;
    let firstError: string | undefined;
    let seq = 0;
    let id = -1;
    let sentAt = 0n;
    let startNs = 0n;
    let deadline = 0n;
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (by: ClientResult['stoppedBy']): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.close();
      resolve(summarize('dns', lat, count, errors, firstError, startNs === 0n ? nowNs() : startNs, by));
    };
    const next = (): void => {
      if (finished) return;
      if (count >= max) return finish('count');
      if (nowNs() >= deadline) return finish('time');
      seq++;
      id = seq & 0xffff;
      const q = dnsQuery(id, `q${seq}.${domain}`);
      sentAt = nowNs();
      sock.send(q);
      timer = setTimeout(() => fail(`no answer within ${STEP_TIMEOUT_MS} ms (query ${seq})`), STEP_TIMEOUT_MS);
    };
    const fail = (why: string): void => {
      if (finished) return;
      clearTimeout(timer);
      id = -1;
      errors++;
      firstError ??= why;
      if (errors >= MAX_ERRORS) return finish('errors');
      next();
    };
    sock.on('message', (m: Buffer) => {
      if (finished || m.length < 12 || m.readUInt16BE(0) !== id || (m[2] & 0x80) === 0) return;
      const t = nowNs();
      clearTimeout(timer);
      const rcode = m[3] & 0x0f;
      const answers = m.readUInt16BE(6);
      if (rcode !== 0 || answers === 0) return fail(`answer with RCODE ${rcode} and ${answers} records (query ${seq})`);
      lat[count++] = Number(t - sentAt) / 1e3;
      next();
    });
    sock.on('error', (e) => fail(errText(e)));
    const guard = setTimeout(() => {
      errors++;
      firstError ??= `could not connect the UDP socket within ${STEP_TIMEOUT_MS} ms`;
      finish('errors');
    }, STEP_TIMEOUT_MS);
    sock.connect(port, host, () => {
      clearTimeout(guard);
      startNs = nowNs();
      deadline = startNs + BigInt(Math.round(seconds * 1e9));
      next();
    });
  });
}

function num(v: string | undefined, what: string, min: number): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`netcli: ${what} must be a number >= ${min}, got ${String(v)}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const [mode, host, portArg, secondsArg, maxArg, sizeArg] = argv;
  // ttfb may name its server (connect by name: each request resolves it, as through fake-IP DNS).
  if (host === undefined || !(/^[0-9.]+$/.test(host) || (mode === 'ttfb' && /^[a-z0-9][a-z0-9.-]{0,252}$/i.test(host)))) {
    throw new Error(
      'usage: netcli serve|rr|cps HOST PORT [SECONDS MAX SIZE] | dns HOST PORT SECONDS MAX DOMAIN | ' +
        'socks-cps HOST PORT SECONDS MAX SIZE PROXY_HOST PROXY_PORT | ttfb HOST PORT SECONDS MAX PATH | hold HOST PORT COUNT SECONDS CONCURRENCY',
    );
  }
  const port = num(portArg, 'PORT', 1);
  if (mode === 'serve') {
    serve(host, port);
    return -1; // keep running
  }
  if (mode === 'hold') {
    // hold HOST PORT COUNT SECONDS CONCURRENCY
    hold(host, port, Math.floor(num(secondsArg, 'COUNT', 1)), num(maxArg, 'SECONDS', 0.1), Math.floor(num(sizeArg, 'CONCURRENCY', 1)));
    return -1; // keep running until SIGTERM
  }
  if (mode !== 'rr' && mode !== 'cps' && mode !== 'dns' && mode !== 'socks-cps' && mode !== 'ttfb') throw new Error(`netcli: unknown mode ${String(mode)}`);
  const seconds = num(secondsArg, 'SECONDS', 0.1);
  const max = Math.floor(num(maxArg, 'MAX', 1));
  if (mode === 'dns') {
    const domain = sizeArg ?? '';
    if (!/^[a-z0-9-]{1,40}(\.[a-z0-9-]{1,40}){0,4}$/i.test(domain)) throw new Error(`netcli dns: bad DOMAIN ${JSON.stringify(domain)}`);
    const r = await dnsClient(host, port, seconds, max, domain);
    process.stdout.write(JSON.stringify(r) + '\n');
    return r.count > 0 ? 0 : 1;
  }
  if (mode === 'ttfb') {
    const path = sizeArg ?? '';
    if (!/^\/[\w./-]{0,200}$/.test(path)) throw new Error(`netcli ttfb: bad PATH ${JSON.stringify(path)}`);
    const r = await ttfb(host, port, seconds, max, path);
    process.stdout.write(JSON.stringify(r) + '\n');
    return r.count > 0 ? 0 : 1;
  }
  const size = Math.floor(num(sizeArg, 'SIZE', 1));
  if (mode === 'socks-cps') {
    const proxyHost = argv[6];
    if (proxyHost === undefined || !/^[0-9.]+$/.test(proxyHost) || !/^[0-9.]+$/.test(host)) throw new Error('netcli socks-cps: HOST and PROXY_HOST must be IPv4 addresses');
    const r = await socksCps(host, port, seconds, max, size, proxyHost, num(argv[7], 'PROXY_PORT', 1));
    process.stdout.write(JSON.stringify(r) + '\n');
    return r.count > 0 ? 0 : 1;
  }
  const r = mode === 'rr' ? await rr(host, port, seconds, max, size) : await cps(host, port, seconds, max, size);
  process.stdout.write(JSON.stringify(r) + '\n');
  return r.count > 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(`${errText(e)}\n`);
    process.exit(2);
  },
);
