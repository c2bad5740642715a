/*
 * The Internet checksum (RFC 1071) in one place for the addon: tun.c's checksum() for JS and
 * fake_dns.c's answers use the same sum.
 */
#ifndef TUNROUTE_CSUM_H
#define TUNROUTE_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Folds a 64-bit ones'-complement accumulator to 16 bits (end-around carry). */
static inline uint32_t fold64(uint64_t sum) {
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  uint32_t s = (uint32_t)sum;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return s;
}

/*
 * Ones'-complement sum of p[0..len) read as 16-bit big-endian words, the last odd byte padded
 * with zero. RFC 1071 §2(B): the sum is byte-order independent, so we add native 64-bit words
 * with end-around carry and swap the two bytes of the folded result on little-endian hosts.
 */
static inline uint32_t csum_bytes(const uint8_t *p, size_t len) {
  uint64_t sum = 0;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    sum += w;
    if (sum < w) sum++; /* end-around carry */
    p += 8;
    len -= 8;
  }
  if (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += w;
    if (sum < w) sum++;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    if (sum < w) sum++;
    p += 2;
    len -= 2;
  }
  if (len == 1) {
    uint8_t tail[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, tail, 2);
    sum += w;
    if (sum < w) sum++;
  }
  uint32_t s = fold64(sum);
  const uint16_t one = 1;
  if (*(const uint8_t *)&one == 1) { /* little-endian host */
    s = ((s & 0xff) << 8) | (s >> 8);
  }
  return s;
}

#endif
