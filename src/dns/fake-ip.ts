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

export class FakeIpPool {
  readonly cidr: Cidr;
  private readonly first: number;
  private readonly last: number;
  /** Next never-used address, until it passes `last`. */
  private cursor: number;
  private readonly ipOf = new Map<string, number>();
  private readonly nameOfIp = new Map<number, string>();
  /** Idle addresses in use order, least recent first (a Map keeps insertion order). */
  private readonly idle = new Map<number, true>();
  /** Live flows per busy address. */
  private readonly pins = new Map<number, number>();
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
      this.touch(have);
      return have;
    }
    let ip: number;
    // Never-used addresses first (restored names may sit anywhere in the range: skip them).
    while (this.cursor <= this.last && (this.nameOfIp.has(this.cursor) || this.reserved.has(this.cursor))) this.cursor++;
    if (this.cursor <= this.last) {
      ip = this.cursor++;
    } else {
      const oldest = this.idle.keys().next();
      if (oldest.done === true) {
        this.exhaustedCount++;
        return undefined;
      }
      ip = oldest.value;
      this.idle.delete(ip);
      const old = this.nameOfIp.get(ip);
      if (old !== undefined) this.ipOf.delete(old);
      this.reusedCount++;
    }
    this.ipOf.set(name, ip);
    this.nameOfIp.set(ip, name);
    this.idle.set(ip, true);
    return ip;
  }

  /** The address canonical `name` holds now, without using it (for `why`); undefined: none. */
  peek(name: string): number | undefined {
    return this.ipOf.get(name);
  }

  /** Whether a live flow holds `ip`. */
  pinned(ip: number): boolean {
    return this.pins.has(ip);
  }

  /** The name `ip` stands for, or undefined (not from this pool, or not handed out). */
  nameOf(ip: number): string | undefined {
    return this.nameOfIp.get(ip);
  }

  /** A flow to `ip` starts: its name stays until unpin(). False when `ip` has no name. */
  pin(ip: number): boolean {
    if (!this.nameOfIp.has(ip)) return false;
    this.changeCount++;
    const n = this.pins.get(ip);
    if (n === undefined) {
      this.idle.delete(ip);
      this.pins.set(ip, 1);
    } else {
      this.pins.set(ip, n + 1);
    }
    return true;
  }

  /** A flow to `ip` ended. When it was the last, the address is idle again (most recently used). */
  unpin(ip: number): void {
    const n = this.pins.get(ip);
    if (n === undefined) return;
    this.changeCount++;
    if (n > 1) {
      this.pins.set(ip, n - 1);
      return;
    }
    this.pins.delete(ip);
    if (this.nameOfIp.has(ip)) this.idle.set(ip, true);
  }

  /** Grows with every change of the table or its use order: a saver compares it with the last saved. */
  get changes(): number {
    return this.changeCount;
  }

  get stats(): FakeIpStats {
    return {
      entries: this.nameOfIp.size,
      capacity: this.last - this.first + 1 - this.reserved.size,
      busy: this.pins.size,
      reused: this.reusedCount,
      exhausted: this.exhaustedCount,
    };
  }

  private touch(ip: number): void {
    if (this.idle.delete(ip)) this.idle.set(ip, true);
  }

  /** The table, least recently used first (busy addresses last: they are in use now). */
  toJSON(): FakeIpPersisted {
    const entries: Array<[string, string]> = [];
    for (const ip of this.idle.keys()) entries.push([u32ToIp(ip), this.nameOfIp.get(ip) ?? '']);
    for (const ip of this.pins.keys()) entries.push([u32ToIp(ip), this.nameOfIp.get(ip) ?? '']);
    return { version: 1, cidr: cidrToString(this.cidr), entries };
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
      if (ip === undefined || name === undefined || ip < pool.first || ip > pool.last || pool.reserved.has(ip) || pool.nameOfIp.has(ip) || pool.ipOf.has(name)) {
        skipped++;
        continue;
      }
      pool.ipOf.set(name, ip);
      pool.nameOfIp.set(ip, name);
      pool.idle.set(ip, true);
      restored++;
    }
    return { pool, restored, skipped };
  }
}
