/**
 * wg-quick(8) configuration files, imported as a `wireguard` outbound (`tunroute up --tunnel
 * wg0.conf`). The format is wg(8)'s INI dialect plus wg-quick's keys:
 *
 *   # comments run from '#' to the end of the line; keys are case-insensitive
 *   [Interface]
 *   PrivateKey = <base64>              required
 *   Address = 10.8.0.2/16, fd00::2/64  optional, repeatable; the first IPv4 one is used
 *   DNS = 10.8.0.1, corp.example       optional, repeatable (reported, not applied)
 *   MTU = 1420                         optional (default 1420)
 *   ListenPort = 51820                 optional (default: any free port)
 *   [Peer]                             one or more
 *   PublicKey = <base64>               required
 *   PresharedKey = <base64>            optional
 *   Endpoint = vpn.example.com:51820   optional; host name or IPv4 address, then the port
 *   AllowedIPs = 10.8.0.0/16, ::/0     optional, repeatable; a bare address is /32 (/128)
 *   PersistentKeepalive = 25 | off     optional
 *
 * wg-quick's hooks (PreUp, PostUp, PreDown, PostDown), Table, FwMark and SaveConfig ask for
 * things tunroute does not do (run shell commands, fill another table, mark its socket, write
 * the file back): they are refused with the line and the fix rather than silently ignored.
 * Every error names the file, the line and what to change. A line that does not parse is never
 * echoed (it may be a key, `PrivateKey: …` with a colon, or a line of some other file given by
 * mistake): the error gives its number, and the key name when it starts with a known one.
 * Values of keys are quoted (escaped and cut, errors.ts `shown`) only for keys that hold no
 * secret; PrivateKey and PresharedKey are named, never shown.
 */
import { basename } from 'node:path';
import { TunrouteError } from '../errors.js';
import { readInputFile, SMALL_FILE_MAX_BYTES, warnIfShared } from './input-file.js';
import { shown, shownPath } from '../errors.js';
import type { Logger } from '../logger.js';
import { KeyFormatError, parseKey } from '../wireguard/keys.js';
import { normalizeIpv4Cidr, parseIpv6Cidr } from '../net/ipv4.js';
import { parseEndpoint } from '../net/endpoint.js';

export interface WgQuickPeer {
  publicKey: string;
  presharedKey?: string;
  endpoint?: string;
  allowedIPs: string[];
  persistentKeepalive?: number;
}

export interface WgQuickConfig {
  privateKey: string;
  address: string[];
  dns: string[];
  mtu?: number;
  listenPort?: number;
  peers: WgQuickPeer[];
}

/** The outbound a wg-quick file becomes (the config schema's `wireguard` outbound, as input). */
export interface WireguardOutboundInput {
  name: string;
  type: 'wireguard';
  privateKey: string;
  address?: string[];
  dns?: string[];
  mtu?: number;
  listenPort?: number;
  peers: WgQuickPeer[];
}

// ---------------------------------------------------------------------------------------------
// The parser

type Section = 'interface' | 'peer';

const INTERFACE_KEYS = ['privatekey', 'address', 'dns', 'mtu', 'listenport'] as const;
const PEER_KEYS = ['publickey', 'presharedkey', 'endpoint', 'allowedips', 'persistentkeepalive'] as const;
/** Keys that may appear more than once, their values adding up (as wg-quick does). */
const LIST_KEYS = new Set(['address', 'dns', 'allowedips']);
/** wg-quick keys tunroute refuses, and what to do instead. */
const REFUSED: Record<string, string> = {
  preup: 'tunroute runs no shell commands: remove the line and run the command yourself before `tunroute up`',
  postup: 'tunroute runs no shell commands: remove the line and run the command yourself after `tunroute up`',
  predown: 'tunroute runs no shell commands: remove the line and run the command yourself before `tunroute down`',
  postdown: 'tunroute runs no shell commands: remove the line and run the command yourself after `tunroute down`',
  table: 'tunroute routes AllowedIPs into its own device (see routes.table in the config for the table it uses): remove the line',
  fwmark: 'tunroute cannot mark its tunnel socket; it keeps the endpoint out of the tunnel by route instead: remove the line',
  saveconfig: 'tunroute never writes the file back: remove the line',
};
const NAMES: Record<string, string> = {
  privatekey: 'PrivateKey',
  address: 'Address',
  dns: 'DNS',
  mtu: 'MTU',
  listenport: 'ListenPort',
  publickey: 'PublicKey',
  presharedkey: 'PresharedKey',
  endpoint: 'Endpoint',
  allowedips: 'AllowedIPs',
  persistentkeepalive: 'PersistentKeepalive',
};

interface Entry {
  key: string;
  value: string;
  line: number;
}

interface RawSection {
  kind: Section;
  line: number;
  entries: Map<string, Entry[]>;
}

class WgQuickError extends TunrouteError {
  constructor(file: string, line: number | undefined, message: string) {
    super('TR_BAD_CONFIG', `${file}${line === undefined ? '' : ` line ${line}`}: ${message}.`);
  }
}

/** A key as the user wrote it, if it can be shown: a plain word (a key or a secret never is one). */
function keyName(raw: string): string | undefined {
  return /^[A-Za-z]{1,24}$/.test(raw) ? raw : undefined;
}

/** The known key a line that is not `Key = Value` starts with (`PrivateKey: …`), by its proper name. */
function knownKeyAtStart(line: string): string | undefined {
  const word = /^[A-Za-z]+/.exec(line)?.[0].toLowerCase();
  return word === undefined ? undefined : (NAMES[word] ?? (REFUSED[word] !== undefined ? word : undefined));
}

function splitList(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Parse the text of a wg-quick file; `file` names it in errors. Throws TunrouteError (TR_BAD_CONFIG). */
export function parseWgQuick(text: string, file: string): WgQuickConfig {
  const sections: RawSection[] = [];
  let current: RawSection | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const hash = lines[i].indexOf('#');
    const line = (hash < 0 ? lines[i] : lines[i].slice(0, hash)).trim();
    if (line === '') continue;
    const sec = /^\[\s*([A-Za-z]+)\s*\]$/.exec(line);
    if (sec !== null) {
      const name = sec[1].toLowerCase();
      if (name !== 'interface' && name !== 'peer') {
        throw new WgQuickError(file, n, `unknown section [${shown(sec[1], 24).slice(1, -1)}]: a wg-quick file has one [Interface] and [Peer] sections`);
      }
      if (name === 'interface' && sections.some((s) => s.kind === 'interface')) {
        throw new WgQuickError(file, n, 'a second [Interface] section: merge it into the first one');
      }
      current = { kind: name, line: n, entries: new Map() };
      sections.push(current);
      continue;
    }
    // A key is a word; anything else before the "=" (or no "=") is a line we do not echo.
    const kv = /^([A-Za-z]+)\s*=/.exec(line);
    if (kv === null) {
      const known = knownKeyAtStart(line);
      throw new WgQuickError(
        file,
        n,
        known === undefined
          ? 'the line is neither a [Section] nor a Key = Value line (it is not shown: it may hold a secret): fix or remove it'
          : `${known} is not followed by "=" (the line is not shown: it may hold a secret): write it as ${known} = <value>`,
      );
    }
    const rawKey = kv[1];
    const key = rawKey.toLowerCase();
    const value = line.slice(kv[0].length).trim();
    const named = NAMES[key] ?? keyName(rawKey);
    if (current === undefined) {
      throw new WgQuickError(file, n, `${named ?? 'a key'} comes before any section: put it under [Interface] or [Peer]`);
    }
    const refused = REFUSED[key];
    if (refused !== undefined) throw new WgQuickError(file, n, `${rawKey} is not supported: ${refused}`);
    const known: readonly string[] = current.kind === 'interface' ? INTERFACE_KEYS : PEER_KEYS;
    if (!known.includes(key)) {
      const other: readonly string[] = current.kind === 'interface' ? PEER_KEYS : INTERFACE_KEYS;
      const where = current.kind === 'interface' ? '[Interface]' : '[Peer]';
      if (other.includes(key)) {
        throw new WgQuickError(file, n, `${rawKey} belongs in ${where === '[Peer]' ? '[Interface]' : 'a [Peer] section'}, not in ${where}: move it`);
      }
      throw new WgQuickError(file, n, `${named === undefined ? 'an unknown key (not shown)' : `unknown key ${named}`} in ${where}: known keys are ${known.map((k) => NAMES[k]).join(', ')}`);
    }
    if (value === '') throw new WgQuickError(file, n, `${NAMES[key]} has no value: give one or remove the line`);
    const prev = current.entries.get(key);
    if (prev !== undefined && !LIST_KEYS.has(key)) {
      throw new WgQuickError(file, n, `${NAMES[key]} appears twice in this section (also on line ${prev[0].line}): keep one`);
    }
    current.entries.set(key, [...(prev ?? []), { key, value, line: n }]);
  }

  const iface = sections.find((s) => s.kind === 'interface');
  if (iface === undefined) throw new WgQuickError(file, undefined, 'no [Interface] section: add one with the PrivateKey of this machine');
  const peers = sections.filter((s) => s.kind === 'peer');
  if (peers.length === 0) throw new WgQuickError(file, undefined, 'no [Peer] section: add the server as a [Peer] with its PublicKey, Endpoint and AllowedIPs');

  const one = (s: RawSection, key: string): Entry | undefined => s.entries.get(key)?.[0];
  const all = (s: RawSection, key: string): Entry[] => s.entries.get(key) ?? [];
  const key = (s: RawSection, k: string, what: string): string | undefined => {
    const e = one(s, k);
    if (e === undefined) return undefined;
    try {
      parseKey(e.value, what);
    } catch (err) {
      if (err instanceof KeyFormatError) throw new WgQuickError(file, e.line, `${NAMES[k]}: ${err.message}`);
      throw err;
    }
    return e.value;
  };
  const int = (s: RawSection, k: string, min: number, max: number, fix: string): number | undefined => {
    const e = one(s, k);
    if (e === undefined) return undefined;
    if (!/^\d{1,6}$/.test(e.value) || Number(e.value) < min || Number(e.value) > max) {
      throw new WgQuickError(file, e.line, `${NAMES[k]} ${shown(e.value)} ${fix}`);
    }
    return Number(e.value);
  };

  const privateKey = key(iface, 'privatekey', 'private key');
  if (privateKey === undefined) {
    throw new WgQuickError(file, iface.line, '[Interface] has no PrivateKey: add PrivateKey = <the output of `wg genkey` or `tunroute genkey`>');
  }
  const address: string[] = [];
  for (const e of all(iface, 'address')) {
    for (const a of splitList(e.value)) {
      const v4 = normalizeIpv4Cidr(a);
      if (v4 !== undefined) address.push(a.includes('/') ? a : `${a}/32`);
      else if (parseIpv6Cidr(a) !== undefined) address.push(a);
      else throw new WgQuickError(file, e.line, `Address ${shown(a)} is not an IP address with a prefix length like 10.8.0.2/24: fix it`);
    }
  }
  const dns: string[] = [];
  for (const e of all(iface, 'dns')) dns.push(...splitList(e.value));
  const mtu = int(iface, 'mtu', 576, 65535, 'is not an MTU from 576 to 65535: use a number like 1420');
  const listenPort = int(iface, 'listenport', 0, 65535, 'is not a UDP port from 0 to 65535: use a number like 51820, or remove the line for any free port');

  const seen = new Map<string, number>();
  const outPeers = peers.map((p): WgQuickPeer => {
    const publicKey = key(p, 'publickey', 'peer public key');
    if (publicKey === undefined) {
      throw new WgQuickError(file, p.line, '[Peer] has no PublicKey: add PublicKey = <the server\'s public key, `wg pubkey` of its private key>');
    }
    const pkLine = one(p, 'publickey')!.line;
    const dup = seen.get(publicKey);
    if (dup !== undefined) throw new WgQuickError(file, pkLine, `the same PublicKey as the [Peer] on line ${dup}: merge the two sections`);
    seen.set(publicKey, p.line);
    const out: WgQuickPeer = { publicKey, allowedIPs: [] };
    const psk = key(p, 'presharedkey', 'preshared key');
    if (psk !== undefined) out.presharedKey = psk;
    const ep = one(p, 'endpoint');
    if (ep !== undefined) {
      const parsed = parseEndpoint(ep.value);
      if (parsed === undefined) {
        throw new WgQuickError(file, ep.line, `Endpoint ${shown(ep.value)} is not HOST:PORT: write it like vpn.example.com:51820 or 203.0.113.7:51820`);
      }
      if (parsed.kind === 'ipv6') {
        throw new WgQuickError(file, ep.line, `Endpoint ${shown(ep.value)} is IPv6, which tunroute cannot reach yet: use the server's IPv4 address or a name with an IPv4 address`);
      }
      out.endpoint = ep.value;
    }
    for (const e of all(p, 'allowedips')) {
      for (const a of splitList(e.value)) {
        const v4 = normalizeIpv4Cidr(a);
        if (v4 !== undefined) out.allowedIPs.push(v4);
        else if (parseIpv6Cidr(a) !== undefined) out.allowedIPs.push(a);
        else throw new WgQuickError(file, e.line, `AllowedIPs entry ${shown(a)} is not a CIDR like 10.8.0.0/16 (or an IPv6 one): fix it`);
      }
    }
    const ka = one(p, 'persistentkeepalive');
    if (ka !== undefined) {
      if (ka.value.toLowerCase() === 'off') out.persistentKeepalive = 0;
      else {
        out.persistentKeepalive = int(p, 'persistentkeepalive', 0, 65535, 'is not a number of seconds from 1 to 65535 (or off): use e.g. 25');
      }
    }
    return out;
  });
  const cfg: WgQuickConfig = { privateKey, address, dns, peers: outPeers };
  if (mtu !== undefined) cfg.mtu = mtu;
  if (listenPort !== undefined) cfg.listenPort = listenPort;
  return cfg;
}

/** The interface name wg-quick would use for the file (wg0.conf → wg0), checked as an outbound name. */
export function tunnelNameOf(path: string): string {
  const name = basename(path).replace(/\.conf$/i, '');
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(name)) {
    throw new TunrouteError(
      'TR_BAD_FLAG',
      `--tunnel ${shownPath(path)}: the tunnel is named after the file, and ${shown(name)} is not a valid name (1–32 letters, digits, "_", "-" or "."): rename the file, e.g. to wg0.conf.`,
    );
  }
  return name;
}

/**
 * Read and parse a wg-quick file; errors name the path. It holds a private key: with `log`, a
 * file others may read is warned about, as wg-quick does.
 */
export function readWgQuickFile(path: string, log?: Pick<Logger, 'warn'>): WgQuickConfig {
  const { text, mode } = readInputFile(path, {
    what: 'The tunnel file',
    via: '--tunnel',
    maxBytes: SMALL_FILE_MAX_BYTES,
    cannot: (code) => `Cannot read the tunnel file ${shownPath(path)} (${code}): check the path given with --tunnel.`,
  });
  warnIfShared(path, mode, log);
  return parseWgQuick(text, shownPath(path));
}

/** `--tunnel FILE`: the file as a `wireguard` outbound named after it. */
export function wgQuickOutbound(path: string, log?: Pick<Logger, 'warn'>): WireguardOutboundInput {
  const name = tunnelNameOf(path);
  const c = readWgQuickFile(path, log);
  const out: WireguardOutboundInput = { name, type: 'wireguard', privateKey: c.privateKey, peers: c.peers };
  if (c.address.length > 0) out.address = c.address;
  if (c.dns.length > 0) out.dns = c.dns;
  if (c.mtu !== undefined) out.mtu = c.mtu;
  if (c.listenPort !== undefined) out.listenPort = c.listenPort;
  return out;
}
