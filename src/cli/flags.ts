/**
 * Commander options generated from the flag tables of config/flags.ts, so that a flag is
 * declared once: its name, argument, parser and help come from the table.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { flagHelp, type FlagSpec } from '../config/flags.js';
import { shown } from '../errors.js';

function intArg(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} needs a whole number, got ${shown(v)}.`);
    return Number(v);
  };
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

/** --exclude-uid 1000 or 1000-1999, repeatable. */
function collectUid(v: string, prev: Array<number | [number, number]> | undefined): Array<number | [number, number]> {
  const m = /^(\d+)(?:-(\d+))?$/.exec(v);
  if (!m) throw new InvalidArgumentError(`--exclude-uid needs a user id or a range like 1000-1999, got ${shown(v)}.`);
  const uid: number | [number, number] = m[2] === undefined ? Number(m[1]) : [Number(m[1]), Number(m[2])];
  return [...(prev ?? []), uid];
}

function tableArg(v: string): 'auto' | 'main' | number {
  if (v === 'auto' || v === 'main') return v;
  if (/^\d+$/.test(v)) return Number(v);
  throw new InvalidArgumentError(`--table needs auto, main or a table number, got ${shown(v)}.`);
}

/**
 * Add the table's flags to a command. `help` replaces the help of some flags where the command
 * means something else by them (`why --tun`: the device to ask).
 */
export function addFlags(cmd: Command, table: readonly FlagSpec[], help: Readonly<Record<string, string>> = {}): Command {
  for (const spec of table) {
    const text = help[spec.flag] ?? flagHelp(spec);
    const name = spec.arg === undefined ? spec.flag : `${spec.flag} ${spec.arg}`;
    switch (spec.kind) {
      case 'int':
        cmd.option(name, text, intArg(spec.flag));
        break;
      case 'list':
        cmd.option(name, text, collect);
        break;
      case 'uids':
        cmd.option(name, text, collectUid);
        break;
      case 'table':
        cmd.option(name, text, tableArg);
        break;
      default:
        cmd.option(name, text);
    }
  }
  return cmd;
}

/** `intArg` for the commands' own numeric options (`status --flows`). */
export { intArg };
