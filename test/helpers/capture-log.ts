/** A pino logger whose JSON lines a test can read back (`lines()`), for asserting what was logged. */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '../../src/logger.js';

export function capturingLogger(): { log: Logger; lines: () => Array<{ msg: string } & Record<string, unknown>> } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk.toString());
      done();
    },
  });
  return {
    log: pino({ level: 'info' }, stream),
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { msg: string } & Record<string, unknown>),
  };
}
