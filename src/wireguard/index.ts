/**
 * The WireGuard protocol core (whitepaper: "WireGuard: Next Generation Kernel Network Tunnel";
 * wire format and constants as wireguard.com/protocol), split as wireguard-go's device/:
 *
 *   keys.ts       X25519 keys, wg's base64 format, constant-time helpers, wiping
 *   noise.ts      HASH, HMAC, KDF1-3, MAC, AEAD, XAEAD, TAI64N, protocol constants
 *   messages.ts   the four message types: views with parse/emit
 *   handshake.ts  Noise_IKpsk2 initiation/response for both roles, transport key derivation
 *   cookie.ts     mac1/mac2, cookie replies, under-load detection
 *   replay.ts     the 2048-bit sliding replay window (RFC 6479)
 *   keypair.ts    transport encryption, current/previous/next rotation
 *   timers.ts     rekey, retransmission, keepalive and erasure deadlines
 *   peer.ts       one peer's state machine: send/receive/poll/pollAt with `now` passed in
 *   device.ts     one static key, many peers: dispatch by static key and receiver index
 *
 * Around it, what runs a tunnel (used by `up` and `server` alike):
 *
 *   cryptokey.ts      AllowedIPs both ways: destination → peer, and the source check
 *   runtime.ts        TunnelRuntime: a Device on a UDP transport, its timer, cryptokey routing
 *   udp-transport.ts  the UDP socket interface (node:dgram, or the addon's batches)
 *   client-tunnel.ts  `up`'s packet path to and from tun0: offloads, MTU and ICMP, fragments,
 *                     NAT, MSS clamp, GRO (with offload.ts, nat.ts, mss.ts, gro.ts)
 */
export {
  KEY_LEN,
  KeyFormatError,
  PrivateKey,
  clampPrivateKey,
  constantTimeEqual,
  dh,
  formatKey,
  generatePresharedKey,
  generatePrivateKey,
  isZero,
  parseKey,
  publicKeyOf,
  systemRandom,
  wipe,
  type RandomSource,
} from './keys.js';
export { endpointBytes, endpointEquals, formatEndpoint, type Datagram, type Endpoint } from './endpoint.js';
export {
  COOKIE_REPLY_LEN,
  INITIATION_LEN,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  RESPONSE_LEN,
  TRANSPORT_HEADER_LEN,
  TRANSPORT_MIN_LEN,
  CookieReplyMessage,
  InitiationMessage,
  ResponseMessage,
  TransportHeader,
  messageType,
  type CookieReplyRepr,
  type InitiationRepr,
  type MessageError,
  type ResponseRepr,
  type TransportHeaderRepr,
} from './messages.js';
export {
  Handshake,
  StaticIdentity,
  acceptInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveTransportKeys,
  openInitiation,
  type HandshakeState,
  type OpenedInitiation,
  type TransportKeys,
} from './handshake.js';
export { CookieChecker, CookieGenerator, COOKIE_REFRESH_TIME_MS, HandshakeLoadMeter } from './cookie.js';
export { REPLAY_WINDOW_SIZE, ReplayFilter } from './replay.js';
export { Keypair, Keypairs, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, paddedLength } from './keypair.js';
export {
  KEEPALIVE_TIMEOUT_MS,
  MAX_TIMER_HANDSHAKES,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  REKEY_ATTEMPT_TIME_MS,
  REKEY_TIMEOUT_MS,
} from './timers.js';
export {
  DEFAULT_MAX_STAGED_PACKETS,
  DEFAULT_TUNNEL_MTU,
  PEER_DROP_REASONS,
  Peer,
  innerPacket,
  type PeerCounters,
  type PeerDropReason,
  type PeerOptions,
  type ReceiveResult,
} from './peer.js';
export {
  DEVICE_DROP_REASONS,
  Device,
  type DeviceDropReason,
  type DeviceOptions,
  type DevicePeerOptions,
  type DeviceReceiveResult,
} from './device.js';
