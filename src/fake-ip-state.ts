/**
 * The fake-IP table kept across restarts of `up` (dns.mode fakeip): an app that cached an answer
 * before the restart still reaches its name after it. The table lives in the state dir beside
 * the route journals (`fakeip-<dev>.json`), written whole or not at all, every few seconds while
 * it changes and once more when `up` stops. After a kill -9 the names handed out since the last
 * save are lost: their flows get RST (a pool address with no name), and the apps ask again.
 */
import { join } from 'node:path';
import { FakeIpPool } from './dns/fake-ip.js';
import type { Logger } from './logger.js';
import type { Cidr } from './net/ipv4.js';
import { readStateFile, writeStateFile } from './routes/journal.js';
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

/** Saves the pool while it changes, and once more at stop(). */
export class FakeIpSaver {
  private saved: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pool: FakeIpPool,
    private readonly path: string,
    private readonly log: Logger,
  ) {
    this.saved = pool.changes;
    this.timer = setInterval(() => this.save(), FAKE_IP_SAVE_INTERVAL_MS);
    this.timer.unref();
  }

  /** Write the table if it changed since the last save; a failure is logged, never thrown. */
  save(): void {
    const now = this.pool.changes;
    if (now === this.saved) return;
    try {
      writeStateFile(this.path, this.pool.toJSONBytes());
      this.saved = now;
    } catch (e) {
      this.log.warn({ path: this.path, err: e instanceof Error ? e.message : String(e) }, 'the fake-IP table could not be saved (answers given now will not survive a restart)');
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.save();
  }
}
