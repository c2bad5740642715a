/** Small helpers the benchmark's lab tests share. */

/** The first line of an error's message, cut to 400 characters (for a report cell or a progress line). */
export function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split('\n')[0]?.slice(0, 400) ?? s;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
