/*
 * Fake-IP answers in the TUN reader (see fake_dns.h).
 *
 * Why here: a sequential client's query and its fake answer are one packet each way, and on
 * this kind of machine most of their cost is going to sleep and being woken, which dnsmasq
 * pays too. What tunroute paid besides was its own: a callback into JS per wake-up, the packet
 * parsed in JS, a flow looked up, the answer built and staged in the UDP stack and written by
 * a second native call. Here C reads the query, asks JS only for the address (decide(): the
 * rules and the pool stay in JS, the one owner of which name holds which address) and writes
 * the answer itself.
 *
 * Plain, the only kind taken here (anything else goes to JS untouched, which decides as ever):
 *   - IPv4 without options or fragments, header checksum intact, lengths exact;
 *   - UDP to port 53, checksum intact (or absent, or left partial by the kernel, which then
 *     built the packet itself: the virtio-net flags say so), no segmentation offload;
 *   - a standard query (QR 0, opcode 0) with one question, A in class IN, whose name is plain
 *     labels of letters, digits, '-' and '_' as dns/question-key.ts reads them: 1..63
 *     characters not starting or ending with '-', at most 253 in all, no compression pointer.
 * The name goes to decide() in canonical form (lower case, no trailing dot), with the sizes
 * of the query and of the answer (for the counters JS keeps). The answer is what
 * dns/message.ts writeAddressAnswer writes: the query's ID, RD and opcode, QR and RA set,
 * NOERROR, the question as asked, one A record (a pointer to the question's name), no other
 * section; IPv4 with DF and TTL 64, both checksums.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "csum.h"
#include "fake_dns.h"

#define IPV4_HDR 20
#define UDP_HDR 8
#define DNS_HDR 12
#define MAX_NAME_TEXT 253
#define MAX_LABEL 63
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
/* The largest question a plain one can be: 255 bytes of name on the wire, type and class. */
#define MAX_QUESTION (DNS_HDR + 255 + 4)
#define ANSWER_RR 16

static inline uint16_t rd16(const uint8_t *p) {
  return (uint16_t)((p[0] << 8) | p[1]);
}

static inline void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* The UDP pseudo-header (RFC 768) of src → dst with `ulen` bytes of UDP, as a partial sum. */
static uint64_t pseudo_sum(const uint8_t *src, const uint8_t *dst, size_t ulen) {
  return (uint64_t)csum_bytes(src, 4) + csum_bytes(dst, 4) + 17 + ulen;
}

/* The folded sum of p[0..len) plus `initial`: 0xffff over data whose checksum is intact. */
static uint32_t sum_with(const uint8_t *p, size_t len, uint64_t initial) {
  return fold64(csum_bytes(p, len) + initial);
}

/*
 * The question of a plain query at dns[0..dlen): its canonical name into text (length in
 * *text_len) and the offset just after the question in *qend; false when it is not plain.
 */
static bool read_question(const uint8_t *dns, size_t dlen, char *text, size_t *text_len, size_t *qend) {
  if (dlen < DNS_HDR + 5) return false;
  if ((dns[2] & 0xf8) != 0 || dns[4] != 0 || dns[5] != 1) return false;
  size_t i = DNS_HDR, n = 0;
  for (;;) {
    uint8_t l = dns[i];
    if (l == 0) break;
    if (l > MAX_LABEL || i + 1 + l >= dlen) return false;
    if (n != 0) text[n++] = '.';
    if (n + l > MAX_NAME_TEXT) return false;
    size_t last = i + l;
    if (dns[i + 1] == '-' || dns[last] == '-') return false;
    for (size_t k = i + 1; k <= last; k++) {
      uint8_t c = dns[k];
      if (c >= 'A' && c <= 'Z') c = (uint8_t)(c + 32);
      else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
      text[n++] = (char)c;
    }
    i = last + 1;
  }
  if (n == 0 || i + 5 > dlen) return false;
  /* A (1) in class IN (1) only: other types keep their own answers in JS. */
  if (rd16(dns + i + 1) != 1 || rd16(dns + i + 3) != 1) return false;
  *text_len = n;
  *qend = i + 5;
  return true;
}

/* decide(name, queryBytes, answerBytes): the address, or 0 (also when the call failed). */
static uint32_t call_decide(napi_env env, fake_dns_t *d, const char *name, size_t name_len, size_t query_bytes, size_t answer_bytes) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return 0;
  uint32_t ip = 0;
  napi_value fn, recv, argv[3], result;
  if (napi_get_reference_value(env, d->decide, &fn) == napi_ok && fn != NULL &&
      napi_get_undefined(env, &recv) == napi_ok &&
      napi_create_string_latin1(env, name, name_len, &argv[0]) == napi_ok &&
      napi_create_uint32(env, (uint32_t)query_bytes, &argv[1]) == napi_ok &&
      napi_create_uint32(env, (uint32_t)answer_bytes, &argv[2]) == napi_ok) {
    napi_status st = napi_call_function(env, recv, fn, 3, argv, &result);
    if (st == napi_ok) {
      if (napi_get_value_uint32(env, result, &ip) != napi_ok) ip = 0;
    } else if (st == napi_pending_exception) {
      /* A throwing decide() is a bug in JS: let it surface as an uncaught exception there. */
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
  return ip;
}

size_t fake_dns_build(napi_env env, fake_dns_t *d, const uint8_t *pkt, size_t n, uint8_t *out) {
  const size_t v = d->vnet;
  if (n < v + IPV4_HDR + UDP_HDR + DNS_HDR + 5) return 0;
  bool partial = false;
  if (v > 0) {
    if (pkt[1] != VNET_GSO_NONE) return 0;
    partial = (pkt[0] & VNET_F_NEEDS_CSUM) != 0;
  }
  const uint8_t *ip = pkt + v;
  const size_t ip_len = n - v;
  if (ip[0] != 0x45 || ip[9] != 17 || rd16(ip + 2) != ip_len) return 0;
  if ((rd16(ip + 6) & 0x3fff) != 0) return 0; /* MF, or an offset: a fragment */
  if (csum_bytes(ip, IPV4_HDR) != 0xffff) return 0;
  const uint8_t *udp = ip + IPV4_HDR;
  const size_t ulen = ip_len - IPV4_HDR;
  if (rd16(udp + 2) != 53 || rd16(udp + 4) != ulen) return 0;
  if (!partial && rd16(udp + 6) != 0 && sum_with(udp, ulen, pseudo_sum(ip + 12, ip + 16, ulen)) != 0xffff) return 0;
  const uint8_t *dns = udp + UDP_HDR;
  char name[MAX_NAME_TEXT];
  size_t name_len, qend;
  if (!read_question(dns, ulen - UDP_HDR, name, &name_len, &qend) || qend > MAX_QUESTION) return 0;

  const size_t dns_out = qend + ANSWER_RR;
  const uint32_t addr = call_decide(env, d, name, name_len, ulen - UDP_HDR, dns_out);
  if (addr == 0) return 0;

  memset(out, 0, v); /* virtio-net header: no flags, no segmentation */
  uint8_t *oip = out + v, *oudp = oip + IPV4_HDR, *odns = oudp + UDP_HDR;
  /* DNS: the query's ID, RD and opcode; QR, RA, NOERROR; one question (as asked), one answer. */
  memcpy(odns, dns, qend);
  wr16(odns + 2, 0x8000 | 0x0080 | (rd16(dns + 2) & 0x0100) | (rd16(dns + 2) & 0x7800));
  wr16(odns + 4, 1);
  wr16(odns + 6, 1);
  wr16(odns + 8, 0);
  wr16(odns + 10, 0);
  uint8_t *rr = odns + qend;
  wr16(rr, 0xc000 | DNS_HDR);
  wr16(rr + 2, 1);
  wr16(rr + 4, 1);
  wr16(rr + 6, d->ttl >> 16);
  wr16(rr + 8, d->ttl & 0xffff);
  wr16(rr + 10, 4);
  wr16(rr + 12, addr >> 16);
  wr16(rr + 14, addr & 0xffff);
  /* UDP: from the query's destination back to its source. */
  const size_t oulen = UDP_HDR + dns_out;
  memcpy(oudp, udp + 2, 2);
  memcpy(oudp + 2, udp, 2);
  wr16(oudp + 4, oulen);
  wr16(oudp + 6, 0);
  /* IPv4: DF, TTL 64, no options. */
  const size_t tot = IPV4_HDR + oulen;
  memset(oip, 0, IPV4_HDR);
  oip[0] = 0x45;
  wr16(oip + 2, tot);
  wr16(oip + 6, 0x4000);
  oip[8] = 64;
  oip[9] = 17;
  memcpy(oip + 12, ip + 16, 4);
  memcpy(oip + 16, ip + 12, 4);
  wr16(oip + 10, (uint16_t)~csum_bytes(oip, IPV4_HDR));
  uint16_t uc = (uint16_t)~sum_with(oudp, oulen, pseudo_sum(oip + 12, oip + 16, oulen));
  wr16(oudp + 6, uc == 0 ? 0xffff : uc);
  return v + tot;
}

bool fake_dns_answer(napi_env env, fake_dns_t *d, int fd, const uint8_t *pkt, size_t n) {
  uint8_t out[FAKE_DNS_MAX_ANSWER];
  size_t len = fake_dns_build(env, d, pkt, n, out);
  if (len == 0) return false;
  /* A full queue drops the answer, as it would any reply: the client asks again. */
  ssize_t w;
  do {
    w = write(fd, out, len);
  } while (w < 0 && errno == EINTR);
  return true;
}
