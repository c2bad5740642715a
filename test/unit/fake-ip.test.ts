import { describe, expect, it } from 'vitest';
import { FakeIpPool, FAKE_IP_DEFAULT_CIDR, FAKE_IP_JSON_TAIL } from '../../src/dns/fake-ip.js';
import { ipToU32, u32ToIp } from '../../src/net/ipv4.js';

function ip(s: string): number {
  const v = ipToU32(s);
  if (v === undefined) throw new Error(s);
  return v;
}

describe('FakeIpPool', () => {
  it('hands out the default range in order, never its network or broadcast address', () => {
    const pool = new FakeIpPool();
    expect(FAKE_IP_DEFAULT_CIDR).toBe('198.18.0.0/15');
    expect(u32ToIp(pool.lookup('a.example') ?? 0)).toBe('198.18.0.1');
    expect(u32ToIp(pool.lookup('b.example') ?? 0)).toBe('198.18.0.2');
    expect(pool.stats.capacity).toBe(2 ** 17 - 2);
    expect(pool.contains(ip('198.19.255.255'))).toBe(true);
    expect(pool.contains(ip('198.20.0.0'))).toBe(false);
  });

  it('answers one name with one address, and the address with the name', () => {
    const pool = new FakeIpPool('10.200.0.0/24');
    const a = pool.lookup('a.example');
    expect(pool.lookup('a.example')).toBe(a);
    expect(pool.nameOf(a ?? 0)).toBe('a.example');
    expect(pool.nameOf(ip('10.200.0.77'))).toBeUndefined();
  });

  it('when full, takes back the least recently used idle address', () => {
    const pool = new FakeIpPool('10.200.0.0/30'); // two usable: .1 and .2
    const a = pool.lookup('a.example');
    const b = pool.lookup('b.example');
    pool.lookup('a.example'); // a is now the most recent: b goes first
    const c = pool.lookup('c.example');
    expect(c).toBe(b);
    expect(pool.nameOf(c ?? 0)).toBe('c.example');
    expect(pool.lookup('a.example')).toBe(a);
    expect(pool.stats.reused).toBe(1);
  });

  it('never gives a busy address (a live flow) to another name', () => {
    const pool = new FakeIpPool('10.200.0.0/30');
    const a = pool.lookup('a.example') ?? 0;
    const b = pool.lookup('b.example') ?? 0;
    expect(pool.pin(a)).toBe(true);
    expect(pool.pin(b)).toBe(true);
    pool.pin(b); // two flows to b
    expect(pool.lookup('c.example')).toBeUndefined();
    expect(pool.stats.exhausted).toBe(1);
    pool.unpin(b);
    expect(pool.lookup('c.example')).toBeUndefined(); // one flow to b still lives
    pool.unpin(b);
    expect(pool.lookup('c.example')).toBe(b);
    expect(pool.nameOf(a)).toBe('a.example');
    expect(pool.stats.busy).toBe(1);
  });

  it('pins only addresses it handed out', () => {
    const pool = new FakeIpPool('10.200.0.0/24');
    expect(pool.pin(ip('10.200.0.9'))).toBe(false);
    pool.unpin(ip('10.200.0.9')); // harmless
    expect(pool.stats.busy).toBe(0);
  });

  it('survives a restart: the same names at the same addresses, in the same use order', () => {
    const pool = new FakeIpPool('10.200.0.0/29'); // six usable
    const a = pool.lookup('a.example');
    const b = pool.lookup('b.example');
    const c = pool.lookup('c.example') ?? 0;
    pool.pin(c);
    pool.lookup('a.example');
    const saved = JSON.parse(JSON.stringify(pool.toJSON())) as unknown;
    const { pool: again, restored, skipped } = FakeIpPool.fromJSON(saved, '10.200.0.0/29');
    expect({ restored, skipped }).toEqual({ restored: 3, skipped: 0 });
    expect(again.nameOf(a ?? 0)).toBe('a.example');
    expect(again.lookup('b.example')).toBe(b);
    // New names take never-used addresses first, then the least recently used.
    const fresh = [again.lookup('d.example'), again.lookup('e.example'), again.lookup('f.example')];
    expect(fresh.map((x) => u32ToIp(x ?? 0))).toEqual(['10.200.0.4', '10.200.0.5', '10.200.0.6']);
    // Saved use order: b, a (idle, oldest first), then c (busy: saved as the most recent).
    // After restore b was asked again, so the least recently used is a.
    expect(again.lookup('g.example')).toBe(a);
    expect(again.nameOf(c)).toBe('c.example');
  });

  it('a damaged or missing file costs the old answers, not the start', () => {
    expect(FakeIpPool.fromJSON(undefined).skipped).toBe(-1);
    expect(FakeIpPool.fromJSON({ version: 2, cidr: 'x', entries: [] }).skipped).toBe(-1);
    expect(FakeIpPool.fromJSON('garbage').restored).toBe(0);
    const r = FakeIpPool.fromJSON(
      {
        version: 1,
        cidr: '10.200.0.0/24',
        entries: [
          ['10.200.0.5', 'ok.example'],
          ['10.9.9.9', 'outside.example'], // not in the pool
          ['10.200.0.6', 'bad name!'],
          ['10.200.0.5', 'dup-address.example'],
          ['10.200.0.7', 'OK.example.'], // the same name again
          ['not an ip', 'x.example'],
        ],
      },
      '10.200.0.0/24',
    );
    expect({ restored: r.restored, skipped: r.skipped }).toEqual({ restored: 1, skipped: 5 });
    expect(r.pool.nameOf(ip('10.200.0.5'))).toBe('ok.example');
  });

  it('refuses a pool without room', () => {
    expect(() => new FakeIpPool('10.0.0.0/31')).toThrow(/at least 2 usable/);
    expect(() => new FakeIpPool('nonsense')).toThrow(/not a CIDR/);
  });
});

describe('FakeIpPool: reserved addresses', () => {
  it('never hands out a reserved address (the device own, inside the default pool)', () => {
    const pool = new FakeIpPool(FAKE_IP_DEFAULT_CIDR, [ip('198.18.0.1')]);
    expect(u32ToIp(pool.lookup('a.example') ?? 0)).toBe('198.18.0.2');
    expect(pool.stats.capacity).toBe(2 ** 17 - 3);
    const saved = { version: 1, cidr: FAKE_IP_DEFAULT_CIDR, entries: [['198.18.0.1', 'x.example']] };
    const r = FakeIpPool.fromJSON(saved, FAKE_IP_DEFAULT_CIDR, [ip('198.18.0.1')]);
    expect({ restored: r.restored, skipped: r.skipped }).toEqual({ restored: 0, skipped: 1 });
    expect(() => new FakeIpPool('10.0.0.0/30', [ip('10.0.0.1'), ip('10.0.0.2')])).toThrow(/not reserved/);
  });
});

describe('FakeIpPool under churn (against a plain model of its rules)', () => {
  /** The rules as a Map-based model: in-order first, then the least recently used idle address. */
  class Model {
    readonly ipOf = new Map<string, number>();
    readonly nameOf = new Map<number, string>();
    readonly idle = new Map<number, true>();
    readonly pins = new Map<number, number>();
    private cursor: number;
    constructor(
      private readonly first: number,
      private readonly last: number,
    ) {
      this.cursor = first;
    }
    lookup(name: string): number | undefined {
      const have = this.ipOf.get(name);
      if (have !== undefined) {
        if (this.idle.delete(have)) this.idle.set(have, true);
        return have;
      }
      let ip: number;
      if (this.cursor <= this.last) ip = this.cursor++;
      else {
        const o = this.idle.keys().next();
        if (o.done === true) return undefined;
        ip = o.value;
        this.idle.delete(ip);
        this.ipOf.delete(this.nameOf.get(ip) ?? '');
      }
      this.ipOf.set(name, ip);
      this.nameOf.set(ip, name);
      this.idle.set(ip, true);
      return ip;
    }
    pin(ip: number): boolean {
      if (!this.nameOf.has(ip)) return false;
      const n = this.pins.get(ip) ?? 0;
      if (n === 0) this.idle.delete(ip);
      this.pins.set(ip, n + 1);
      return true;
    }
    unpin(ip: number): void {
      const n = this.pins.get(ip);
      if (n === undefined) return;
      if (n > 1) this.pins.set(ip, n - 1);
      else {
        this.pins.delete(ip);
        this.idle.set(ip, true);
      }
    }
  }

  it('hands out, reuses, pins and saves exactly as the model says', () => {
    const pool = new FakeIpPool('10.1.0.0/23'); // 510 addresses
    const model = new Model(ip('10.1.0.1'), ip('10.1.1.254'));
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pinned: number[] = [];
    for (let step = 0; step < 20_000; step++) {
      const op = rand(10);
      if (op < 7) {
        const name = `n${rand(900)}.example`;
        expect(pool.lookup(name)).toBe(model.lookup(name));
      } else if (op < 9) {
        const addr = ip('10.1.0.1') + rand(515) - 2;
        const ok = pool.pin(addr);
        expect(ok).toBe(model.pin(addr));
        if (ok) pinned.push(addr);
      } else if (pinned.length > 0) {
        const addr = pinned.splice(rand(pinned.length), 1)[0];
        pool.unpin(addr);
        model.unpin(addr);
      }
    }
    expect(pool.stats.entries).toBe(model.ipOf.size);
    expect(pool.stats.busy).toBe(model.pins.size);
    const saved = pool.toJSON().entries;
    const idleOrder = [...model.idle.keys()].map((ip) => [u32ToIp(ip), model.nameOf.get(ip)]);
    expect(saved.slice(0, idleOrder.length)).toEqual(idleOrder);
    expect(new Set(saved.slice(idleOrder.length).map(([ip]) => ip))).toEqual(new Set([...model.pins.keys()].map(u32ToIp)));
    // The saver's bytes are the same text.
    expect(Buffer.from(pool.toJSONBytes()).toString('utf8')).toBe(JSON.stringify(pool.toJSON()));
    // And back: the restored pool keeps every name where it was, in the saved use order.
    const { pool: again, restored } = FakeIpPool.fromJSON(JSON.parse(JSON.stringify(pool.toJSON())) as unknown, '10.1.0.0/23');
    expect(restored).toBe(saved.length);
    expect(again.toJSON().entries).toEqual(saved);
  });
});

describe('FakeIpPool.toJSONBytes', () => {
  it('is JSON.stringify(toJSON()), also for an empty table and a name with something to escape', () => {
    const pool = new FakeIpPool('10.0.0.0/24');
    expect(Buffer.from(pool.toJSONBytes()).toString('utf8')).toBe(JSON.stringify(pool.toJSON()));
    for (const n of ['a.example', 'we"ird\\name', 'x.example']) pool.lookup(n);
    pool.pin(ip('10.0.0.2'));
    expect(Buffer.from(pool.toJSONBytes()).toString('utf8')).toBe(JSON.stringify(pool.toJSON()));
  });
});

describe('FakeIpPool.saveOrder and entriesJSON (the saver writes in slices)', () => {
  /** The table's bytes written as the background saver does: head, slices of `per` entries, tail. */
  function inSlices(pool: FakeIpPool, order: Int32Array, per: number): string {
    const parts: Uint8Array[] = [Buffer.from(pool.jsonHead(), 'latin1')];
    for (let from = 0; from < order.length; from += per) parts.push(pool.entriesJSON(order, from, Math.min(order.length, from + per), from > 0));
    parts.push(FAKE_IP_JSON_TAIL);
    return Buffer.concat(parts).toString('utf8');
  }

  it('in any slicing, gives the bytes of toJSONBytes: idle entries by use, then the busy ones', () => {
    const pool = new FakeIpPool('10.0.0.0/24');
    expect(inSlices(pool, pool.saveOrder(), 3)).toBe(JSON.stringify(pool.toJSON()));
    for (let i = 0; i < 40; i++) pool.lookup(`n${i}.example`);
    pool.lookup('we"ird\\name');
    pool.lookup('n3.example'); // used again: last of the idle ones
    pool.pin(ip('10.0.0.7'));
    pool.pin(ip('10.0.0.2'));
    const order = pool.saveOrder();
    expect(order.length).toBe(41);
    for (const per of [1, 4, 40, 41, 1000]) expect(inSlices(pool, order, per)).toBe(JSON.stringify(pool.toJSON()));
    expect(Buffer.from(pool.toJSONBytes()).toString('utf8')).toBe(JSON.stringify(pool.toJSON()));
  });

  it('lists a slot given to a new name since the order was taken with that name, what it means now', () => {
    const pool = new FakeIpPool('10.0.0.0/29'); // 6 addresses
    for (const n of ['a', 'b', 'c', 'd', 'e', 'f']) pool.lookup(`${n}.example`);
    const order = pool.saveOrder();
    const a = pool.peek('a.example');
    pool.lookup('g.example'); // the pool is full: a's address, the least recently used, goes to g
    expect(pool.peek('g.example')).toBe(a);
    const saved = JSON.parse(inSlices(pool, order, 2)) as { entries: Array<[string, string]> };
    expect(saved.entries[0]).toEqual([u32ToIp(a ?? 0), 'g.example']);
    expect(saved.entries.map(([, n]) => n)).not.toContain('a.example');
    const { restored, skipped } = FakeIpPool.fromJSON(saved, '10.0.0.0/29');
    expect([restored, skipped]).toEqual([6, 0]);
  });
});
