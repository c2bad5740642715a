/**
 * The typed view of the addon's user lookup and privilege drop (native/privileges.c, in
 * tunroute_native.node, loaded by addon.ts). Only src/privileges.ts uses it.
 */
import { TunrouteError } from '../errors.js';
import { addonPath, loadNative } from './addon.js';

export interface NativePrivilegesAddon {
  /** The user's uid and primary gid through NSS (getpwnam_r), or undefined when there is no such user. */
  lookupUser(name: string): { uid: number; gid: number } | undefined;
  /**
   * Become uid/gid (no supplementary groups) keeping only the capabilities whose bits are set in
   * keepHigh << 32 | keepLow: effective, permitted, inheritable and ambient on the calling
   * thread; every other thread keeps none; the rest leave the bounding set; no_new_privs is set.
   * Throws an errno error naming the call that failed (the process then holds less, never more).
   */
  dropPrivileges(uid: number, gid: number, keepLow: number, keepHigh: number): void;
}

const FUNCTIONS = ['lookupUser', 'dropPrivileges'] as const;

function hasPrivileges(m: object): m is NativePrivilegesAddon {
  const rec = m as Record<string, unknown>;
  return FUNCTIONS.every((f) => typeof rec[f] === 'function');
}

/** The addon's privilege functions. Throws TunrouteError TR_NATIVE_MISSING when not built or out of date. */
export function loadNativePrivileges(): NativePrivilegesAddon {
  const mod: object = loadNative();
  if (!hasPrivileges(mod)) {
    throw new TunrouteError(
      'TR_NATIVE_MISSING',
      `The native addon at ${addonPath()} cannot drop privileges (it is out of date): rebuild it with \`npm run build\` in the tunroute folder.`,
    );
  }
  return mod;
}
