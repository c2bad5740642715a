/** The only loaders of the C addon (native/*.c), typed: the TUN device, the batched UDP socket and the transport cipher. */
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
