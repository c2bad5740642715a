/*
 * Batched UDP/IPv4 for the WireGuard tunnel: one system call per batch of datagrams instead of
 * one node:dgram send() (and one 'message' event, Buffer and rinfo) per datagram.
 *
 *   udpOpen(address, port, bufferBytes)   -> {fd, port, sndbuf, rcvbuf, gso}
 *       socket (non-blocking, close-on-exec), bind, SO_SNDBUF/SO_RCVBUF (the *FORCE variants
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
 *   udpClose(fd)
 *
 * Addresses are IPv4 as host-order uint32 (192.0.2.1 is 0xc0000201), ports host order.
 *
 * The receiver mirrors tun.c's TUN reader (uv_poll on a non-blocking fd, slots of one
 * preallocated Buffer, Uint32Arrays created at start and filled in place, env cleanup hook,
 * stop deferred while inside the callback): the hot path allocates nothing but the count.
 *
 * udpSendMany never throws for I/O errors. A full socket buffer (EAGAIN) is normal traffic:
 * it returns how many went, and the caller counts the rest as dropped. Another error on the
 * first datagram returns -errno (the caller drops that one and goes on with the next).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

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
  size_t argc = 3;
  napi_value argv[3];
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

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
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

  napi_value result, v;
  if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, fd, &v) != napi_ok ||
      napi_set_named_property(env, result, "fd", v) != napi_ok ||
      napi_create_uint32(env, ntohs(bound.sin_port), &v) != napi_ok ||
      napi_set_named_property(env, result, "port", v) != napi_ok ||
      napi_create_int32(env, get_int_opt(fd, SOL_SOCKET, SO_SNDBUF), &v) != napi_ok ||
      napi_set_named_property(env, result, "sndbuf", v) != napi_ok ||
      napi_create_int32(env, get_int_opt(fd, SOL_SOCKET, SO_RCVBUF), &v) != napi_ok ||
      napi_set_named_property(env, result, "rcvbuf", v) != napi_ok ||
      napi_get_boolean(env, gso, &v) != napi_ok || napi_set_named_property(env, result, "gso", v) != napi_ok) {
    close(fd);
    throw_napi_failure(env, "building the udpOpen() result");
    return NULL;
  }
  return result;
}

static napi_value js_udp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "udpClose(fd) needs an fd");
    return NULL;
  }
  if (!arg_fd(env, argv[0], &fd)) return NULL;
  /* On Linux the fd is released even when close() reports EINTR: never retry. */
  if (close(fd) < 0 && errno != EINTR) throw_errno(env, errno, "close", NULL);
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

typedef struct receiver {
  uv_poll_t poll;
  napi_env env;
  int fd;
  uint8_t *data; /* the JS Buffer's bytes; kept alive by buffer_ref */
  uint32_t max_datagrams;
  uint32_t slot_size;
  uint32_t *lengths, *addrs, *ports; /* the Uint32Arrays' storage; kept alive by their refs */
  struct mmsghdr *msgs;              /* max_datagrams each, allocated with the struct */
  struct iovec *iovs;
  struct sockaddr_in *names;
  napi_ref buffer_ref, offsets_ref, lengths_ref, addrs_ref, ports_ref, callback_ref, recv_ref;
  napi_async_context async_ctx;
  bool stopped;     /* stop requested: no more callbacks */
  bool released;    /* JS references and the async context released */
  bool in_callback; /* inside napi_make_callback: release is deferred until it returns */
  bool closing;     /* uv_close called */
  bool closed;      /* uv_close callback ran: libuv no longer touches the struct */
  bool finalized;   /* the JS handle object was garbage-collected */
  bool hooked;      /* env cleanup hook registered */
} receiver_t;

static const napi_type_tag RECEIVER_TAG = {0x5b1c0e7a93d24f61ULL, 0xa4c2e9177f3b5d08ULL};

static void receiver_cleanup_hook(void *arg);

static void receiver_free(receiver_t *r) {
  free(r->msgs);
  free(r->iovs);
  free(r->names);
  free(r);
}

static void receiver_maybe_free(receiver_t *r) {
  if (r->closed && r->finalized) receiver_free(r);
}

static void receiver_on_close(uv_handle_t *h) {
  receiver_t *r = h->data;
  r->closed = true;
  receiver_maybe_free(r);
}

static void receiver_close_handle(receiver_t *r) {
  if (r->closing) return;
  r->closing = true;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, receiver_on_close);
}

static void receiver_delete_ref(napi_env env, napi_ref *ref) {
  if (*ref != NULL) {
    napi_delete_reference(env, *ref);
    *ref = NULL;
  }
}

static void receiver_release_js(receiver_t *r) {
  if (r->released) return;
  r->released = true;
  napi_env env = r->env;
  receiver_delete_ref(env, &r->callback_ref);
  receiver_delete_ref(env, &r->buffer_ref);
  receiver_delete_ref(env, &r->offsets_ref);
  receiver_delete_ref(env, &r->lengths_ref);
  receiver_delete_ref(env, &r->addrs_ref);
  receiver_delete_ref(env, &r->ports_ref);
  receiver_delete_ref(env, &r->recv_ref); /* lets the handle object be collected (-> finalizer) */
  if (r->async_ctx != NULL) {
    napi_async_destroy(env, r->async_ctx);
    r->async_ctx = NULL;
  }
  if (r->hooked) {
    r->hooked = false;
    napi_remove_env_cleanup_hook(env, receiver_cleanup_hook, r);
  }
}

static void receiver_stop(receiver_t *r) {
  if (r->stopped) return;
  r->stopped = true;
  receiver_close_handle(r);
  if (!r->in_callback) receiver_release_js(r);
}

/* The environment is going away (process exit, worker termination): stop polling, no JS. */
static void receiver_cleanup_hook(void *arg) {
  receiver_t *r = arg;
  r->hooked = false;
  r->stopped = true;
  r->released = true;
  receiver_close_handle(r);
}

static void receiver_finalize(napi_env env, void *data, void *hint) {
  receiver_t *r = data;
  r->finalized = true;
  receiver_maybe_free(r);
}

/* Calls the JS callback once: cb.call(handle, count, offsets, lengths, addrs, ports). */
static void receiver_call_js(receiver_t *r, int32_t count) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[5], result;
  if (napi_get_reference_value(env, r->callback_ref, &cb) == napi_ok &&
      napi_get_reference_value(env, r->recv_ref, &recv) == napi_ok &&
      napi_get_reference_value(env, r->offsets_ref, &argv[1]) == napi_ok &&
      napi_get_reference_value(env, r->lengths_ref, &argv[2]) == napi_ok &&
      napi_get_reference_value(env, r->addrs_ref, &argv[3]) == napi_ok &&
      napi_get_reference_value(env, r->ports_ref, &argv[4]) == napi_ok &&
      napi_create_int32(env, count, &argv[0]) == napi_ok) {
    r->in_callback = true;
    napi_status st = napi_make_callback(env, r->async_ctx, recv, cb, 5, argv, &result);
    r->in_callback = false;
    if (st == napi_pending_exception) {
      /* A throwing callback becomes an ordinary uncaught exception ('uncaughtException'). */
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
  if (r->stopped) receiver_release_js(r); /* udpStopReceiver() was called from inside the callback */
}

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

static void receiver_on_poll(uv_poll_t *h, int status, int events) {
  receiver_t *r = h->data;
  if (r->stopped) return;
  int err = 0;
  uint32_t count = 0;
  if (status < 0) {
    err = -status;
  } else {
    for (uint32_t i = 0; i < r->max_datagrams; i++) {
      struct msghdr *m = &r->msgs[i].msg_hdr;
      m->msg_namelen = sizeof r->names[i];
      m->msg_flags = 0;
    }
    int n;
    do {
      n = recvmmsg(r->fd, r->msgs, r->max_datagrams, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (!transient_recv_error(errno)) err = errno;
    } else {
      for (int i = 0; i < n; i++) {
        uint32_t len = r->msgs[i].msg_len;
        /* A datagram larger than its slot arrives cut to the slot (MSG_TRUNC): report the cut
         * length; it cannot authenticate and is dropped by the protocol. */
        if (len > r->slot_size) len = r->slot_size;
        const struct sockaddr_in *sa = &r->names[i];
        r->lengths[i] = len;
        if (sa->sin_family == AF_INET) {
          r->addrs[i] = ntohl(sa->sin_addr.s_addr);
          r->ports[i] = ntohs(sa->sin_port);
        } else {
          r->addrs[i] = 0;
          r->ports[i] = 0;
        }
      }
      count = (uint32_t)n;
    }
  }
  if (count > 0) receiver_call_js(r, (int32_t)count);
  if (err != 0 && !r->stopped) {
    /* A fatal error (the socket is gone): tell JS with a negative count, then stop. */
    receiver_call_js(r, -err);
    receiver_stop(r);
  }
}

/* A Uint32Array of n entries with its storage; false (exception pending) on failure. */
static bool new_u32_array(napi_env env, uint32_t n, uint32_t **storage, napi_value *out) {
  napi_value ab;
  void *p;
  if (napi_create_arraybuffer(env, (size_t)n * 4, &p, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_uint32_array, n, ab, 0, out) != napi_ok) {
    return false;
  }
  memset(p, 0, (size_t)n * 4);
  *storage = p;
  return true;
}

static napi_value js_udp_start_receiver(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, NULL,
                          "udpStartReceiver(fd, buffer, maxDatagrams, slotSize, callback) needs five arguments");
    return NULL;
  }
  int fd;
  uint8_t *data;
  size_t len;
  uint32_t max_datagrams, slot_size;
  napi_valuetype t;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "buffer", &data, &len) ||
      !arg_uint32(env, argv[2], "maxDatagrams", &max_datagrams) ||
      !arg_uint32(env, argv[3], "slotSize", &slot_size)) {
    return NULL;
  }
  NAPI_CALL(env, napi_typeof(env, argv[4], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "callback must be a function");
    return NULL;
  }
  /* recvmmsg takes at most UIO_MAXIOV (1024) messages per call. */
  if (max_datagrams == 0 || max_datagrams > 1024 || slot_size == 0 || slot_size > 65536) {
    napi_throw_range_error(env, NULL, "maxDatagrams must be 1..1024 and slotSize 1..65536");
    return NULL;
  }
  if ((uint64_t)max_datagrams * slot_size > len) {
    napi_throw_range_error(env, NULL, "buffer is smaller than maxDatagrams * slotSize");
    return NULL;
  }

  receiver_t *r = calloc(1, sizeof *r);
  if (r != NULL) {
    r->msgs = calloc(max_datagrams, sizeof *r->msgs);
    r->iovs = calloc(max_datagrams, sizeof *r->iovs);
    r->names = calloc(max_datagrams, sizeof *r->names);
  }
  if (r == NULL || r->msgs == NULL || r->iovs == NULL || r->names == NULL) {
    if (r != NULL) receiver_free(r);
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  r->env = env;
  r->fd = fd;
  r->data = data;
  r->max_datagrams = max_datagrams;
  r->slot_size = slot_size;
  for (uint32_t i = 0; i < max_datagrams; i++) {
    r->iovs[i].iov_base = data + (size_t)i * slot_size;
    r->iovs[i].iov_len = slot_size;
    struct msghdr *m = &r->msgs[i].msg_hdr;
    m->msg_name = &r->names[i];
    m->msg_namelen = sizeof r->names[i];
    m->msg_iov = &r->iovs[i];
    m->msg_iovlen = 1;
  }

  napi_value handle, offsets, lengths, addrs, ports, name;
  uint32_t *offsets_data;
  uv_loop_t *loop;
  int uv_err;
  if (napi_create_object(env, &handle) != napi_ok || !new_u32_array(env, max_datagrams, &offsets_data, &offsets) ||
      !new_u32_array(env, max_datagrams, &r->lengths, &lengths) ||
      !new_u32_array(env, max_datagrams, &r->addrs, &addrs) ||
      !new_u32_array(env, max_datagrams, &r->ports, &ports) ||
      napi_create_string_utf8(env, "tunroute:UdpReceiver", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_get_uv_event_loop(env, &loop) != napi_ok) {
    receiver_free(r);
    throw_napi_failure(env, "udpStartReceiver setup");
    return NULL;
  }
  for (uint32_t i = 0; i < max_datagrams; i++) offsets_data[i] = i * slot_size;

  if (napi_create_reference(env, argv[1], 1, &r->buffer_ref) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &r->callback_ref) != napi_ok ||
      napi_create_reference(env, offsets, 1, &r->offsets_ref) != napi_ok ||
      napi_create_reference(env, lengths, 1, &r->lengths_ref) != napi_ok ||
      napi_create_reference(env, addrs, 1, &r->addrs_ref) != napi_ok ||
      napi_create_reference(env, ports, 1, &r->ports_ref) != napi_ok ||
      napi_create_reference(env, handle, 1, &r->recv_ref) != napi_ok ||
      napi_async_init(env, handle, name, &r->async_ctx) != napi_ok) {
    throw_napi_failure(env, "udpStartReceiver references");
    receiver_release_js(r);
    receiver_free(r);
    return NULL;
  }

  uv_err = uv_poll_init(loop, &r->poll, fd);
  if (uv_err != 0) {
    receiver_release_js(r);
    receiver_free(r);
    throw_errno(env, -uv_err, "uv_poll_init", NULL);
    return NULL;
  }
  r->poll.data = r;
  uv_err = uv_poll_start(&r->poll, UV_READABLE, receiver_on_poll);
  if (uv_err != 0) {
    r->finalized = true; /* no JS handle owns it yet: free on close */
    receiver_stop(r);
    throw_errno(env, -uv_err, "uv_poll_start", NULL);
    return NULL;
  }
  if (napi_wrap(env, handle, r, receiver_finalize, NULL, NULL) != napi_ok) {
    r->finalized = true;
    receiver_stop(r);
    throw_napi_failure(env, "udpStartReceiver wrap");
    return NULL;
  }
  /* From here on the finalizer owns the struct's lifetime together with uv_close. */
  if (napi_type_tag_object(env, handle, &RECEIVER_TAG) != napi_ok) {
    receiver_stop(r);
    throw_napi_failure(env, "udpStartReceiver type tag");
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, receiver_cleanup_hook, r) == napi_ok) r->hooked = true;
  return handle;
}

static napi_value js_udp_stop_receiver(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool ok = false;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) NAPI_CALL(env, napi_typeof(env, argv[0], &t));
  if (t == napi_object) NAPI_CALL(env, napi_check_object_type_tag(env, argv[0], &RECEIVER_TAG, &ok));
  if (!ok) {
    napi_throw_type_error(env, NULL, "udpStopReceiver needs a handle returned by udpStartReceiver");
    return NULL;
  }
  void *data = NULL;
  NAPI_CALL(env, napi_unwrap(env, argv[0], &data));
  receiver_stop(data);
  return NULL;
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
