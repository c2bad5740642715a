/**
 * The fake-IP table: names that go through the tunnel are answered with an address from a pool
 * that routes into tun0, and a flow to such an address is carried to its *name* (the proxy
 * resolves it; the client never does).
 *
 * The default pool is 198.18.0.0/15 (RFC 2544's benchmarking range: never a real destination
 * on the Internet, and what sing-box and Clash use, so users know it); its network and
 * broadcast addresses are never handed out, nor any address given as reserved (the device's
 * own: by default tun0 is 198.18.0.1/15, inside the pool, so its subnet route already brings
 * the pool into tun0).
 *
 * Bounded: at most one address per pool slot. Addresses are handed out in order until the pool
 * is full; then the least recently used *idle* address is taken back for a new name. An
 * address is busy while a flow to it lives (pin/unpin, counted): a busy address is never given
 * to another name, so a long download never finds its name changed under it. When every
 * address is busy, lookup() says so (undefined): the caller answers SERVFAIL and logs it.
 *
 * "Used" is an answer handed out (lookup) or a flow starting or ending (pin/unpin): an app that
 * keeps using a cached answer keeps its name.
 *
 * The table survives a restart through toJSON()/fromJSON() (the owner keeps it in the state
 * dir), so an app holding an answer from before the restart still reaches its name.
 *
 * Storage, for an answer per query at the rate a sequential client asks (every new name is an
 * insert): one Map name → address; everything per address lives in slots indexed by
 * `address − first` (the name, the live-flow count, the links of the idle list), grown by
 * doubling up to the highest slot used (names are handed out in address order, so that is
 * about the number of names handed out; ~21 bytes a slot). The idle addresses form a doubly
 * linked list over the slots, least recently used at its head: using, pinning, unpinning and
 * taking back are O(1) with no hashing, where a Map as an ordered set pays a delete and an
 * insert per use, and its iterator walks over the deleted entries at its front.
 */
import { z } from 'zod';
import { cidrToString, ipToU32, normalizeCidr, parseCidr, u32ToIp, type Cidr } from '../net/ipv4.js';
import { canonicalDomain } from '../net/domain.js';

export const FAKE_IP_DEFAULT_CIDR = '198.18.0.0/15';

export interface FakeIpStats {
  /** Names with an address now. */
  entries: number;
  /** Addresses the pool can hand out. */
  capacity: number;
  /** Addresses held by a live flow. */
  busy: number;
  /** Idle addresses taken back for a new name. */
  reused: number;
  /** Lookups refused because every address was busy. */
  exhausted: number;
}

/** What a persisted table looks like (version 1). */
const PersistedSchema = z.object({
  version: z.literal(1),
  cidr: z.string(),
  /** [address, name], least recently used first. */
  entries: z.array(z.tuple([z.string(), z.string()])),
});
export type FakeIpPersisted = z.infer<typeof PersistedSchema>;

/** A character JSON carries as it is, as canonical names have them: a-z 0-9 . _ - */
function isPlainNameChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x5f || c === 0x2d;
}

/** `v` (0..255) in decimal at `out[o]`; returns the offset after it. */
function writeDecimal(out: Uint8Array, o: number, v: number): number {
  if (v >= 100) out[o++] = 0x30 + Math.floor(v / 100);
  if (v >= 10) out[o++] = 0x30 + (Math.floor(v / 10) % 10);
  out[o++] = 0x30 + (v % 10);
  return o;
}

/** What a saved table's bytes end with, after its entries. */
export const FAKE_IP_JSON_TAIL: Uint8Array = Buffer.from(']}');

/** No slot (an end of the idle list). */
const NONE = -1;
/** Slots are grown by doubling from this many. */
const MIN_SLOTS = 1024;

export class FakeIpPool {
  readonly cidr: Cidr;
  private readonly first: number;
  private readonly last: number;
  /** Next never-used address, until it passes `last`. */
  private cursor: number;
  private readonly ipOf = new Map<string, number>();
  // Per slot (address − first); `names.length` slots exist so far.
  private names: Array<string | undefined> = [];
  /** Live flows per slot; > 0: busy (never in the idle list). */
  private pins = new Uint32Array(0);
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  /** 1 while the slot is in the idle list. */
  private linked = new Uint8Array(0);
  /** The idle list: least recently used at the head. */
  private head = NONE;
  private tail = NONE;
  private busyCount = 0;
  private reusedCount = 0;
  private exhaustedCount = 0;
  private changeCount = 0;
  private readonly reserved: ReadonlySet<number>;

  constructor(cidr: Cidr | string = FAKE_IP_DEFAULT_CIDR, reserved: readonly number[] = []) {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    if (c === undefined) throw new RangeError(`not a CIDR: ${typeof cidr === "string" ? JSON.stringify(cidr.slice(0, 40)) : "?"}`);
    if (c.prefix > 30) throw new RangeError(`a fake-IP pool needs at least 2 usable addresses (/30 or wider), not /${c.prefix}`);
    const size = 2 ** (32 - c.prefix);
    const base = normalizeCidr(c).addr;
    this.cidr = { addr: base, prefix: c.prefix };
    this.first = base + 1;
    this.last = base + size - 2;
    this.cursor = this.first;
    this.reserved = new Set(reserved.filter((ip) => ip >= this.first && ip <= this.last));
    if (this.reserved.size >= this.last - this.first + 1) throw new RangeError('a fake-IP pool needs at least one address that is not reserved');
  }

  /** Whether `ip` (uint32) lies in the pool's range (handed out or not). */
  contains(ip: number): boolean {
    return ip >= this.first - 1 && ip <= this.last + 1;
  }

  /**
   * The address for canonical `name`: its own if it has one (now the most recently used),
   * else a new one; undefined when every address is busy.
   */
  lookup(name: string): number | undefined {
    this.changeCount++;
    const have = this.ipOf.get(name);
    if (have !== undefined) {
      const slot = have - this.first;
      if (this.linked[slot] === 1 && slot !== this.tail) {
        this.unlink(slot);
        this.append(slot);
      }
      return have;
    }
    let slot: number;
    // Never-used addresses first (restored names may sit anywhere in the range: skip them).
    while (this.cursor <= this.last && (this.slotName(this.cursor - this.first) !== undefined || this.reserved.has(this.cursor))) this.cursor++;
    if (this.cursor <= this.last) {
      slot = this.cursor++ - this.first;
      this.grow(slot);
    } else {
      slot = this.head;
      if (slot === NONE) {
        this.exhaustedCount++;
        return undefined;
      }
      this.unlink(slot);
      const old = this.names[slot];
      if (old !== undefined) this.ipOf.delete(old);
      this.reusedCount++;
    }
    const ip = this.first + slot;
    this.ipOf.set(name, ip);
    this.names[slot] = name;
    this.append(slot);
    return ip;
  }

  /** The address canonical `name` holds now, without using it (for `why`); undefined: none. */
  peek(name: string): number | undefined {
    return this.ipOf.get(name);
  }

  /** Whether a live flow holds `ip`. */
  pinned(ip: number): boolean {
    const slot = this.slotOf(ip);
    return slot !== NONE && this.pins[slot] > 0;
  }

  /** The name `ip` stands for, or undefined (not from this pool, or not handed out). */
  nameOf(ip: number): string | undefined {
    const slot = this.slotOf(ip);
    return slot === NONE ? undefined : this.names[slot];
  }

  /** A flow to `ip` starts: its name stays until unpin(). False when `ip` has no name. */
  pin(ip: number): boolean {
    const slot = this.slotOf(ip);
    if (slot === NONE || this.names[slot] === undefined) return false;
    this.changeCount++;
    if (this.pins[slot]++ === 0) {
      this.unlink(slot);
      this.busyCount++;
    }
    return true;
  }

  /** A flow to `ip` ended. When it was the last, the address is idle again (most recently used). */
  unpin(ip: number): void {
    const slot = this.slotOf(ip);
    if (slot === NONE || this.pins[slot] === 0) return;
    this.changeCount++;
    if (--this.pins[slot] > 0) return;
    this.busyCount--;
    if (this.names[slot] !== undefined) this.append(slot);
  }

  /** Grows with every change of the table or its use order: a saver compares it with the last saved. */
  get changes(): number {
    return this.changeCount;
  }

  get stats(): FakeIpStats {
    return {
      entries: this.ipOf.size,
      capacity: this.last - this.first + 1 - this.reserved.size,
      busy: this.busyCount,
      reused: this.reusedCount,
      exhausted: this.exhaustedCount,
    };
  }

  /** The slot of `ip`, or NONE when `ip` is outside the range or past the slots used so far. */
  private slotOf(ip: number): number {
    const slot = ip - this.first;
    return ip >= this.first && ip <= this.last && slot < this.names.length ? slot : NONE;
  }

  private slotName(slot: number): string | undefined {
    return slot < this.names.length ? this.names[slot] : undefined;
  }

  /** Make room for `slot` (doubling, at most the range's size). */
  private grow(slot: number): void {
    const have = this.names.length;
    if (slot < have) return;
    const size = Math.min(this.last - this.first + 1, Math.max(slot + 1, have * 2, MIN_SLOTS));
    const widen = <A extends Uint32Array | Int32Array | Uint8Array>(a: A, make: (n: number) => A): A => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.pins = widen(this.pins, (n) => new Uint32Array(n));
    this.prev = widen(this.prev, (n) => new Int32Array(n));
    this.next = widen(this.next, (n) => new Int32Array(n));
    this.linked = widen(this.linked, (n) => new Uint8Array(n));
    for (let i = have; i < size; i++) this.names.push(undefined);
  }

  /** Add `slot` at the idle list's tail (most recently used). */
  private append(slot: number): void {
    this.prev[slot] = this.tail;
    this.next[slot] = NONE;
    if (this.tail === NONE) this.head = slot;
    else this.next[this.tail] = slot;
    this.tail = slot;
    this.linked[slot] = 1;
  }

  /** Take `slot` out of the idle list (if it is in it). */
  private unlink(slot: number): void {
    if (this.linked[slot] === 0) return;
    const p = this.prev[slot];
    const n = this.next[slot];
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
    this.linked[slot] = 0;
  }

  /** The table, least recently used first (busy addresses last: they are in use now). */
  toJSON(): FakeIpPersisted {
    const entries = Array.from(this.saveOrder(), (slot): [string, string] => [u32ToIp(this.first + slot), this.names[slot] ?? '']);
    return { version: 1, cidr: cidrToString(this.cidr), entries };
  }

  /**
   * The slots in the order a save lists them: the idle list, least recently used first, then
   * the busy ones (in use now). A copy, cheap (4 bytes a name, no strings): the saver writes
   * the entries from it over several turns of the event loop while the pool goes on changing
   * (see entriesJSON).
   */
  saveOrder(): Int32Array {
    const order = new Int32Array(this.ipOf.size);
    let n = 0;
    for (let slot = this.head; slot !== NONE && n < order.length; slot = this.next[slot]) order[n++] = slot;
    if (this.busyCount > 0) for (let slot = 0; slot < this.names.length && n < order.length; slot++) if (this.pins[slot] > 0) order[n++] = slot;
    return n === order.length ? order : order.subarray(0, n);
  }

  /** What a saved table's bytes start with, before its entries: `{"version":1,"cidr":"…","entries":[`. */
  jsonHead(): string {
    return `{"version":1,"cidr":${JSON.stringify(cidrToString(this.cidr))},"entries":[`;
  }

  /**
   * Entries `order[from..to)` as JSON array elements, `["198.18.0.5","name"]`, comma-separated
   * (and preceded by one when `afterOthers`), written straight into one buffer: at 100,000
   * names the arrays and strings of toJSON cost ~1 us a name. Each slot's name is read now:
   * a slot whose address went to a new name since saveOrder() is listed with the new name
   * (what it means now). Names are canonical (plain ASCII, nothing to escape); any other is
   * escaped by JSON.stringify.
   */
  entriesJSON(order: Int32Array, from: number, to: number, afterOthers: boolean): Buffer {
    // Per entry at most: ,["255.255.255.255",  "  name  "]
    let room = 0;
    for (let i = from; i < to; i++) room += 24 + (this.names[order[i]]?.length ?? 0) * 6;
    const out = Buffer.allocUnsafe(room);
    let o = 0;
    for (let i = from; i < to; i++) {
      const slot = order[i];
      if (i > from || afterOthers) out[o++] = 0x2c; // ,
      out[o++] = 0x5b; // [
      out[o++] = 0x22; // "
      const ip = this.first + slot;
      o = writeDecimal(out, o, ip >>> 24);
      out[o++] = 0x2e;
      o = writeDecimal(out, o, (ip >>> 16) & 0xff);
      out[o++] = 0x2e;
      o = writeDecimal(out, o, (ip >>> 8) & 0xff);
      out[o++] = 0x2e;
      o = writeDecimal(out, o, ip & 0xff);
      out[o++] = 0x22;
      out[o++] = 0x2c;
      const name = this.names[slot] ?? '';
      const start = o;
      out[o++] = 0x22;
      for (let k = 0; k < name.length; k++) {
        const c = name.charCodeAt(k);
        if (!isPlainNameChar(c)) {
          o = start + out.write(JSON.stringify(name), start, 'utf8') - 1;
          break;
        }
        out[o++] = c;
      }
      out[o++] = 0x22;
      out[o++] = 0x5d; // ]
    }
    return out.subarray(0, o);
  }

  /** `JSON.stringify(this.toJSON())` as bytes, at once (the saver's last save, at stop). */
  toJSONBytes(): Uint8Array {
    const order = this.saveOrder();
    return Buffer.concat([Buffer.from(this.jsonHead(), 'latin1'), this.entriesJSON(order, 0, order.length, false), FAKE_IP_JSON_TAIL]);
  }

  /**
   * A pool over `cidr` holding what `data` (a parsed persisted table) lists, in its use order.
   * Anything that does not fit is skipped and counted, never fatal: a damaged or foreign file
   * costs the old answers, not the start. `skipped` is -1 when the whole file was unusable.
   */
  static fromJSON(data: unknown, cidr: Cidr | string = FAKE_IP_DEFAULT_CIDR, reserved: readonly number[] = []): { pool: FakeIpPool; restored: number; skipped: number } {
    const pool = new FakeIpPool(cidr, reserved);
    const parsed = PersistedSchema.safeParse(data);
    if (!parsed.success) return { pool, restored: 0, skipped: -1 };
    let restored = 0;
    let skipped = 0;
    for (const [ipText, nameText] of parsed.data.entries) {
      const ip = ipToU32(ipText);
      const name = canonicalDomain(nameText);
      if (ip === undefined || name === undefined || ip < pool.first || ip > pool.last || pool.reserved.has(ip) || pool.slotName(ip - pool.first) !== undefined || pool.ipOf.has(name)) {
        skipped++;
        continue;
      }
      const slot = ip - pool.first;
      pool.grow(slot);
      pool.ipOf.set(name, ip);
      pool.names[slot] = name;
      pool.append(slot);
      restored++;
    }
    return { pool, restored, skipped };
  }
}
