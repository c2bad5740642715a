/**
 * The only loaders of the C addon (native/*.c), typed: the TUN device, the batched UDP socket and
 * the transport cipher; and where the watchdog's native helper (native/watchdog.c) is.
 */
export {
  addonPath,
  isNativeErrnoError,
  loadNative,
  tryLoadNative,
  type NativeErrnoError,
  type NativeFd,
  type NativeReadCallback,
  type NativeReaderHandle,
  type NativeTunAddon,
} from './addon.js';
export { loadNativeUdp, tryLoadNativeUdp, type NativeUdpAddon, type NativeUdpReceiverHandle, type NativeUdpSocket } from './udp.js';
export { loadNativeAead, tryLoadNativeAead, type NativeAeadAddon } from './aead.js';
export { loadNativePrivileges, type NativePrivilegesAddon } from './privileges.js';
export { watchdogHelper, type WatchdogHelper } from './watchdog-helper.js';
