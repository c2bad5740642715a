/**
 * Wire formats: views over bytes, Reprs with parse/emit/bufferLen, and the internet checksum.
 * No I/O, no timers, no state beyond scratch objects reused across calls.
 */
export * from './checksum.js';
export * from './drop.js';
export * from './icmp.js';
export * from './ipv4.js';
export * from './tcp.js';
export * from './udp.js';
export * from './virtio-net.js';
