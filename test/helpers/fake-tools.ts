/**
 * A dir of fake programs put first on PATH (resolvectl, nmcli…): each is a shell script that
 * appends its arguments to one calls file, a line a call, then runs the body the test gives.
 * Call at describe level: a fresh dir before each test, removed after it.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';

export interface FakeTools {
  /** The dir the programs are in. */
  readonly dir: string;
  /** A PATH with the dir first, then /usr/bin and /bin. */
  readonly path: string;
  /** The file the calls are appended to. */
  readonly calls: string;
  /** Install `name`, running the lines of `body` after it has logged its arguments. */
  install(name: string, body: readonly string[]): void;
  /** Install `name` as exactly these lines (it logs to `calls` itself, if at all). */
  installScript(name: string, lines: readonly string[]): void;
  /** Every call so far, as its arguments joined by spaces. */
  called(): string[];
}

export function useFakeTools(prefix: string): FakeTools {
  let dir = '';
  const calls = (): string => join(dir, 'calls');
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  return {
    get dir() {
      return dir;
    },
    get path() {
      return `${dir}:/usr/bin:/bin`;
    },
    get calls() {
      return calls();
    },
    install(name, body) {
      this.installScript(name, [`echo "$*" >> "${calls()}"`, ...body]);
    },
    installScript(name, lines) {
      writeFileSync(join(dir, name), ['#!/bin/sh', ...lines, ''].join('\n'));
      chmodSync(join(dir, name), 0o755);
    },
    called: () => (existsSync(calls()) ? readFileSync(calls(), 'utf8').trim().split('\n') : []),
  };
}
