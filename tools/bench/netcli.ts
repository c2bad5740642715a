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
 *
 * The clients stop after SECONDS or MAX round trips / connections / queries, whichever comes
 * first; every connect, reply and answer is bounded by a timeout, and after a few errors the
 * client gives up.
 * They print one JSON line (ClientResult) on stdout and exit 0 if anything was measured.
 */
import dgram from 'node:dgram';
import net from 'node:net';

export interface ClientResult {
  mode: 'rr' | 'cps' | 'dns';
  /** Completed round trips (rr), connections (cps) or answered queries (dns). */
  count: number;
  errors: number;
  firstError?: string;
  elapsedS: number;
  /** count / elapsedS */
  rate: number;
  /** Per round trip (rr), per connection from connect() to the reply (cps) or per query (dns), µs. */
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

/** One connection: connect, write, read the echo, end, wait for close. Resolves µs to the reply. */
function oneConnection(host: string, port: number, msg: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = nowNs();
    let replyUs = -1;
    let got = 0;
    let settled = false;
    const sock = net.connect({ host, port });
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(
      () => fail(replyUs < 0 ? `no reply within ${STEP_TIMEOUT_MS} ms` : `close not finished within ${STEP_TIMEOUT_MS} ms`),
      STEP_TIMEOUT_MS,
    );
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(msg));
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= msg.length && replyUs < 0) {
        replyUs = Number(nowNs() - t0) / 1e3;
        sock.end();
      }
    });
    sock.on('error', (e) => fail(errText(e)));
    sock.on('close', () => {
      if (settled) return;
      if (replyUs < 0) return fail(`closed after ${got} of ${msg.length} reply bytes`);
      settled = true;
      clearTimeout(timer);
      resolve(replyUs);
    });
  });
}

async function cps(host: string, port: number, seconds: number, max: number, size: number): Promise<ClientResult> {
  const lat = new Float64Array(max);
  const msg = Buffer.alloc(size, 0x62);
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
      lat[count] = await oneConnection(host, port, msg);
      count++;
    } catch (e) {
      errors++;
      firstError ??= errText(e);
    }
  }
  return summarize('cps', lat, count, errors, firstError, startNs, by);
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
  if (host === undefined || !/^[0-9.]+$/.test(host)) throw new Error('usage: netcli serve|rr|cps HOST PORT [SECONDS MAX SIZE] | dns HOST PORT SECONDS MAX DOMAIN');
  const port = num(portArg, 'PORT', 1);
  if (mode === 'serve') {
    serve(host, port);
    return -1; // keep running
  }
  if (mode !== 'rr' && mode !== 'cps' && mode !== 'dns') throw new Error(`netcli: unknown mode ${String(mode)}`);
  const seconds = num(secondsArg, 'SECONDS', 0.1);
  const max = Math.floor(num(maxArg, 'MAX', 1));
  if (mode === 'dns') {
    const domain = sizeArg ?? '';
    if (!/^[a-z0-9-]{1,40}(\.[a-z0-9-]{1,40}){0,4}$/i.test(domain)) throw new Error(`netcli dns: bad DOMAIN ${JSON.stringify(domain)}`);
    const r = await dnsClient(host, port, seconds, max, domain);
    process.stdout.write(JSON.stringify(r) + '\n');
    return r.count > 0 ? 0 : 1;
  }
  const size = Math.floor(num(sizeArg, 'SIZE', 1));
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
