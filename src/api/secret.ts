/**
 * The dashboard's secret: the configured `ui.secret`, else the one generated on first use and
 * kept in the state dir (0600, written and read with the journal's safe state-file helpers, so
 * a file another user planted or linked is refused). A generated secret is shown once, when it
 * is made; later starts read it back without showing it.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { join } from 'node:path';
import { readStateFile, writeStateFile } from '../routes/journal.js';

/** The file beside the journals that holds a generated secret. */
export function secretPath(stateDir: string, role: string): string {
  return join(stateDir, `ui-secret-${role}`);
}

export interface UiSecret {
  value: string;
  /** True when it was made just now (the caller shows it once); false: configured or read back. */
  generated: boolean;
  /** Where a generated secret is kept (absent: it came from the config). */
  file?: string;
}

/** 32 random bytes, URL-safe: fits a `?token=` without escaping. */
function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function resolveSecret(configured: string | undefined, stateDir: string, role: string): UiSecret {
  if (configured !== undefined) return { value: configured, generated: false };
  const file = secretPath(stateDir, role);
  const kept = readStateFile(file, 4096)?.trim();
  if (kept !== undefined && kept.length >= 8) return { value: kept, generated: false, file };
  const value = newSecret();
  writeStateFile(file, value + '\n');
  return { value, generated: true, file };
}

/**
 * Compare a presented secret with ours in constant time (over fixed-length digests, so neither
 * the length nor a prefix of ours leaks through timing).
 */
export function secretMatches(presented: string | undefined, ours: string): boolean {
  if (presented === undefined || presented === '') return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(ours).digest();
  return timingSafeEqual(a, b);
}
