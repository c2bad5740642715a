export {
  OUTBOUND_KINDS,
  UPSTREAM_REASONS,
  UpstreamError,
  isUpstreamError,
  newOutboundStats,
  type ConnectCancel,
  type ConnectOptions,
  type Destination,
  type Outbound,
  type OutboundKind,
  type OutboundStats,
  type PendingConnect,
  type TcpUpstream,
  type UpstreamReason,
} from './outbound.js';
export { BlockOutbound } from './block.js';
export {
  SOCKS5_DEFAULT_CONNECT_TIMEOUT_MS,
  SOCKS5_REPLY_REASONS,
  Socks5Outbound,
  type Socks5OutboundOptions,
} from './socks5.js';
export { Socks5PipelineMemory, socks5PipelineMemory, type Socks5PipelineMode, type Socks5PipelineVerdict } from './socks5-client.js';
export {
  SOCKS5_DEFAULT_PORT,
  formatSocks5Url,
  parseSocks5Url,
  type ParseSocks5UrlOptions,
  type Socks5Auth,
  type Socks5Url,
} from './socks5-url.js';
export { HTTP_DEFAULT_CONNECT_TIMEOUT_MS, HttpOutbound, type HttpOutboundOptions } from './http.js';
export {
  HTTP_PROXY_DEFAULT_PORT,
  formatProxyUrl,
  parseProxyUrl,
  type HttpProxyUrl,
  type ProxyUrl,
} from './proxy-url.js';
