/*
 * tunroute_native, its TUN part: a Linux TUN device for Node.js through Node-API (udp.c and aead.c are the tunnel's).
 *
 *   open(name, {vnetHdr, multiQueue})              -> {fd, name}      TUNSETIFF (+TUNSETVNETHDRSZ)
 *   setOffload(fd, flags)                                             TUNSETOFFLOAD
 *   startReader(fd, buffer, maxPackets, slotSize, cb) -> handle       uv_poll, batched read()
 *   stopReader(handle)                                                idempotent, re-entrant
 *   setDnsResponder(handle, decide|null, vnetLen, ttl)                plain A queries answered
 *                                                     in the reader (fake_dns.c)
 *   fakeDnsAnswer(packet, vnetLen, ttl, decide)    -> Buffer | null   that answer, for tests
 *   write(fd, buf, offset, length)                 -> bytes or -errno
 *   writeMany(fd, buf, offsets, lengths, count, errnoOut) -> packets written (stops at the first
 *                                                     error, whose errno goes to errnoOut[0])
 *   writeParts(fd, head, body, tail)               -> bytes or -errno   one packet, writev
 *   close(fd)                                                         idempotent
 *   checksum(buf, offset, length, initial)         -> RFC 1071 sum folded to 16 bits, not inverted
 *
 * fd is never a number in JS: open() returns a tagged handle that every other call checks (see
 * napi_util.h), so a forged integer is a TypeError, not a write to someone else's descriptor.
 *
 * The reader is the reason this file exists: one uv_poll wake-up drains up to maxPackets
 * packets into consecutive slots of one preallocated Buffer (slot i at i * slotSize) and calls
 * JS once with the count. offsets/lengths are two Uint32Arrays created at start and filled in
 * place, so the hot path allocates nothing but the count. The lifecycle is batch_reader.c's,
 * shared with the tunnel's UDP receiver (udp.c); only the drain, read() per slot, is here.
 *
 * Errors from system calls are thrown as Errors with .code (errno name, e.g. 'EBUSY'), .errno
 * and .syscall. write/writeMany never throw for I/O errors: a full queue is normal traffic.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

/* Older kernel headers (Debian 12 ships 6.1) lack the UDP segmentation offload flags. */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#define TUN_PATH "/dev/net/tun"
#define VNET_HDR_LEN 10

#include "batch_reader.h"
#include "csum.h"
#include "fake_dns.h"
#include "napi_util.h"

/* ---------------------------------------------------------------------------------------- */
/* open / setOffload / close                                                                  */

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "open(name, opts) needs a name");
    return NULL;
  }
  char name[IFNAMSIZ + 1];
  size_t name_len = 0;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_string) {
    napi_throw_type_error(env, NULL, "name must be a string");
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len));
  if (name_len >= IFNAMSIZ) {
    napi_throw_range_error(env, NULL, "TUN device name must be at most 15 bytes");
    return NULL;
  }
  bool vnet_hdr = false, multi_queue = false;
  if (argc >= 2) {
    NAPI_CALL(env, napi_typeof(env, argv[1], &t));
    if (t == napi_object) {
      vnet_hdr = get_bool_prop(env, argv[1], "vnetHdr");
      multi_queue = get_bool_prop(env, argv[1], "multiQueue");
    }
  }

  int fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", TUN_PATH);
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (vnet_hdr) ifr.ifr_flags |= IFF_VNET_HDR;
  if (multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  memcpy(ifr.ifr_name, name, name_len);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ioctl(TUNSETIFF)", name_len > 0 ? name : "a new device");
    return NULL;
  }
  if (vnet_hdr) {
    int sz = VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      int err = errno;
      close(fd);
      throw_errno(env, err, "ioctl(TUNSETVNETHDRSZ)", ifr.ifr_name);
      return NULL;
    }
  }

  napi_value result, js_fd, js_name;
  tr_fd_t *handle = NULL;
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  if ((js_fd = tr_fd_new(env, fd, &handle)) == NULL) return NULL; /* it closed fd */
  if (napi_create_object(env, &result) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &js_name) != napi_ok ||
      napi_set_named_property(env, result, "fd", js_fd) != napi_ok ||
      napi_set_named_property(env, result, "name", js_name) != napi_ok) {
    tr_fd_close(handle);
    throw_napi_failure(env, "building the open() result");
    return NULL;
  }
  return result;
}

static napi_value js_set_offload(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  uint32_t flags;
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "setOffload(fd, flags) needs two arguments");
    return NULL;
  }
  if (!arg_fd(env, argv[0], &fd) || !arg_uint32(env, argv[1], "flags", &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    throw_errno(env, errno, "ioctl(TUNSETOFFLOAD)", NULL);
    return NULL;
  }
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  tr_fd_t *h;
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "close(fd) needs an fd");
    return NULL;
  }
  if (!arg_fd_handle(env, argv[0], &h)) return NULL;
  int err = tr_fd_close(h); /* a closed handle: nothing to do */
  if (err != 0) throw_errno(env, err, "close", NULL);
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* write / writeMany                                                                           */

static ssize_t write_once(int fd, const uint8_t *p, size_t len) {
  ssize_t n;
  do {
    n = write(fd, p, len);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -(ssize_t)errno : n;
}

static napi_value js_write(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "write(fd, buf, offset, length) needs four arguments");
    return NULL;
  }
  int fd;
  uint8_t *data;
  size_t len;
  uint32_t offset, length;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "buf", &data, &len) ||
      !arg_uint32(env, argv[2], "offset", &offset) || !arg_uint32(env, argv[3], "length", &length) ||
      !check_range(env, len, offset, length)) {
    return NULL;
  }
  napi_value result;
  NAPI_CALL(env, napi_create_int64(env, write_once(fd, data + offset, length), &result));
  return result;
}

/* writeParts(fd, head, body, tail) -> bytes or -errno: one packet from three pieces (writev;
 * tail may be empty), so a large payload is never copied next to its header. */
static napi_value js_write_parts(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "writeParts(fd, head, body, tail) needs four arguments");
    return NULL;
  }
  int fd;
  uint8_t *head, *body, *tail;
  size_t head_len, body_len, tail_len;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "head", &head, &head_len) ||
      !arg_bytes(env, argv[2], "body", &body, &body_len) || !arg_bytes(env, argv[3], "tail", &tail, &tail_len)) {
    return NULL;
  }
  struct iovec iov[3] = {{head, head_len}, {body, body_len}, {tail, tail_len}};
  ssize_t n;
  do {
    n = writev(fd, iov, tail_len > 0 ? 3 : 2);
  } while (n < 0 && errno == EINTR);
  napi_value result;
  NAPI_CALL(env, napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &result));
  return result;
}

static napi_value js_write_many(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "writeMany(fd, buf, offsets, lengths, count, errnoOut) needs six arguments");
    return NULL;
  }
  int fd;
  uint8_t *data;
  size_t len, n_offsets, n_lengths, n_errno;
  uint32_t *offsets, *lengths, *errno_out, count;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "buf", &data, &len) ||
      !arg_u32_array(env, argv[2], "offsets", &offsets, &n_offsets) ||
      !arg_u32_array(env, argv[3], "lengths", &lengths, &n_lengths) ||
      !arg_uint32(env, argv[4], "count", &count) || !arg_u32_array(env, argv[5], "errnoOut", &errno_out, &n_errno)) {
    return NULL;
  }
  if (count > n_offsets || count > n_lengths) {
    napi_throw_range_error(env, NULL, "count is larger than offsets or lengths");
    return NULL;
  }
  if (n_errno < 1) {
    napi_throw_range_error(env, NULL, "errnoOut must have room for one errno");
    return NULL;
  }
  /* Validate everything first, so a bad entry never leaves a half-written batch behind. */
  for (uint32_t i = 0; i < count; i++) {
    if (!check_range(env, len, offsets[i], lengths[i])) return NULL;
  }
  /* The errno of the write that failed is taken from its return value at once and handed back
   * in errnoOut: by the time JS looks, the N-API calls below may have changed errno. */
  uint32_t written = 0;
  int err = 0;
  while (written < count) {
    ssize_t n = write_once(fd, data + offsets[written], lengths[written]);
    if (n < 0) {
      err = (int)-n;
      break;
    }
    written++;
  }
  errno_out[0] = (uint32_t)err;
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, written, &result));
  return result;
}

/* ---------------------------------------------------------------------------------------- */
/* checksum (RFC 1071)                                                                         */

static napi_value js_checksum(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "checksum(buf, offset, length, initial) needs four arguments");
    return NULL;
  }
  uint8_t *data;
  size_t len;
  uint32_t offset, length, initial;
  if (!arg_bytes(env, argv[0], "buf", &data, &len) || !arg_uint32(env, argv[1], "offset", &offset) ||
      !arg_uint32(env, argv[2], "length", &length) || !arg_uint32(env, argv[3], "initial", &initial) ||
      !check_range(env, len, offset, length)) {
    return NULL;
  }
  uint32_t s = fold64((uint64_t)csum_bytes(data + offset, length) + initial);
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, s, &result));
  return result;
}

/* ---------------------------------------------------------------------------------------- */
/* The batched reader                                                                          */

/*
 * read() one packet per slot until the device is empty or the batch is full.
 *
 * Sparse traffic (a request, its answer, the next request: a sequential client) finds one
 * packet per wake-up, and the read that then finds the queue empty costs a syscall per packet
 * for nothing (~3 us here, as much as the read that got the packet). So after a drain that
 * found at most one packet, the next TUN_SPARSE_WAKEUPS wake-ups read one packet each and do
 * not look further; libuv's epoll is level-triggered, so a packet left in the queue wakes us
 * again at once. Then a full drain looks again: a burst returns to draining within that many
 * wake-ups.
 */
#define TUN_SPARSE_WAKEUPS 8

typedef struct {
  uint32_t single_reads; /* wake-ups left that read one packet without looking further */
  fake_dns_t dns;        /* dns.decide set: plain A queries are answered here (fake_dns.c) */
} tun_drain_state_t;

static bool tun_init_ext(batch_reader_t *r) {
  r->ext = calloc(1, sizeof(tun_drain_state_t));
  return r->ext != NULL;
}

static void tun_free_ext(batch_reader_t *r) {
  free(r->ext);
  r->ext = NULL;
}

static void tun_release_ext_js(batch_reader_t *r) {
  tun_drain_state_t *st = r->ext;
  if (st->dns.decide != NULL) {
    napi_delete_reference(r->env, st->dns.decide);
    st->dns.decide = NULL;
  }
}

static uint32_t tun_drain(batch_reader_t *r, int *err) {
  tun_drain_state_t *st = r->ext;
  uint32_t limit = r->max;
  if (st->single_reads > 0) {
    st->single_reads--;
    limit = 1;
  }
  uint32_t count = 0, answered = 0;
  uint32_t *lengths = r->arrays[1];
  while (count + answered < limit) {
    ssize_t n = read(r->fd, r->data + (size_t)count * r->slot_size, r->slot_size);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) *err = errno;
      break;
    }
    if (n == 0) break;
    /* A packet larger than the slot arrives cut to the slot (its IP length field shows it);
     * never report more than was stored. */
    if ((size_t)n > r->slot_size) n = r->slot_size;
    /* A query answered here takes no slot: the next packet is read into the same one. */
    if (st->dns.decide != NULL && (size_t)n < r->slot_size) {
      bool done = fake_dns_answer(r->env, &st->dns, r->fd, r->data + (size_t)count * r->slot_size, (size_t)n);
      /* decide() is JS: should it have stopped the reader, read nothing more. */
      if (r->stopped) break;
      if (done) {
        answered++;
        continue;
      }
    }
    lengths[count++] = (uint32_t)n;
  }
  if (limit > 1 && count + answered <= 1 && *err == 0) st->single_reads = TUN_SPARSE_WAKEUPS;
  return count;
}

static const napi_type_tag READER_TAG = {0x7475e2f0c1a54f3bULL, 0x9d1e6a2b8c4f7011ULL};

static const batch_reader_spec_t TUN_READER = {
    .start_name = "startReader",
    .stop_name = "stopReader",
    .max_name = "maxPackets",
    .resource = "tunroute:TunReader",
    .tag = &READER_TAG,
    .max_limit = 65536,
    .slot_limit = 0,
    .narrays = 2, /* offsets, lengths */
    .drain = tun_drain,
    .init_ext = tun_init_ext,
    .free_ext = tun_free_ext,
    .release_ext_js = tun_release_ext_js,
};

static napi_value js_start_reader(napi_env env, napi_callback_info info) {
  return batch_reader_start(env, info, &TUN_READER);
}

static napi_value js_stop_reader(napi_env env, napi_callback_info info) {
  return batch_reader_stop(env, info, &TUN_READER);
}

/*
 * fakeDnsAnswer(packet, vnetLen, ttl, decide) -> Buffer | null: the answer the reader would
 * write for `packet` (as read from a device opened with that virtio-net header size), or null
 * when it would hand the packet to JS. For tests of the wire format without a device.
 */
static napi_value js_fake_dns_answer(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *data;
  size_t len;
  uint32_t vnet, ttl;
  napi_valuetype t = napi_undefined;
  if (argc < 4 || !arg_bytes(env, argv[0], "packet", &data, &len) || !arg_uint32(env, argv[1], "vnetLen", &vnet) ||
      !arg_uint32(env, argv[2], "ttl", &ttl)) {
    if (argc < 4) napi_throw_type_error(env, NULL, "fakeDnsAnswer(packet, vnetLen, ttl, decide) needs four arguments");
    return NULL;
  }
  NAPI_CALL(env, napi_typeof(env, argv[3], &t));
  if (t != napi_function || (vnet != 0 && vnet != VNET_HDR_LEN)) {
    napi_throw_type_error(env, NULL, "decide must be a function and vnetLen 0 or 10");
    return NULL;
  }
  fake_dns_t d = {.vnet = vnet, .ttl = ttl};
  NAPI_CALL(env, napi_create_reference(env, argv[3], 1, &d.decide));
  uint8_t out[FAKE_DNS_MAX_ANSWER];
  size_t n = fake_dns_build(env, &d, data, len, out);
  napi_delete_reference(env, d.decide);
  napi_value result;
  if (n == 0) {
    NAPI_CALL(env, napi_get_null(env, &result));
  } else {
    void *copy;
    NAPI_CALL(env, napi_create_buffer_copy(env, n, out, &copy, &result));
  }
  return result;
}

/*
 * setDnsResponder(handle, decide | null, vnetLen, ttl): plain A queries read by this reader are
 * answered here with the address decide(name, queryBytes, answerBytes) gives (0: read it in JS);
 * null turns it off. vnetLen is the virtio-net header's size on this device (0 or 10).
 */
static napi_value js_set_dns_responder(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4] = {NULL, NULL, NULL, NULL};
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_reader_t *r = batch_reader_of(env, argv[0], &TUN_READER);
  if (argc < 4 || r == NULL) {
    napi_throw_type_error(env, NULL, "setDnsResponder(handle, decide, vnetLen, ttl) needs a handle returned by startReader");
    return NULL;
  }
  napi_valuetype t = napi_undefined;
  uint32_t vnet, ttl;
  if (!arg_uint32(env, argv[2], "vnetLen", &vnet) || !arg_uint32(env, argv[3], "ttl", &ttl)) return NULL;
  if (vnet != 0 && vnet != VNET_HDR_LEN) {
    napi_throw_range_error(env, NULL, "vnetLen must be 0 or 10");
    return NULL;
  }
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function && t != napi_null) {
    napi_throw_type_error(env, NULL, "decide must be a function or null");
    return NULL;
  }
  if (r->stopped) return NULL;
  tun_drain_state_t *st = r->ext;
  tun_release_ext_js(r);
  st->dns.vnet = vnet;
  st->dns.ttl = ttl;
  if (t == napi_function) NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &st->dns.decide));
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Module                                                                                      */

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static void instance_finalize(napi_env env, void *data, void *hint) {
  tr_instance_t *inst = data;
  tr_aead_free(inst->aead);
  free(inst);
}

/* The instance's state, made once per environment (a second load in the same one reuses it:
 * replacing instance data would drop the old one without its finalizer). */
static bool instance_ready(napi_env env) {
  tr_instance_t *inst = NULL;
  if (napi_get_instance_data(env, (void **)&inst) == napi_ok && inst != NULL) return true;
  inst = calloc(1, sizeof *inst);
  if (inst == NULL) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return false;
  }
  if (napi_set_instance_data(env, inst, instance_finalize, NULL) != napi_ok) {
    free(inst);
    throw_napi_failure(env, "napi_set_instance_data");
    return false;
  }
  return true;
}

/*
 * trimMemory(): hand the allocator's free pages back to the kernel (malloc_trim). After a burst
 * of flows closes, glibc keeps the freed socket and buffer memory in its arenas (hundreds of MB
 * after 10,000 flows) unless asked; returns whether any memory was released.
 */
static napi_value js_trim_memory(napi_env env, napi_callback_info info) {
  napi_value out;
  napi_get_boolean(env, malloc_trim(0) != 0, &out);
  return out;
}

NAPI_MODULE_INIT() {
  struct {
    const char *name;
    uint32_t value;
  } consts[] = {
      {"TUN_F_CSUM", TUN_F_CSUM},       {"TUN_F_TSO4", TUN_F_TSO4}, {"TUN_F_TSO6", TUN_F_TSO6},
      {"TUN_F_TSO_ECN", TUN_F_TSO_ECN}, {"TUN_F_USO4", TUN_F_USO4}, {"TUN_F_USO6", TUN_F_USO6},
      {"VNET_HDR_LEN", VNET_HDR_LEN},
  };
  napi_property_descriptor props[] = {
      FN("open", js_open),
      FN("setOffload", js_set_offload),
      FN("startReader", js_start_reader),
      FN("stopReader", js_stop_reader),
      FN("setDnsResponder", js_set_dns_responder),
      FN("fakeDnsAnswer", js_fake_dns_answer),
      FN("write", js_write),
      FN("writeMany", js_write_many),
      FN("writeParts", js_write_parts),
      FN("close", js_close),
      FN("checksum", js_checksum),
      FN("trimMemory", js_trim_memory),
  };
  if (!instance_ready(env)) return NULL;
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  if (tr_register_aead(env, exports) != napi_ok || tr_register_udp(env, exports) != napi_ok ||
      tr_register_privileges(env, exports) != napi_ok || tr_register_limits(env, exports) != napi_ok) {
    return NULL;
  }
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
    napi_value v;
    napi_property_descriptor d = {consts[i].name, NULL, NULL, NULL, NULL, NULL, napi_enumerable, NULL};
    if (napi_create_uint32(env, consts[i].value, &v) != napi_ok) return NULL;
    d.value = v;
    if (napi_define_properties(env, exports, 1, &d) != napi_ok) return NULL;
  }
  return exports;
}
