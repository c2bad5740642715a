/*
 * The batched reader both the TUN device (tun.c, read()) and the tunnel's UDP socket (udp.c,
 * recvmmsg()) use: uv_poll on a non-blocking fd; each wake-up drains up to `max` items into
 * slots of one preallocated JS Buffer (slot i at i * slotSize) and calls JS once:
 *
 *   callback.call(handle, count, offsets, lengths, ...)      count < 0: -errno, then stopped
 *
 * The Uint32Arrays are made once at start and filled in place (offsets[i] = i * slotSize), so
 * the hot path allocates nothing but the count. What differs between the two is the drain
 * function and its extra state (`ext`); the lifetime rules are here, once:
 *
 * - stop is idempotent and may be called from inside the callback (release waits for it);
 * - the struct is freed only when both uv_close has finished and the JS handle is collected;
 * - when the environment goes away (exit, worker end), polling stops without calling JS.
 */
#ifndef TUNROUTE_BATCH_READER_H
#define TUNROUTE_BATCH_READER_H

#include "napi_util.h"

#define BATCH_MAX_ARRAYS 4

typedef struct batch_reader batch_reader_t;

/* Drain up to r->max items into the slots and the arrays; the count, with *err set to a
 * fatal errno (0 when there is none). */
typedef uint32_t (*batch_drain_fn)(batch_reader_t *r, int *err);

typedef struct batch_reader_spec {
  const char *start_name; /* "startReader", for messages */
  const char *stop_name;  /* "stopReader" */
  const char *max_name;   /* "maxPackets" */
  const char *resource;   /* the async resource's name */
  const napi_type_tag *tag;
  uint32_t max_limit;  /* the largest batch */
  uint32_t slot_limit; /* the largest slot; 0: only the 4 GiB bound of the offsets */
  uint32_t narrays;    /* Uint32Arrays after the count: offsets, lengths, then the drain's own */
  batch_drain_fn drain;
  /* Optional per-reader state, made after the arrays exist and freed with the reader. */
  bool (*init_ext)(batch_reader_t *r);
  void (*free_ext)(batch_reader_t *r);
  /* Optional: release the JS references `ext` holds, while the environment is alive (with the
   * reader's own, at stop). */
  void (*release_ext_js)(batch_reader_t *r);
} batch_reader_spec_t;

struct batch_reader {
  uv_poll_t poll;
  napi_env env;
  const batch_reader_spec_t *spec;
  int fd;
  uint8_t *data; /* the JS Buffer's bytes; kept alive by buffer_ref */
  uint32_t max;
  uint32_t slot_size;
  uint32_t *arrays[BATCH_MAX_ARRAYS]; /* the Uint32Arrays' storage; kept alive by array_refs */
  void *ext;
  /* fd_ref holds the fd handle, so its descriptor cannot be closed by the collector while polled. */
  napi_ref fd_ref, buffer_ref, callback_ref, recv_ref, array_refs[BATCH_MAX_ARRAYS];
  napi_async_context async_ctx;
  bool stopped;     /* stop requested: no more callbacks */
  bool released;    /* JS references and the async context released */
  bool in_callback; /* inside napi_make_callback: release is deferred until it returns */
  bool closing;     /* uv_close called */
  bool closed;      /* uv_close callback ran: libuv no longer touches the struct */
  bool finalized;   /* the JS handle object was garbage-collected */
  bool hooked;      /* env cleanup hook registered */
};

/* start(fd, buffer, max, slotSize, callback) -> handle, checked against the spec. */
napi_value batch_reader_start(napi_env env, napi_callback_info info, const batch_reader_spec_t *spec);
/* The reader behind a handle start returned, or NULL (nothing thrown) for anything else. */
batch_reader_t *batch_reader_of(napi_env env, napi_value v, const batch_reader_spec_t *spec);
/* stop(handle): idempotent, safe inside the callback. */
napi_value batch_reader_stop(napi_env env, napi_callback_info info, const batch_reader_spec_t *spec);

#endif
