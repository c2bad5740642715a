/**
 * What the `tunroute server` end-to-end files share: wireguard-go as the client, and a tiny UDP
 * echo server and client for the lab's namespaces.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabProcess, Namespace } from '../../tools/lab/index.js';
import { formatKey } from '../../src/wireguard/keys.js';

export const MB = 1024 * 1024;

// A UDP echo server for w and a client for c: N datagrams out, every echo checked.
export const UDP_ECHO = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.bind(Number(process.argv[3]), process.argv[2], () => console.log('udp echo ready'));
`;
export const UDP_CLIENT = `
const [host, port, n, size] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5])];
const s = require('node:dgram').createSocket('udp4');
const got = new Set(); let bad = 0;
s.on('message', (m) => {
  const i = m.readUInt32BE(0);
  for (let k = 4; k < m.length; k++) if (m[k] !== ((i + k) & 0xff)) { bad++; break; }
  got.add(i);
});
const t0 = Date.now();
let i = 0;
const tick = () => {
  for (let b = 0; b < 10 && i < n; b++, i++) {
    const m = Buffer.alloc(size); m.writeUInt32BE(i, 0);
    for (let k = 4; k < size; k++) m[k] = (i + k) & 0xff;
    s.send(m, port, host);
  }
  if (i < n) setTimeout(tick, 5);
  else setTimeout(() => { console.log(JSON.stringify({ sent: n, received: got.size, bad, ms: Date.now() - t0 })); process.exit(0); }, 1500);
};
s.bind(0, tick);
`;

export interface Wg {
  proc: LabProcess;
  ifname: string;
}

/** wireguard-go in `ns` with one peer (the server), its address and routes. */
export async function startWireguardGo(ns: Namespace, o: { ifname: string; key: Uint8Array; serverPub: Uint8Array; endpoint: string; address: string; routes: string[] }): Promise<Wg> {
  const proc = ns.spawn(['wireguard-go', '-f', o.ifname], { name: `wireguard-go-${ns.role}` });
  const sock = `/var/run/wireguard/${o.ifname}.sock`;
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(sock)) throw new Error(`wireguard-go did not create ${sock}: ${proc.outputTail()}`);
  const conf = join(ns.lab.tmpDir, `${o.ifname}.conf`);
  writeFileSync(
    conf,
    `[Interface]\nPrivateKey = ${formatKey(o.key)}\n\n[Peer]\nPublicKey = ${formatKey(o.serverPub)}\nEndpoint = ${o.endpoint}\nAllowedIPs = 10.8.0.0/16, 10.77.0.0/24\nPersistentKeepalive = 25\n`,
    { mode: 0o600 },
  );
  await ns.exec(['wg', 'setconf', o.ifname, conf]);
  await ns.exec(['ip', 'addr', 'add', o.address, 'dev', o.ifname]);
  await ns.exec(['ip', 'link', 'set', o.ifname, 'up']);
  for (const r of o.routes) await ns.exec(['ip', 'route', 'add', r, 'dev', o.ifname]);
  return { proc, ifname: o.ifname };
}

export function mbps(bits: number): string {
  return `${(bits / 1e6).toFixed(0)} Mbit/s`;
}
