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
import { TunrouteError } from '../errors.js';
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
    if (c === undefined) {
      const shown = line.length > 60 ? `${line.slice(0, 60)}…` : line;
      throw new TunrouteError(
        'TR_BAD_CONFIG',
        `${file} line ${i + 1} (listed in ${field}): "${shown}" is not an IPv4 CIDR like 10.0.0.0/8; fix the line or comment it out with #.`,
      );
    }
    out.push({ prefix: c, source: `${file}:${i + 1}` });
  }
  return out;
}
