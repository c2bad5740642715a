/**
 * The lab the TCP-through-SOCKS5 end-to-end files share (tcp-*.test.ts):
 *
 *   ns c (the app + tunroute)                       ns s (upstreams)
 *   tun0 ← 10.66.1.0/24                             10.66.1.7, .8 on lo (the "remote" destinations)
 *   10.99.0.1 ───────────── veth ───────────────── 10.99.0.2: dante :1080, servers on 0.0.0.0
 *
 * The app reaches the destination through tunroute at 10.66.1.7 and directly at 10.99.0.2, so
 * every behaviour can be compared with the direct path. The fixtures (fixtures/tcp-*.mjs) run
 * inside the namespaces with `ip netns exec`.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, startDante, type LabProcess, type Namespace } from '../../tools/lab/index.js';
import { startTunrouteIn } from '../helpers/e2e.js';

export const DEST = '10.66.1.7';
/** A second destination on s's lo, for rules that send it through another proxy. */
export const DEST2 = '10.66.1.8';
export const DIRECT = '10.99.0.2';
export const ROUTE = '10.66.1.0/24';
export const PROXY = `socks5://${DIRECT}:1080`;

export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

export interface TcpLab {
  lab: Lab;
  c: Namespace;
  s: Namespace;
  dante: LabProcess;
}

export async function createTcpLab(): Promise<TcpLab> {
  const lab = await Lab.create();
  try {
    const ns = { tcpTwReuse: true, wideLocalPortRange: true };
    const c = await lab.addNamespace('c', ns);
    const s = await lab.addNamespace('s', ns);
    await lab.link(c, s, { cidrA: '10.99.0.1/24', cidrB: `${DIRECT}/24` });
    await s.exec(['ip', 'addr', 'add', `${DEST}/32`, 'dev', 'lo']);
    await s.exec(['ip', 'addr', 'add', `${DEST2}/32`, 'dev', 'lo']);
    const dante = await startDante(s, { listen: DIRECT, port: 1080 });
    return { lab, c, s, dante };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

/** `tunroute up` in `ns`, its control socket in the lab's temp dir (never the host's /run). */
export async function startTunroute(ns: Namespace, args: readonly string[], name = 'tunroute'): Promise<{ proc: LabProcess; control: string }> {
  const control = join(ns.lab.tmpDir, `${name}-${ns.role}.sock`);
  const proc = await startTunrouteIn(ns, [...args, '--control', control], name);
  return { proc, control };
}

/** Parse the one JSON line a fixture printed (the last line starting with '{'). */
export function jsonLine<T>(stdout: string, what: string): T {
  const line = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (line === undefined) throw new Error(`${what} printed no JSON line; stdout: ${stdout.slice(-2000)}`);
  return JSON.parse(line) as T;
}

/** Poll `check` every `everyMs` until it returns a value, or throw after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
