/**
 * The fake-IP table kept across restarts of `up` (dns.mode fakeip): an app that cached an answer
 * before the restart still reaches its name after it. The table lives in the state dir beside
 * the route journals (`fakeip-<dev>.json`), written whole or not at all, every few seconds while
 * it changes and once more when `up` stops. After a kill -9 the names handed out since the last
 * save are lost: their flows get RST (a pool address with no name), and the apps ask again.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { FAKE_IP_JSON_TAIL, FakeIpPool } from './dns/fake-ip.js';
import type { Logger } from './logger.js';
import type { Cidr } from './net/ipv4.js';
import { backgroundTempOf, readStateFile, writeStateFile, writeStateFileInBackground } from './routes/journal.js';
import { instanceDirOf } from './routes/state-dir.js';

/** How often a changed table is saved. */
export const FAKE_IP_SAVE_INTERVAL_MS = 5000;
/** A /15 full of 253-character names is ~40 MB of JSON; anything larger is not ours. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

export function fakeIpStatePath(stateDir: string, dev: string): string {
  return join(instanceDirOf(stateDir, dev), `fakeip-${dev}.json`);
}

/** The pool as it was saved (or empty: no file, a damaged one, another range), with a log line saying which. */
export function loadFakeIpPool(path: string, range: Cidr, reserved: readonly number[], log: Logger): FakeIpPool {
  let text: string | undefined;
  try {
    text = readStateFile(path, MAX_FILE_BYTES);
  } catch (e) {
    log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the saved fake-IP table cannot be read: starting with an empty one');
    return new FakeIpPool(range, reserved);
  }
  if (text === undefined) return new FakeIpPool(range, reserved);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = undefined;
  }
  const { pool, restored, skipped } = FakeIpPool.fromJSON(data, range, reserved);
  if (skipped < 0) log.warn({ path }, 'the saved fake-IP table is damaged: starting with an empty one');
  else log.info({ restored, skipped }, 'fake-IP table restored: answers given before the restart still reach their names');
  return pool;
}

/** Entries written per turn of the event loop by a save in the background (~1-2 ms each). */
const SAVE_ENTRIES_PER_TURN = 4096;

/**
 * Saves the pool while it changes, and once more at stop().
 *
 * The saves while `up` runs never hold the event loop for long: a full /15 is 131,000 names
 * and 5 MB of JSON, which took 35-75 ms to write out and as long again to fsync, every five
 * seconds, and every packet of every flow waited meanwhile. So the pool's order is copied
 * (saveOrder, 4 bytes a name), the entries are written from it 4,096 per turn of the event
 * loop, and the file is written and fsynced in the thread pool (writeStateFileInBackground).
 * The last save, at stop, is synchronous: the process may exit right after it.
 */
export class FakeIpSaver {
  private saved: number;
  private readonly timer: NodeJS.Timeout;
  private inFlight = false;
  private stopped = false;
  /** Grows with every synchronous save: a background save begun before one must not replace its file. */
  private syncSaves = 0;

  constructor(
    private readonly pool: FakeIpPool,
    private readonly path: string,
    private readonly log: Logger,
  ) {
    this.saved = pool.changes;
    this.timer = setInterval(() => void this.saveInBackground(), FAKE_IP_SAVE_INTERVAL_MS);
    this.timer.unref();
  }

  /** Write the table now if it changed since the last save; a failure is logged, never thrown. */
  save(): void {
    const now = this.pool.changes;
    if (now === this.saved) return;
    this.syncSaves++;
    try {
      writeStateFile(this.path, this.pool.toJSONBytes());
      this.saved = now;
    } catch (e) {
      this.failed(e);
    }
  }

  /**
   * save() in slices, as the timer does it: resolves when the file is written (or nothing had
   * changed, or a save is already under way, or stop() came first). Never rejects.
   */
  async saveInBackground(): Promise<void> {
    const now = this.pool.changes;
    if (this.inFlight || this.stopped || now === this.saved) return;
    this.inFlight = true;
    const syncSaves = this.syncSaves;
    const stillWanted = (): boolean => !this.stopped && this.syncSaves === syncSaves;
    try {
      const order = this.pool.saveOrder();
      const parts: Uint8Array[] = [Buffer.from(this.pool.jsonHead(), 'latin1')];
      for (let from = 0; from < order.length; from += SAVE_ENTRIES_PER_TURN) {
        if (from > 0) {
          await yieldToEventLoop();
          if (!stillWanted()) return;
        }
        parts.push(this.pool.entriesJSON(order, from, Math.min(order.length, from + SAVE_ENTRIES_PER_TURN), from > 0));
      }
      parts.push(FAKE_IP_JSON_TAIL);
      if (await writeStateFileInBackground(this.path, parts, stillWanted)) this.saved = Math.max(this.saved, now);
    } catch (e) {
      this.failed(e);
    } finally {
      this.inFlight = false;
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    // A background save still writing will not rename (stillWanted); its temp file goes
    // now, in case the process exits before that save's own clean-up runs.
    if (this.inFlight) rmSync(backgroundTempOf(this.path), { force: true });
    this.save();
  }

  private failed(e: unknown): void {
    this.log.warn({ path: this.path, err: e instanceof Error ? e.message : String(e) }, 'the fake-IP table could not be saved (answers given now will not survive a restart)');
  }
}
