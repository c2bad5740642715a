/*
 * Fake-IP answers given in the TUN reader itself (fake_dns.c): for a plain A query, JavaScript
 * picks the address (the pool and the rules stay there) and C reads the query and writes the
 * answer, so such a query costs no batch callback, no packet parsing in JS and no second trip
 * through the UDP stack. See fake_dns.c for what counts as plain.
 */
#ifndef TUNROUTE_FAKE_DNS_H
#define TUNROUTE_FAKE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <node_api.h>

typedef struct {
  /* decide(name, queryBytes, answerBytes) -> address (uint32) or 0: "not mine, read it in JS" */
  napi_ref decide;
  /* Bytes of the virtio-net header before each packet (0 or 10), as the device was opened. */
  uint32_t vnet;
  /* TTL of the answers, seconds. */
  uint32_t ttl;
} fake_dns_t;

/* The largest answer (virtio-net header, IPv4, UDP, the largest plain question, one record). */
#define FAKE_DNS_MAX_ANSWER (10 + 20 + 8 + 12 + 255 + 4 + 16)

/* The answer to the packet pkt[0..n) (as read from the device), written into out (room for
 * FAKE_DNS_MAX_ANSWER bytes) if it is a plain A query and decide() gives an address: its
 * length, or 0 (then the packet goes to JS as it is). */
size_t fake_dns_build(napi_env env, fake_dns_t *d, const uint8_t *pkt, size_t n, uint8_t *out);

/* fake_dns_build, then the answer written to fd: true when the packet was answered (written,
 * or refused by a full queue, as any reply may be) and must not reach JS. */
bool fake_dns_answer(napi_env env, fake_dns_t *d, int fd, const uint8_t *pkt, size_t n);

#endif
