/**
 * Where each CIDR of a plan came from, so `check`, `why` and error messages can name it:
 * a config field, a flag, a line of a CIDR file, or a reason tunroute adds itself (the
 * upstream's address, the LAN, loopback…).
 *
 * CIDR files hold one IPv4 CIDR per line; `#` starts a comment (whole line or after the
 * CIDR); blank lines are ignored; a bare address means /32; host bits are allowed and
 * cleared (lists found on the web often write 1.2.3.4/24). Anything else is an error that
 * names the file and the line.
 */
import { TunrouteError, shown, shownPath } from '../errors.js';
import { parseNetwork, type Cidr } from '../net/ipv4.js';

/** One CIDR with the place it came from ("routes.include[2]", "office.txt:17", "loopback"). */
export interface LabeledPrefix {
  readonly prefix: Cidr;
  readonly source: string;
}

/**
 * A CIDR file's entries, held in columns: 9 bytes per entry instead of an object, a prefix
 * object and a "file:line" string each (~200 bytes), so a file of a million lines is planned
 * in bounded memory. The label of entry i is built only when asked for (sourceOf).
 */
export class CidrFileEntries {
  /** Network addresses (host bits cleared), uint32. */
  addrs: Uint32Array;
  /** Prefix lengths, 0..32. */
  lens: Uint8Array;
  /** 1-based line numbers. */
  lines: Uint32Array;
  count = 0;

  constructor(
    readonly file: string,
    /** The config field that listed the file, e.g. routes.includeFiles[0]. */
    readonly field: string,
    capacity = 1024,
  ) {
    this.addrs = new Uint32Array(capacity);
    this.lens = new Uint8Array(capacity);
    this.lines = new Uint32Array(capacity);
  }

  push(c: Cidr, line: number): void {
    if (this.count === this.addrs.length) this.grow();
    this.addrs[this.count] = c.addr;
    this.lens[this.count] = c.prefix;
    this.lines[this.count] = line;
    this.count++;
  }

  prefixAt(i: number): Cidr {
    return { addr: this.addrs[i], prefix: this.lens[i] };
  }

  sourceOf(i: number): string {
    return `${this.file}:${this.lines[i]}`;
  }

  /** Every entry as a LabeledPrefix: for small files and tests. */
  labeled(): LabeledPrefix[] {
    const out: LabeledPrefix[] = [];
    for (let i = 0; i < this.count; i++) out.push({ prefix: this.prefixAt(i), source: this.sourceOf(i) });
    return out;
  }

  private grow(): void {
    const n = this.addrs.length * 2;
    const addrs = new Uint32Array(n);
    addrs.set(this.addrs);
    this.addrs = addrs;
    const lens = new Uint8Array(n);
    lens.set(this.lens);
    this.lens = lens;
    const lines = new Uint32Array(n);
    lines.set(this.lines);
    this.lines = lines;
  }
}

/**
 * The CIDRs of a file's text. `field` names the config field that listed the file
 * (routes.includeFiles[0]) for the error message. Walks the text line by line (no array of a
 * million line strings).
 */
export function parseCidrFile(text: string, file: string, field: string): CidrFileEntries {
  const out = new CidrFileEntries(file, field);
  let i = 0;
  for (let from = 0; from < text.length; i++) {
    let to = text.indexOf('\n', from);
    if (to < 0) to = text.length;
    let line = text.slice(from, to);
    from = to + 1;
    const hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    line = line.trim();
    if (line === '') continue;
    const c = parseNetwork(line);
    if (c === undefined) throw badLine(line, file, i + 1, field);
    out.push(c, i + 1);
  }
  return out;
}

/**
 * A line that is not a CIDR. It is quoted only if it holds nothing but digits, "." and "/": the
 * path may name any file root can read (a secret's first line must not reach a terminal).
 */
function badLine(line: string, file: string, n: number, field: string): TunrouteError {
  const what = /^[0-9./]+$/.test(line) ? shown(line) : 'the line (not shown: it holds more than digits, "." and "/")';
  return new TunrouteError('TR_BAD_CONFIG', `${shownPath(file)} line ${n} (listed in ${field}): ${what} is not an IPv4 CIDR like 10.0.0.0/8; fix the line or comment it out with #.`);
}
