/*
 * Batched UDP/IPv4 for the WireGuard tunnel: one system call per batch of datagrams instead of
 * one node:dgram send() (and one 'message' event, Buffer and rinfo) per datagram.
 *
 *   udpOpen(address, port, bufferBytes[, device]) -> {fd, port, sndbuf, rcvbuf, gso}
 *       socket (non-blocking, close-on-exec), SO_BINDTODEVICE when a device is named (its
 *       route lookups skip routes through other devices: tunroute's own DNS to a resolver that
 *       the plan routes into tun0 for the apps), bind, SO_SNDBUF/SO_RCVBUF (the *FORCE variants
 *       first, which root may raise beyond wmem_max/rmem_max), the bound port, and whether
 *       the kernel knows UDP_SEGMENT (GSO)
 *   udpStartReceiver(fd, buffer, maxDatagrams, slotSize, cb) -> handle
 *       uv_poll; each wake-up drains up to maxDatagrams with recvmmsg into slot i =
 *       buffer[i * slotSize ..] and calls cb(count, offsets, lengths, addrs, ports) once
 *   udpStopReceiver(handle)               idempotent, safe inside the callback
 *   udpSendMany(fd, buf, offsets, lengths, addrs, ports, count, flags) -> datagrams sent, or -errno
 *       sendmmsg of datagram i = buf[offsets[i] .. + lengths[i]) to addrs[i]:ports[i];
 *       with UDP_SEND_GSO in flags, runs of consecutive datagrams to one destination, of one
 *       size except a shorter last one, go as one message with a UDP_SEGMENT cmsg
 *   udpClose(fd)                          idempotent
 *
 * fd is the tagged handle udpOpen returns (napi_util.h), never a number.
 * Addresses are IPv4 as host-order uint32 (192.0.2.1 is 0xc0000201), ports host order.
 *
 * The receiver is the batched reader tun.c uses too (batch_reader.c: uv_poll, slots of one
 * preallocated Buffer, Uint32Arrays filled in place, the lifetime rules); only its drain,
 * one recvmmsg, lives here.
 *
 * udpSendMany never throws for I/O errors. A full socket buffer (EAGAIN) is normal traffic:
 * it returns how many went, and the caller counts the rest as dropped. Another error on the
 * first datagram returns -errno (the caller drops that one and goes on with the next).
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "batch_reader.h"
#include "napi_util.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

/* udpSendMany flags */
#define UDP_SEND_GSO 1u

/* Datagrams per sendmmsg call (each chunk's headers live on the stack). */
#define SEND_CHUNK 128
/* Segments per GSO message: the kernel's UDP_MAX_SEGMENTS was 64 until 6.10. */
#define GSO_MAX_SEGMENTS 64
/* A GSO message's payload must fit one IPv4 datagram. */
#define GSO_MAX_BYTES (65535 - 20 - 8)

/* ---------------------------------------------------------------------------------------- */
/* open / close                                                                                */

/* SO_*BUFFORCE (CAP_NET_ADMIN: beyond the sysctl cap), else the capped SO_*BUF. Best effort. */
static int set_buffer(int fd, int force_opt, int opt, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
}

static int get_int_opt(int fd, int level, int opt) {
  int v = 0;
  socklen_t len = sizeof v;
  return getsockopt(fd, level, opt, &v, &len) == 0 ? v : -1;
}

static napi_value js_udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "udpOpen(address, port, bufferBytes) needs three arguments");
    return NULL;
  }
  char address[INET_ADDRSTRLEN + 1];
  size_t address_len = 0;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_string) {
    napi_throw_type_error(env, NULL, "address must be a string");
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_string_utf8(env, argv[0], address, sizeof address, &address_len));
  uint32_t port, buffer_bytes;
  if (!arg_uint32(env, argv[1], "port", &port) || !arg_uint32(env, argv[2], "bufferBytes", &buffer_bytes)) {
    return NULL;
  }
  if (port > 65535) {
    napi_throw_range_error(env, NULL, "port must be 0..65535");
    return NULL;
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (address_len >= sizeof address - 1 || inet_pton(AF_INET, address, &sa.sin_addr) != 1) {
    /* Thrown like a failed bind, so the caller's one sentence covers it. */
    throw_errno(env, EADDRNOTAVAIL, "inet_pton", address);
    return NULL;
  }

  char device[IFNAMSIZ];
  device[0] = '\0';
  if (argc >= 4) {
    NAPI_CALL(env, napi_typeof(env, argv[3], &t));
    if (t == napi_string) {
      size_t device_len = 0;
      NAPI_CALL(env, napi_get_value_string_utf8(env, argv[3], device, sizeof device, &device_len));
      if (device_len == 0 || device_len >= sizeof device - 1) {
        napi_throw_range_error(env, NULL, "device must be an interface name of 1..15 characters");
        return NULL;
      }
    } else if (t != napi_undefined) {
      napi_throw_type_error(env, NULL, "device must be a string");
      return NULL;
    }
  }

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    return NULL;
  }
  if (device[0] != '\0' && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, (socklen_t)strlen(device)) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "SO_BINDTODEVICE", device);
    return NULL;
  }
  /* No SO_REUSEADDR/SO_REUSEPORT: a port in use must fail (node:dgram's exclusive bind). */
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "bind", address);
    return NULL;
  }
  if (buffer_bytes > 0) {
    int bytes = buffer_bytes > INT32_MAX / 2 ? INT32_MAX / 2 : (int)buffer_bytes;
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, bytes);
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, bytes);
  }
  struct sockaddr_in bound;
  socklen_t bound_len = sizeof bound;
  if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "getsockname", NULL);
    return NULL;
  }
  /* UDP_SEGMENT is readable (0 = off) on kernels that can segment (4.18+). */
  bool gso = get_int_opt(fd, SOL_UDP, UDP_SEGMENT) >= 0;

  int sndbuf = get_int_opt(fd, SOL_SOCKET, SO_SNDBUF), rcvbuf = get_int_opt(fd, SOL_SOCKET, SO_RCVBUF);
  napi_value result, v;
  tr_fd_t *handle = NULL;
  if ((v = tr_fd_new(env, fd, &handle)) == NULL) return NULL; /* it closed fd */
  if (napi_create_object(env, &result) != napi_ok || napi_set_named_property(env, result, "fd", v) != napi_ok ||
      napi_create_uint32(env, ntohs(bound.sin_port), &v) != napi_ok ||
      napi_set_named_property(env, result, "port", v) != napi_ok ||
      napi_create_int32(env, sndbuf, &v) != napi_ok ||
      napi_set_named_property(env, result, "sndbuf", v) != napi_ok ||
      napi_create_int32(env, rcvbuf, &v) != napi_ok ||
      napi_set_named_property(env, result, "rcvbuf", v) != napi_ok ||
      napi_get_boolean(env, gso, &v) != napi_ok || napi_set_named_property(env, result, "gso", v) != napi_ok) {
    tr_fd_close(handle);
    throw_napi_failure(env, "building the udpOpen() result");
    return NULL;
  }
  return result;
}

static napi_value js_udp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  tr_fd_t *h;
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "udpClose(fd) needs an fd");
    return NULL;
  }
  if (!arg_fd_handle(env, argv[0], &h)) return NULL;
  int err = tr_fd_close(h); /* a closed handle: nothing to do */
  if (err != 0) throw_errno(env, err, "close", NULL);
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* udpSendMany                                                                                 */

/* A message of the chunk: datagrams [first, first + n) of the caller's arrays. */
typedef struct {
  uint32_t first, n;
} group_t;

typedef struct {
  struct mmsghdr msgs[SEND_CHUNK];
  struct iovec iovs[SEND_CHUNK];
  struct sockaddr_in addrs[SEND_CHUNK];
  group_t groups[SEND_CHUNK];
  /* One UDP_SEGMENT cmsg per message (only GSO messages point at theirs). */
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } cmsgs[SEND_CHUNK];
} send_chunk_t;

static void fill_addr(struct sockaddr_in *sa, uint32_t addr, uint32_t port) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_addr.s_addr = htonl(addr);
  sa->sin_port = htons((uint16_t)port);
}

static int sendmmsg_retry(int fd, struct mmsghdr *msgs, unsigned n) {
  int r;
  do {
    r = sendmmsg(fd, msgs, n, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

/*
 * Sends datagrams [start, count) one message each (no GSO); returns how many went before the
 * first failure, or -errno when the first one failed.
 */
static int64_t send_plain(int fd, uint8_t *data, const uint32_t *offsets, const uint32_t *lengths,
                          const uint32_t *addrs, const uint32_t *ports, uint32_t start, uint32_t count,
                          send_chunk_t *c) {
  uint32_t sent = 0;
  while (start + sent < count) {
    uint32_t n = count - start - sent;
    if (n > SEND_CHUNK) n = SEND_CHUNK;
    for (uint32_t k = 0; k < n; k++) {
      uint32_t i = start + sent + k;
      fill_addr(&c->addrs[k], addrs[i], ports[i]);
      c->iovs[k].iov_base = data + offsets[i];
      c->iovs[k].iov_len = lengths[i];
      struct msghdr *h = &c->msgs[k].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_name = &c->addrs[k];
      h->msg_namelen = sizeof c->addrs[k];
      h->msg_iov = &c->iovs[k];
      h->msg_iovlen = 1;
    }
    int r = sendmmsg_retry(fd, c->msgs, n);
    if (r < 0) return sent > 0 ? (int64_t)sent : (int64_t)r;
    sent += (uint32_t)r;
    if ((uint32_t)r < n) break; /* the next one would fail: its error is the caller's next call */
  }
  return sent;
}

/*
 * GSO: consecutive datagrams to one destination, all of the first one's size except a shorter
 * last one, become one message whose iovecs the kernel concatenates and cuts at that size.
 */
static int64_t send_gso(int fd, uint8_t *data, const uint32_t *offsets, const uint32_t *lengths,
                        const uint32_t *addrs, const uint32_t *ports, uint32_t count, send_chunk_t *c) {
  uint32_t sent = 0;
  while (sent < count) {
    /* Build up to SEND_CHUNK messages using at most SEND_CHUNK iovecs. */
    uint32_t nmsg = 0, niov = 0, i = sent;
    while (i < count && nmsg < SEND_CHUNK && niov < SEND_CHUNK) {
      uint32_t size = lengths[i], total = size, n = 1;
      while (i + n < count && niov + n < SEND_CHUNK && n < GSO_MAX_SEGMENTS && addrs[i + n] == addrs[i] &&
             ports[i + n] == ports[i] && lengths[i + n] <= size && lengths[i + n] > 0 &&
             total + lengths[i + n] <= GSO_MAX_BYTES) {
        total += lengths[i + n];
        n++;
        if (lengths[i + n - 1] < size) break; /* a shorter one ends the run */
      }
      for (uint32_t k = 0; k < n; k++) {
        c->iovs[niov + k].iov_base = data + offsets[i + k];
        c->iovs[niov + k].iov_len = lengths[i + k];
      }
      fill_addr(&c->addrs[nmsg], addrs[i], ports[i]);
      struct msghdr *h = &c->msgs[nmsg].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_name = &c->addrs[nmsg];
      h->msg_namelen = sizeof c->addrs[nmsg];
      h->msg_iov = &c->iovs[niov];
      h->msg_iovlen = n;
      if (n > 1) {
        h->msg_control = c->cmsgs[nmsg].buf;
        h->msg_controllen = sizeof c->cmsgs[nmsg].buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(h);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t seg = (uint16_t)size;
        memcpy(CMSG_DATA(cm), &seg, sizeof seg);
      }
      c->groups[nmsg].first = i;
      c->groups[nmsg].n = n;
      nmsg++;
      niov += n;
      i += n;
    }
    int r = sendmmsg_retry(fd, c->msgs, nmsg);
    if (r < 0) {
      group_t g = c->groups[0];
      if (g.n > 1 && r != -EAGAIN && r != -ENOBUFS) {
        /* The kernel refused the segmentation (EIO without checksum offload, EINVAL when a
         * segment exceeds the path MTU, ...): the same datagrams one by one. */
        int64_t p = send_plain(fd, data, offsets, lengths, addrs, ports, g.first, g.first + g.n, c);
        if (p < 0) return sent > 0 ? (int64_t)sent : p;
        sent += (uint32_t)p;
        if ((uint32_t)p < g.n) return sent;
        continue;
      }
      return sent > 0 ? (int64_t)sent : (int64_t)r;
    }
    for (int k = 0; k < r; k++) sent += c->groups[k].n;
    if ((uint32_t)r < nmsg) break;
  }
  return sent;
}

static napi_value js_udp_send_many(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, NULL,
                          "udpSendMany(fd, buf, offsets, lengths, addrs, ports, count, flags) needs eight arguments");
    return NULL;
  }
  int fd;
  uint8_t *data;
  size_t len, n_off, n_len, n_addr, n_port;
  uint32_t *offsets, *lengths, *addrs, *ports, count, flags;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "buf", &data, &len) ||
      !arg_u32_array(env, argv[2], "offsets", &offsets, &n_off) ||
      !arg_u32_array(env, argv[3], "lengths", &lengths, &n_len) ||
      !arg_u32_array(env, argv[4], "addrs", &addrs, &n_addr) ||
      !arg_u32_array(env, argv[5], "ports", &ports, &n_port) || !arg_uint32(env, argv[6], "count", &count) ||
      !arg_uint32(env, argv[7], "flags", &flags)) {
    return NULL;
  }
  if (count > n_off || count > n_len || count > n_addr || count > n_port) {
    napi_throw_range_error(env, NULL, "count is larger than offsets, lengths, addrs or ports");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    if (!check_range(env, len, offsets[i], lengths[i])) return NULL;
    if (ports[i] > 65535) {
      napi_throw_range_error(env, NULL, "ports must be 0..65535");
      return NULL;
    }
  }
  /* Per thread (a worker has its own env): scratch headers, no allocation per call. */
  static __thread send_chunk_t chunk;
  send_chunk_t *c = &chunk;
  int64_t r = (flags & UDP_SEND_GSO) != 0 ? send_gso(fd, data, offsets, lengths, addrs, ports, count, c)
                                          : send_plain(fd, data, offsets, lengths, addrs, ports, 0, count, c);
  /* EAGAIN (a full socket buffer) is not an error: nothing went. */
  if (r == -EAGAIN || r == -EWOULDBLOCK) r = 0;
  napi_value result;
  NAPI_CALL(env, napi_create_int64(env, r, &result));
  return result;
}

/* ---------------------------------------------------------------------------------------- */
/* The batched receiver                                                                        */

/* Errors a UDP socket reports for one datagram or a passing condition: not the socket's end. */
static bool transient_recv_error(int err) {
  switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENETDOWN:
    case ENOMEM:
    case ENOBUFS:
    case EMSGSIZE:
      return true;
    default:
      return false;
  }
}

/* The receiver's own state: one mmsghdr, iovec and source address per slot, pointing at them. */
typedef struct udp_ext {
  struct mmsghdr *msgs;
  struct iovec *iovs;
  struct sockaddr_in *names;
} udp_ext_t;

static void udp_free_ext(batch_reader_t *r) {
  udp_ext_t *x = r->ext;
  if (x == NULL) return;
  free(x->msgs);
  free(x->iovs);
  free(x->names);
  free(x);
  r->ext = NULL;
}

static bool udp_init_ext(batch_reader_t *r) {
  udp_ext_t *x = calloc(1, sizeof *x);
  r->ext = x;
  if (x == NULL) return false;
  x->msgs = calloc(r->max, sizeof *x->msgs);
  x->iovs = calloc(r->max, sizeof *x->iovs);
  x->names = calloc(r->max, sizeof *x->names);
  if (x->msgs == NULL || x->iovs == NULL || x->names == NULL) return false;
  for (uint32_t i = 0; i < r->max; i++) {
    x->iovs[i].iov_base = r->data + (size_t)i * r->slot_size;
    x->iovs[i].iov_len = r->slot_size;
    struct msghdr *m = &x->msgs[i].msg_hdr;
    m->msg_name = &x->names[i];
    m->msg_namelen = sizeof x->names[i];
    m->msg_iov = &x->iovs[i];
    m->msg_iovlen = 1;
  }
  return true;
}

/* One recvmmsg: the datagrams, their lengths and IPv4 sources (host order). */
static uint32_t udp_drain(batch_reader_t *r, int *err) {
  udp_ext_t *x = r->ext;
  uint32_t *lengths = r->arrays[1], *addrs = r->arrays[2], *ports = r->arrays[3];
  for (uint32_t i = 0; i < r->max; i++) {
    struct msghdr *m = &x->msgs[i].msg_hdr;
    m->msg_namelen = sizeof x->names[i];
    m->msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(r->fd, x->msgs, r->max, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (!transient_recv_error(errno)) *err = errno;
    return 0;
  }
  for (int i = 0; i < n; i++) {
    uint32_t len = x->msgs[i].msg_len;
    /* A datagram larger than its slot arrives cut to the slot (MSG_TRUNC): report the cut
     * length; it cannot authenticate and is dropped by the protocol. */
    if (len > r->slot_size) len = r->slot_size;
    const struct sockaddr_in *sa = &x->names[i];
    lengths[i] = len;
    if (sa->sin_family == AF_INET) {
      addrs[i] = ntohl(sa->sin_addr.s_addr);
      ports[i] = ntohs(sa->sin_port);
    } else {
      addrs[i] = 0;
      ports[i] = 0;
    }
  }
  return (uint32_t)n;
}

static const napi_type_tag RECEIVER_TAG = {0x5b1c0e7a93d24f61ULL, 0xa4c2e9177f3b5d08ULL};

static const batch_reader_spec_t UDP_RECEIVER = {
    .start_name = "udpStartReceiver",
    .stop_name = "udpStopReceiver",
    .max_name = "maxDatagrams",
    .resource = "tunroute:UdpReceiver",
    .tag = &RECEIVER_TAG,
    .max_limit = 1024, /* recvmmsg takes at most UIO_MAXIOV (1024) messages per call */
    .slot_limit = 65536,
    .narrays = 4, /* offsets, lengths, addrs, ports */
    .drain = udp_drain,
    .init_ext = udp_init_ext,
    .free_ext = udp_free_ext,
};

static napi_value js_udp_start_receiver(napi_env env, napi_callback_info info) {
  return batch_reader_start(env, info, &UDP_RECEIVER);
}

static napi_value js_udp_stop_receiver(napi_env env, napi_callback_info info) {
  return batch_reader_stop(env, info, &UDP_RECEIVER);
}

/* ---------------------------------------------------------------------------------------- */
/* Registration                                                                                */

napi_status tr_register_udp(napi_env env, napi_value exports) {
  napi_value gso_flag;
  napi_status st = napi_create_uint32(env, UDP_SEND_GSO, &gso_flag);
  if (st != napi_ok) return st;
  napi_property_descriptor props[] = {
      {"udpOpen", NULL, js_udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpStartReceiver", NULL, js_udp_start_receiver, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpStopReceiver", NULL, js_udp_stop_receiver, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSendMany", NULL, js_udp_send_many, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpClose", NULL, js_udp_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"UDP_SEND_GSO", NULL, NULL, NULL, NULL, gso_flag, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
