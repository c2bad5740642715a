/**
 * `tunroute status --watch`: the terminal side of control/watch-view.ts. Asks the daemon once a
 * second and draws the view on the alternate screen with plain ANSI sequences (no terminfo, so
 * it works over any SSH session); q, Esc or Ctrl-C quits, and the terminal is given back as it
 * was on every way out (quit, signal, a thrown error, process exit).
 */
import { TunrouteError } from '../errors.js';
import { queryControl } from '../control/client.js';
import type { StatusSnapshot } from '../control/protocol.js';
import { renderWatch } from '../control/watch-view.js';

const ENTER = '\x1b[?1049h\x1b[?25l'; // alternate screen, cursor hidden
const LEAVE = '\x1b[?25h\x1b[?1049l'; // cursor shown, main screen back

export interface WatchOptions {
  control: string;
  intervalMs?: number;
}

function clockText(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Runs until the user quits; resolves then. The first failed query throws (nothing drawn yet). */
export async function watchStatus(o: WatchOptions): Promise<void> {
  const out = process.stdout;
  const input = process.stdin;
  if (!out.isTTY || !input.isTTY) {
    throw new TunrouteError('TR_BAD_FLAG', 'The flag --watch needs a terminal on stdin and stdout: run it in one, or use `tunroute status --json` from scripts.');
  }
  const intervalMs = o.intervalMs ?? 1000;
  let cur: StatusSnapshot = await queryControl(o.control, 'status');
  let prev: StatusSnapshot | undefined;
  let error: string | undefined;
  let clock = clockText(new Date());

  const draw = (): void => {
    const lines = renderWatch(cur, prev, { width: out.columns, height: out.rows, color: out.hasColors(), clock, intervalMs, error });
    // Each line placed and its rest cleared: no scrolling, no flicker from a full clear.
    out.write(lines.map((l, i) => `\x1b[${i + 1};1H${l}\x1b[K`).join('') + '\x1b[J');
  };

  let restored = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    if (input.isRaw) input.setRawMode(false);
    out.write(LEAVE);
  };

  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const quit = (): void => {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      input.off('data', onKey);
      out.off('resize', draw);
      for (const sig of SIGNALS) process.off(sig, quit);
      process.off('exit', restore);
      restore();
      input.pause();
      resolve();
    };
    const onKey = (key: Buffer): void => {
      // q or Q, Esc alone (not the start of an arrow key's sequence), Ctrl-C, Ctrl-D.
      if (key.length === 1 && (key[0] === 0x71 || key[0] === 0x51 || key[0] === 0x1b || key[0] === 0x03 || key[0] === 0x04)) quit();
    };
    const tick = (): void => {
      queryControl(o.control, 'status').then(
        (s) => {
          prev = cur;
          cur = s;
          error = undefined;
        },
        (e: unknown) => {
          error = e instanceof Error ? e.message : String(e);
        },
      ).finally(() => {
        if (stopped) return;
        clock = clockText(new Date());
        draw();
        timer = setTimeout(tick, intervalMs);
      });
    };

    process.on('exit', restore);
    for (const sig of SIGNALS) process.on(sig, quit);
    out.write(ENTER);
    input.setRawMode(true);
    input.on('data', onKey);
    input.resume();
    out.on('resize', draw);
    draw();
    // The first rates come one interval after the first snapshot.
    timer = setTimeout(tick, intervalMs);
  });
}

/** Signals that end the view like q does (SIGHUP: the SSH session went away). */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
