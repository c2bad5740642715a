/* The batched reader's lifecycle, shared by tun.c and udp.c (see batch_reader.h). */
#include <stdlib.h>

#include "batch_reader.h"

static void reader_cleanup_hook(void *arg);

static void reader_free(batch_reader_t *r) {
  if (r->spec->free_ext != NULL) r->spec->free_ext(r);
  free(r);
}

static void reader_maybe_free(batch_reader_t *r) {
  if (r->closed && r->finalized) reader_free(r);
}

static void reader_on_close(uv_handle_t *h) {
  batch_reader_t *r = h->data;
  r->closed = true;
  reader_maybe_free(r);
}

static void reader_close_handle(batch_reader_t *r) {
  if (r->closing) return;
  r->closing = true;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, reader_on_close);
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref != NULL) {
    napi_delete_reference(env, *ref);
    *ref = NULL;
  }
}

static void reader_release_js(batch_reader_t *r) {
  if (r->released) return;
  r->released = true;
  napi_env env = r->env;
  if (r->spec->release_ext_js != NULL && r->ext != NULL) r->spec->release_ext_js(r);
  delete_ref(env, &r->callback_ref);
  delete_ref(env, &r->fd_ref);
  delete_ref(env, &r->buffer_ref);
  for (uint32_t i = 0; i < BATCH_MAX_ARRAYS; i++) delete_ref(env, &r->array_refs[i]);
  delete_ref(env, &r->recv_ref); /* lets the handle object be collected (-> finalizer) */
  if (r->async_ctx != NULL) {
    napi_async_destroy(env, r->async_ctx);
    r->async_ctx = NULL;
  }
  if (r->hooked) {
    r->hooked = false;
    napi_remove_env_cleanup_hook(env, reader_cleanup_hook, r);
  }
}

static void reader_stop(batch_reader_t *r) {
  if (r->stopped) return;
  r->stopped = true;
  reader_close_handle(r);
  if (!r->in_callback) reader_release_js(r);
}

/* The environment is going away (process exit, worker termination): stop polling, no JS. */
static void reader_cleanup_hook(void *arg) {
  batch_reader_t *r = arg;
  r->hooked = false;
  r->stopped = true;
  r->released = true;
  reader_close_handle(r);
}

static void reader_finalize(napi_env env, void *data, void *hint) {
  batch_reader_t *r = data;
  r->finalized = true;
  reader_maybe_free(r);
}

/* Calls the JS callback once: cb.call(handle, count, offsets, lengths, ...). */
static void reader_call_js(batch_reader_t *r, int32_t count) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  uint32_t n = r->spec->narrays;
  napi_value cb, recv, argv[1 + BATCH_MAX_ARRAYS], result;
  bool ok = napi_get_reference_value(env, r->callback_ref, &cb) == napi_ok &&
            napi_get_reference_value(env, r->recv_ref, &recv) == napi_ok &&
            napi_create_int32(env, count, &argv[0]) == napi_ok;
  for (uint32_t i = 0; ok && i < n; i++) ok = napi_get_reference_value(env, r->array_refs[i], &argv[1 + i]) == napi_ok;
  if (ok) {
    r->in_callback = true;
    napi_status st = napi_make_callback(env, r->async_ctx, recv, cb, 1 + n, argv, &result);
    r->in_callback = false;
    if (st == napi_pending_exception) {
      /* A throwing callback becomes an ordinary uncaught exception ('uncaughtException'). */
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
  if (r->stopped) reader_release_js(r); /* stop was called from inside the callback */
}

static void reader_on_poll(uv_poll_t *h, int status, int events) {
  batch_reader_t *r = h->data;
  if (r->stopped) return;
  int err = 0;
  uint32_t count = status < 0 ? 0 : r->spec->drain(r, &err);
  if (status < 0) err = -status;
  if (count > 0) reader_call_js(r, (int32_t)count);
  if (err != 0 && !r->stopped) {
    /* A fatal error (the device or socket went away): tell JS with a negative count, then stop. */
    reader_call_js(r, -err);
    reader_stop(r);
  }
}

napi_value batch_reader_start(napi_env env, napi_callback_info info, const batch_reader_spec_t *spec) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char msg[160];
  if (argc < 5) {
    snprintf(msg, sizeof msg, "%s(fd, buffer, %s, slotSize, callback) needs five arguments", spec->start_name, spec->max_name);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  int fd;
  uint8_t *data;
  size_t len;
  uint32_t max, slot_size;
  napi_valuetype t;
  if (!arg_fd(env, argv[0], &fd) || !arg_bytes(env, argv[1], "buffer", &data, &len) ||
      !arg_uint32(env, argv[2], spec->max_name, &max) || !arg_uint32(env, argv[3], "slotSize", &slot_size)) {
    return NULL;
  }
  NAPI_CALL(env, napi_typeof(env, argv[4], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "callback must be a function");
    return NULL;
  }
  if (max == 0 || max > spec->max_limit || slot_size == 0 || (spec->slot_limit != 0 && slot_size > spec->slot_limit)) {
    snprintf(msg, sizeof msg, "%s must be 1..%u and slotSize 1..%u", spec->max_name, spec->max_limit,
             spec->slot_limit != 0 ? spec->slot_limit : UINT32_MAX);
    napi_throw_range_error(env, NULL, msg);
    return NULL;
  }
  if ((uint64_t)max * slot_size > len) {
    snprintf(msg, sizeof msg, "buffer is smaller than %s * slotSize", spec->max_name);
    napi_throw_range_error(env, NULL, msg);
    return NULL;
  }
  /* Offsets are i * slotSize and must fit a Uint32Array entry. */
  if ((uint64_t)max * slot_size > UINT32_MAX) {
    snprintf(msg, sizeof msg, "%s * slotSize must be below 4 GiB", spec->max_name);
    napi_throw_range_error(env, NULL, msg);
    return NULL;
  }

  batch_reader_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  r->env = env;
  r->spec = spec;
  r->fd = fd;
  r->data = data;
  r->max = max;
  r->slot_size = slot_size;

  napi_value handle, name, arrays[BATCH_MAX_ARRAYS];
  uv_loop_t *loop;
  bool ok = napi_create_object(env, &handle) == napi_ok &&
            napi_create_string_utf8(env, spec->resource, NAPI_AUTO_LENGTH, &name) == napi_ok &&
            napi_get_uv_event_loop(env, &loop) == napi_ok;
  for (uint32_t i = 0; ok && i < spec->narrays; i++) {
    napi_value ab;
    void *p;
    ok = napi_create_arraybuffer(env, (size_t)max * 4, &p, &ab) == napi_ok &&
         napi_create_typedarray(env, napi_uint32_array, max, ab, 0, &arrays[i]) == napi_ok;
    if (ok) {
      memset(p, 0, (size_t)max * 4);
      r->arrays[i] = p;
    }
  }
  if (!ok) {
    free(r);
    throw_napi_failure(env, spec->start_name);
    return NULL;
  }
  for (uint32_t i = 0; i < max; i++) r->arrays[0][i] = i * slot_size;
  if (spec->init_ext != NULL && !spec->init_ext(r)) {
    reader_free(r);
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }

  ok = napi_create_reference(env, argv[0], 1, &r->fd_ref) == napi_ok &&
       napi_create_reference(env, argv[1], 1, &r->buffer_ref) == napi_ok &&
       napi_create_reference(env, argv[4], 1, &r->callback_ref) == napi_ok &&
       napi_create_reference(env, handle, 1, &r->recv_ref) == napi_ok &&
       napi_async_init(env, handle, name, &r->async_ctx) == napi_ok;
  for (uint32_t i = 0; ok && i < spec->narrays; i++) ok = napi_create_reference(env, arrays[i], 1, &r->array_refs[i]) == napi_ok;
  if (!ok) {
    throw_napi_failure(env, spec->start_name);
    reader_release_js(r);
    reader_free(r);
    return NULL;
  }

  int uv_err = uv_poll_init(loop, &r->poll, fd);
  if (uv_err != 0) {
    reader_release_js(r);
    reader_free(r);
    throw_errno(env, -uv_err, "uv_poll_init", NULL);
    return NULL;
  }
  r->poll.data = r;
  uv_err = uv_poll_start(&r->poll, UV_READABLE, reader_on_poll);
  if (uv_err != 0) {
    r->finalized = true; /* no JS handle owns it yet: free on close */
    reader_stop(r);
    throw_errno(env, -uv_err, "uv_poll_start", NULL);
    return NULL;
  }
  if (napi_wrap(env, handle, r, reader_finalize, NULL, NULL) != napi_ok) {
    r->finalized = true;
    reader_stop(r);
    throw_napi_failure(env, spec->start_name);
    return NULL;
  }
  /* From here on the finalizer owns the struct's lifetime together with uv_close. */
  if (napi_type_tag_object(env, handle, spec->tag) != napi_ok) {
    reader_stop(r);
    throw_napi_failure(env, spec->start_name);
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, reader_cleanup_hook, r) == napi_ok) r->hooked = true;
  return handle;
}

batch_reader_t *batch_reader_of(napi_env env, napi_value v, const batch_reader_spec_t *spec) {
  napi_valuetype t = napi_undefined;
  bool ok = false;
  void *data = NULL;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_object) return NULL;
  if (napi_check_object_type_tag(env, v, spec->tag, &ok) != napi_ok || !ok) return NULL;
  if (napi_unwrap(env, v, &data) != napi_ok) return NULL;
  return data;
}

napi_value batch_reader_stop(napi_env env, napi_callback_info info, const batch_reader_spec_t *spec) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_reader_t *r = batch_reader_of(env, argv[0], spec);
  if (r == NULL) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s needs a handle returned by %s", spec->stop_name, spec->start_name);
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  reader_stop(r);
  return NULL;
}
