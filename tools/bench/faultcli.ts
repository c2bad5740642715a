/**
 * Helpers of the reliability test (reliability.ts) that run inside the lab namespaces, as
 * separate processes (a Node process cannot enter a network namespace itself). Every loop is
 * bounded in count and time; each prints one JSON line when it is done (or when asked).
 *
 *   node dist-tools/tools/bench/faultcli.js watch HOST PORT COUNT SECONDS
 *       open COUNT TCP connections, each proven by a 1-byte echo, print {"mode":"watch-open",...},
 *       then watch them idle: every close is recorded (ECONNRESET, an orderly end, another error)
 *       with its wall-clock time; print {"mode":"watch",...} once all closed, on SIGTERM, or after
 *       SECONDS in all
 *   node dist-tools/tools/bench/faultcli.js probe HOST PORT PROXY_HOST PROXY_PORT SECONDS
 *       every PROBE_EVERY_MS start two attempts side by side: a connection to HOST:PORT proven by
 *       a 1-byte echo (through tunroute), and a bare TCP connect to PROXY_HOST:PROXY_PORT (is the
 *       proxy listening yet?); print the wall-clock time of the first success of each once the
 *       first has succeeded, or after SECONDS
 *   node dist-tools/tools/bench/faultcli.js udp-count HOST PORT
 *       count UDP datagrams arriving on HOST:PORT; on SIGUSR2 print {"mode":"udp-count","seq":N,...}
 *       (N counts the requests), on SIGTERM print it and exit
 *   node dist-tools/tools/bench/faultcli.js udp-send HOST PORT COUNT PPS
 *       send COUNT datagrams of 64 bytes (a sequence number first) at PPS per second
 *   node dist-tools/tools/bench/faultcli.js wg-relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT FORGED REPLAYED PPS SEED
 *       a UDP relay between a WireGuard client (which sends to LISTEN) and its server (TARGET):
 *       it keeps copies of the server's transport data messages (type 4, longer than a
 *       keepalive) towards the client; on SIGUSR1 it sends the client FORGED forged datagrams
 *       (seeded: random bytes; type 1, 2 and 3 headers with random contents; type 4 with a random
 *       receiver index; type 4 with the client's real receiver index, a new counter and a wrong
 *       tag), then REPLAYED copies of the captured messages, at PPS per second, from the address
 *       the client knows as its server's, and prints {"mode":"wg-attack",...}
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { mulberry32 } from '../../src/link/memory.js';

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function num(v: string | undefined, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`faultcli: ${what} must be a number from ${min} to ${max}, got ${String(v)}`);
  return n;
}

function ipv4(v: string | undefined, what: string): string {
  if (v === undefined || !/^\d{1,3}(\.\d{1,3}){3}$/.test(v)) throw new Error(`faultcli: ${what} must be an IPv4 address, got ${String(v)}`);
  return v;
}

function print(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

// ---------------------------------------------------------------------------------------------
// watch: do open flows learn that their upstream died?

/** How one watched connection ended. */
type CloseKind = 'reset' | 'end' | 'error';

export interface WatchOpenResult {
  mode: 'watch-open';
  open: number;
  failed: number;
  firstError?: string;
}

export interface WatchResult {
  mode: 'watch';
  open: number;
  /** Closes by kind: ECONNRESET, an orderly end (FIN), another error. */
  reset: number;
  end: number;
  error: number;
  firstError?: string;
  /** Still open when the watch ended. */
  stillOpen: number;
  /** Wall-clock time (ms since the epoch) of every close, in order. */
  closedAtMs: number[];
  stoppedBy: 'all-closed' | 'signal' | 'time';
}

const CONNECT_TIMEOUT_MS = 5000;

function watch(host: string, port: number, count: number, seconds: number): void {
  const one = Buffer.from([0x77]);
  const socks: net.Socket[] = [];
  let open = 0;
  let failed = 0;
  let firstError: string | undefined;
  let opened = false;
  const r: WatchResult = { mode: 'watch', open: 0, reset: 0, end: 0, error: 0, stillOpen: 0, closedAtMs: [], stoppedBy: 'time' };
  let finished = false;
  const finish = (by: WatchResult['stoppedBy']): void => {
    if (finished) return;
    finished = true;
    r.open = open;
    r.stillOpen = open - r.closedAtMs.length;
    r.stoppedBy = by;
    print(r);
    process.exit(0);
  };
  const closed = (kind: CloseKind, why?: string): void => {
    r[kind]++;
    r.closedAtMs.push(Date.now());
    if (kind === 'error') r.firstError ??= why;
    if (opened && r.closedAtMs.length >= open) finish('all-closed');
  };
  let settled = 0;
  const settle = (): void => {
    if (++settled < count) return;
    opened = true;
    const o: WatchOpenResult = { mode: 'watch-open', open, failed };
    if (firstError !== undefined) o.firstError = firstError;
    print(o);
    if (open === 0 || r.closedAtMs.length >= open) finish('all-closed');
  };
  for (let i = 0; i < count; i++) {
    let proven = false;
    let gone = false;
    const sock = net.connect({ host, port });
    socks.push(sock);
    const timer = setTimeout(() => {
      if (proven || gone) return;
      gone = true;
      failed++;
      firstError ??= `no echo within ${CONNECT_TIMEOUT_MS} ms`;
      sock.destroy();
      settle();
    }, CONNECT_TIMEOUT_MS);
    sock.on('connect', () => sock.write(one));
    sock.once('data', () => {
      if (gone) return;
      proven = true;
      clearTimeout(timer);
      open++;
      settle();
    });
    // An orderly end from the far side: answer with ours, count it once.
    sock.on('end', () => {
      if (!proven || gone) return;
      gone = true;
      closed('end');
      sock.destroy();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (gone) return;
      gone = true;
      clearTimeout(timer);
      if (!proven) {
        failed++;
        firstError ??= errText(e);
        settle();
        return;
      }
      if (e.code === 'ECONNRESET') closed('reset');
      else closed('error', errText(e));
    });
    sock.on('close', () => {
      if (gone || !proven) return;
      gone = true;
      closed('end');
    });
  }
  setTimeout(() => finish('time'), seconds * 1000);
  process.on('SIGTERM', () => finish('signal'));
}

// ---------------------------------------------------------------------------------------------
// probe: when do new flows work again?

export interface ProbeResult {
  mode: 'probe';
  /** Wall-clock time (ms since the epoch) of the first echo through HOST:PORT, or null. */
  flowOkAtMs: number | null;
  /** Wall-clock time of the first accepted TCP connect to the proxy, or null. */
  proxyUpAtMs: number | null;
  /**
   * Wall-clock time of the first echo through the proxy by a SOCKS5 client of our own (greeting
   * and CONNECT to HOST:PORT pipelined, no tunroute): when the proxy really serves again.
   */
  proxyServesAtMs: number | null;
  attempts: number;
  failures: number;
  lastError?: string;
  stoppedBy: 'ok' | 'time';
}

const PROBE_EVERY_MS = 20;
const PROBE_TIMEOUT_MS = 3000;

/** A SOCKS5 greeting (no authentication) and a CONNECT to host:port, in one write. */
function socksRequest(host: string, port: number): Buffer {
  const b = Buffer.alloc(3 + 10);
  b.set([5, 1, 0, 5, 1, 0, 1], 0);
  host.split('.').forEach((o, i) => (b[7 + i] = Number(o)));
  b.writeUInt16BE(port, 11);
  return b;
}

/**
 * Connect to `host:port` (through `via`, a SOCKS5 proxy, when given), send one byte, call `ok`
 * on its echo or `fail` (once) on anything else within PROBE_TIMEOUT_MS.
 */
function echoOnce(host: string, port: number, via: { host: string; port: number } | undefined, ok: () => void, fail: (why: string) => void): void {
  let done = false;
  const one = Buffer.from([0x70]);
  const sock = net.connect(via ?? { host, port });
  const end = (why?: string): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    if (why === undefined) ok();
    else fail(why);
  };
  const timer = setTimeout(() => end(`no echo within ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS);
  // Through the proxy: 2 bytes of method reply and 10 of CONNECT reply come first, then the echo.
  let reply: Buffer | undefined = via ? Buffer.alloc(0) : undefined;
  sock.on('connect', () => sock.write(via ? socksRequest(host, port) : one));
  sock.on('data', (d: Buffer) => {
    if (reply === undefined) return end();
    reply = Buffer.concat([reply, d]);
    if (reply.length < 12) return;
    if (reply[1] !== 0) return end('the proxy refused the method');
    if (reply[3] !== 0) return end(`the proxy answered CONNECT with ${reply[3]}`);
    const echoed = reply.length > 12;
    reply = undefined;
    if (echoed) return end();
    sock.write(one);
  });
  sock.on('error', (e) => end(errText(e)));
  sock.on('close', () => end('closed before the echo'));
}

function probe(host: string, port: number, proxyHost: string, proxyPort: number, seconds: number): void {
  const r: ProbeResult = { mode: 'probe', flowOkAtMs: null, proxyUpAtMs: null, proxyServesAtMs: null, attempts: 0, failures: 0, stoppedBy: 'time' };
  let finished = false;
  const finish = (by: ProbeResult['stoppedBy']): void => {
    if (finished) return;
    finished = true;
    r.stoppedBy = by;
    print(r);
    process.exit(0);
  };
  const maybeDone = (): void => {
    if (r.flowOkAtMs !== null && r.proxyServesAtMs !== null) finish('ok');
  };
  const attempt = (): void => {
    if (finished) return;
    r.attempts++;
    echoOnce(
      host,
      port,
      undefined,
      () => {
        r.flowOkAtMs ??= Date.now();
        maybeDone();
      },
      (why) => {
        r.failures++;
        r.lastError = why;
      },
    );
    if (r.proxyServesAtMs === null) {
      echoOnce(
        host,
        port,
        { host: proxyHost, port: proxyPort },
        () => {
          r.proxyServesAtMs ??= Date.now();
          maybeDone();
        },
        () => undefined,
      );
    }
    if (r.proxyUpAtMs === null) {
      const p = net.connect({ host: proxyHost, port: proxyPort });
      p.on('connect', () => {
        r.proxyUpAtMs ??= Date.now();
        p.destroy();
      });
      p.on('error', () => p.destroy());
      p.setTimeout(PROBE_TIMEOUT_MS, () => p.destroy());
    }
  };
  const tick = setInterval(attempt, PROBE_EVERY_MS);
  attempt();
  setTimeout(() => {
    clearInterval(tick);
    finish('time');
  }, seconds * 1000);
}

// ---------------------------------------------------------------------------------------------
// UDP: genuine traffic through the tunnel, counted where it lands

function udpCount(host: string, port: number): void {
  const sock = dgram.createSocket('udp4');
  let received = 0;
  let bytes = 0;
  let seq = 0;
  sock.on('message', (m) => {
    received++;
    bytes += m.length;
  });
  sock.on('error', (e) => {
    process.stderr.write(`faultcli udp-count: ${errText(e)}\n`);
    process.exit(1);
  });
  sock.bind(port, host, () => process.stdout.write(`listening ${host}:${port}\n`));
  const report = (): void => print({ mode: 'udp-count', seq: ++seq, received, bytes });
  process.on('SIGUSR2', report);
  process.on('SIGTERM', () => {
    report();
    process.exit(0);
  });
}

async function udpSend(host: string, port: number, count: number, pps: number): Promise<number> {
  const sock = dgram.createSocket('udp4');
  const msg = Buffer.alloc(64, 0x75);
  const t0 = performance.now();
  let sent = 0;
  for (let i = 0; i < count; i++) {
    msg.writeUInt32BE(i, 0);
    await new Promise<void>((resolve) => sock.send(msg, port, host, () => resolve()));
    sent++;
    const due = t0 + ((i + 1) * 1000) / pps;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  }
  sock.close();
  print({ mode: 'udp-send', sent, seconds: (performance.now() - t0) / 1000 });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// wg-relay: capture genuine WireGuard transport messages, then forge and replay


/** The kinds of forged datagrams, in the order they are sent (round robin). */
export const FORGED_KINDS = ['random_bytes', 'type1_random', 'type2_random', 'type3_random', 'type4_random_index', 'type4_known_index_bad_tag'] as const;
export type ForgedKind = (typeof FORGED_KINDS)[number];

export interface WgAttackResult {
  mode: 'wg-attack';
  /** Genuine type-4 messages (server → client, not keepalives) captured before the attack. */
  captured: number;
  /** Datagrams relayed each way before the attack. */
  relayedUp: number;
  relayedDown: number;
  /** The client's receiver index seen in the captured messages (hex), or null. */
  knownIndex: string | null;
  forged: Record<ForgedKind, number>;
  forgedSent: number;
  replayedSent: number;
  sendErrors: number;
  seconds: number;
}

/** Sizes of WireGuard's messages (whitepaper §5.4). */
const WG_INITIATION_LEN = 148;
const WG_RESPONSE_LEN = 92;
const WG_COOKIE_LEN = 64;
const WG_KEEPALIVE_LEN = 32;
/** Copies kept for replay. */
const CAPTURE_MAX = 4096;

function wgRelay(listenHost: string, listenPort: number, targetHost: string, targetPort: number, forged: number, replayed: number, pps: number, seed: number): void {
  const front = dgram.createSocket('udp4'); // faces the client
  const back = dgram.createSocket('udp4'); // faces the server
  let client: { address: string; port: number } | undefined;
  const captured: Buffer[] = [];
  let knownIndex: Buffer | undefined;
  let maxCounter = 0n;
  let relayedUp = 0;
  let relayedDown = 0;
  let attacking = false;
  front.on('message', (m, from) => {
    client = { address: from.address, port: from.port };
    relayedUp++;
    back.send(m, targetPort, targetHost);
  });
  back.on('message', (m) => {
    if (client === undefined) return;
    relayedDown++;
    if (!attacking && m.length > WG_KEEPALIVE_LEN && m[0] === 4 && captured.length < CAPTURE_MAX) {
      captured.push(Buffer.from(m));
      knownIndex = m.subarray(4, 8);
      const c = m.readBigUInt64LE(8);
      if (c > maxCounter) maxCounter = c;
    }
    front.send(m, client.port, client.address);
  });
  for (const s of [front, back]) {
    s.on('error', (e) => {
      process.stderr.write(`faultcli wg-relay: ${errText(e)}\n`);
      process.exit(1);
    });
  }
  front.bind(listenPort, listenHost, () => {
    back.bind(0, () => process.stdout.write(`listening ${listenHost}:${listenPort}\n`));
  });

  const rand = mulberry32(seed); // the same forged datagrams on every run
  const fill = (b: Buffer, from = 0): Buffer => {
    for (let i = from; i < b.length; i++) b[i] = (rand() * 256) | 0;
    return b;
  };
  const forge = (kind: ForgedKind): Buffer => {
    switch (kind) {
      case 'random_bytes':
        return fill(Buffer.alloc(1 + Math.floor(rand() * 1500)));
      case 'type1_random':
        return header(fill(Buffer.alloc(WG_INITIATION_LEN)), 1);
      case 'type2_random':
        return header(fill(Buffer.alloc(WG_RESPONSE_LEN)), 2);
      case 'type3_random':
        return header(fill(Buffer.alloc(WG_COOKIE_LEN)), 3);
      case 'type4_random_index':
        return header(fill(Buffer.alloc(WG_KEEPALIVE_LEN + 16 * Math.floor(rand() * 90))), 4);
      case 'type4_known_index_bad_tag': {
        // The client's real receiver index, a counter it has not seen yet, random ciphertext
        // and tag: only the AEAD can tell it is forged, and it must not move the replay window.
        const b = header(fill(Buffer.alloc(WG_KEEPALIVE_LEN + 16 * Math.floor(rand() * 90))), 4);
        knownIndex?.copy(b, 4);
        maxCounter += 1n + BigInt(Math.floor(rand() * 1000));
        b.writeBigUInt64LE(maxCounter, 8);
        return b;
      }
    }
  };
  process.on('SIGUSR1', () => {
    if (attacking) return;
    attacking = true;
    const r: WgAttackResult = {
      mode: 'wg-attack',
      captured: captured.length,
      relayedUp,
      relayedDown,
      knownIndex: knownIndex ? knownIndex.toString('hex') : null,
      forged: Object.fromEntries(FORGED_KINDS.map((k) => [k, 0])) as Record<ForgedKind, number>,
      forgedSent: 0,
      replayedSent: 0,
      sendErrors: 0,
      seconds: 0,
    };
    const to = client;
    if (to === undefined || captured.length === 0) {
      print(r);
      return;
    }
    const t0 = performance.now();
    const total = forged + replayed;
    let i = 0;
    let pending = 0;
    const step = (): void => {
      // One batch per millisecond or so, paced to PPS; at most 64 sends in flight.
      const due = Math.min(total, Math.floor(((performance.now() - t0) * pps) / 1000) + 1);
      while (i < due && pending < 64) {
        let m: Buffer;
        if (i < forged) {
          const kind = FORGED_KINDS[i % FORGED_KINDS.length];
          m = forge(kind);
          r.forged[kind]++;
          r.forgedSent++;
        } else {
          m = captured[(i - forged) % captured.length];
          r.replayedSent++;
        }
        i++;
        pending++;
        front.send(m, to.port, to.address, (e) => {
          pending--;
          if (e) r.sendErrors++;
        });
      }
      if (i >= total && pending === 0) {
        r.seconds = (performance.now() - t0) / 1000;
        print(r);
        return;
      }
      setTimeout(step, 1);
    };
    step();
  });
}

function header(b: Buffer, type: number): Buffer {
  b[0] = type;
  b[1] = 0;
  b[2] = 0;
  b[3] = 0;
  return b;
}

// ---------------------------------------------------------------------------------------------

const USAGE =
  'usage: faultcli watch HOST PORT COUNT SECONDS | probe HOST PORT PROXY_HOST PROXY_PORT SECONDS | udp-count HOST PORT | ' +
  'udp-send HOST PORT COUNT PPS | wg-relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT FORGED REPLAYED PPS SEED';

async function main(argv: string[]): Promise<number> {
  const [mode, hostArg, portArg, a3, a4, a5, a6, a7, a8] = argv;
  const host = ipv4(hostArg, 'HOST');
  const port = num(portArg, 'PORT', 0, 65535);
  switch (mode) {
    case 'watch':
      watch(host, port, Math.floor(num(a3, 'COUNT', 1, 20_000)), num(a4, 'SECONDS', 1, 3600));
      return -1;
    case 'probe':
      probe(host, port, ipv4(a3, 'PROXY_HOST'), num(a4, 'PROXY_PORT', 1, 65535), num(a5, 'SECONDS', 1, 600));
      return -1;
    case 'udp-count':
      udpCount(host, port);
      return -1;
    case 'udp-send':
      return udpSend(host, port, Math.floor(num(a3, 'COUNT', 1, 1_000_000)), num(a4, 'PPS', 1, 1_000_000));
    case 'wg-relay':
      wgRelay(
        host,
        port,
        ipv4(a3, 'TARGET_HOST'),
        num(a4, 'TARGET_PORT', 1, 65535),
        Math.floor(num(a5, 'FORGED', 0, 1_000_000)),
        Math.floor(num(a6, 'REPLAYED', 0, 1_000_000)),
        num(a7, 'PPS', 1, 1_000_000),
        Math.floor(num(a8, 'SEED', 0, 2 ** 32 - 1)),
      );
      return -1;
    default:
      throw new Error(USAGE);
  }
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
