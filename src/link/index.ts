export { emptyLinkStats, type Link, type LinkStats, type PacketBatch, type ReceiveHandler } from './link.js';
export {
  createMemoryLinkPair,
  mulberry32,
  MemoryLink,
  type FaultCounts,
  type MemoryFaults,
  type MemoryLinkOptions,
} from './memory.js';
export { TunLink, tunOpenError, type TunLinkOptions } from './tun.js';
