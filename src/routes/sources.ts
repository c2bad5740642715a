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
 * The CIDRs of a file's text. `field` names the config field that listed the file
 * (routes.includeFiles[0]) for the error message.
 */
export function parseCidrFile(text: string, file: string, field: string): LabeledPrefix[] {
  const out: LabeledPrefix[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    const hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    line = line.trim();
    if (line === '') continue;
    const c = parseNetwork(line);
    if (c === undefined) throw badLine(line, file, i + 1, field);
    out.push({ prefix: c, source: `${file}:${i + 1}` });
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
