/**
 * A large CIDR file as operators write them, the same for the same seed: random /24…/32
 * prefixes in public unicast space, with duplicates (every 10th line repeats an earlier one),
 * overlaps (every 10th line is the /20 … /23 around an earlier one) and host bits left set.
 * Written a chunk at a time, so a million lines never sit in memory as one array.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { mulberry32 } from '../../src/link/memory.js';

function randomLine(random: () => number): string {
  let first: number;
  do first = 1 + Math.floor(random() * 223); // 1..223: no 0/8, no multicast
  while (first === 10 || first === 127 || first === 169 || first === 172 || first === 192);
  const rest = Math.floor(random() * 0x1000000);
  const prefix = 24 + Math.floor(random() * 9);
  return `${first}.${rest >>> 16}.${(rest >>> 8) & 255}.${rest & 255}/${prefix}`;
}

/** Write `n` lines to `path` (a comment first); returns the path. */
export function writeLargeCidrFile(path: string, n: number, seed = 1): string {
  const random = mulberry32(seed);
  const recent: string[] = []; // the last 1,000 lines, to repeat and to cover
  const fd = openSync(path, 'w', 0o644);
  try {
    writeSync(fd, `# ${n} synthetic CIDRs, seed ${seed}\n`);
    let chunk: string[] = [];
    for (let i = 0; i < n; i++) {
      let line: string;
      const pick = recent.length > 0 ? recent[Math.floor(random() * recent.length)] : undefined;
      if (i % 10 === 5 && pick !== undefined) line = pick; // duplicate
      else if (i % 10 === 7 && pick !== undefined) line = `${pick.split("/")[0]}/${20 + Math.floor(random() * 4)}`; // overlap
      else line = randomLine(random);
      if (recent.length < 1000) recent.push(line);
      else recent[i % 1000] = line;
      chunk.push(line);
      if (chunk.length === 8192) {
        writeSync(fd, chunk.join('\n') + '\n');
        chunk = [];
      }
    }
    if (chunk.length > 0) writeSync(fd, chunk.join('\n') + '\n');
  } finally {
    closeSync(fd);
  }
  return path;
}
