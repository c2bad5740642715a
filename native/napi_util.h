/*
 * Helpers shared by the addon's C files: errors thrown as JS exceptions (errno name in .code),
 * NAPI_CALL, argument checks that throw a TypeError/RangeError and return false, the fd
 * handles JS holds instead of descriptor numbers, and the per-instance state.
 * Static functions in a header: each file uses a subset, hence the unused attribute.
 */
#ifndef TUNROUTE_NAPI_UTIL_H
#define TUNROUTE_NAPI_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#define TR_UNUSED __attribute__((unused))
/* ---------------------------------------------------------------------------------------- */
/* Error helpers                                                                               */

/* Throws Error(message) with .code = errno name, .errno, .syscall. */
TR_UNUSED static void throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  const char *code = uv_err_name(-err); /* libuv errors are -errno on Unix */
  char msg[256];
  if (detail != NULL && detail[0] != '\0') {
    snprintf(msg, sizeof msg, "%s failed for %s: %s (%s)", syscall, detail, code, strerror(err));
  } else {
    snprintf(msg, sizeof msg, "%s failed: %s (%s)", syscall, code, strerror(err));
  }
  napi_value js_code, js_msg, js_err, js_errno, js_syscall;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &js_code) != napi_ok) return;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &js_msg) != napi_ok) return;
  if (napi_create_error(env, js_code, js_msg, &js_err) != napi_ok) return;
  if (napi_create_int32(env, err, &js_errno) == napi_ok) {
    napi_set_named_property(env, js_err, "errno", js_errno);
  }
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &js_syscall) == napi_ok) {
    napi_set_named_property(env, js_err, "syscall", js_syscall);
  }
  napi_throw(env, js_err);
}

/* Turns a failed napi_* status into a JS exception, unless one is already pending. */
TR_UNUSED static void throw_napi_failure(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "tunroute_native: %s failed: %s", what,
           info != NULL && info->error_message != NULL ? info->error_message : "unknown error");
  napi_throw_error(env, NULL, msg);
}

#define NAPI_CALL(env, call)                 \
  do {                                       \
    if ((call) != napi_ok) {                 \
      throw_napi_failure((env), #call);      \
      return NULL;                           \
    }                                        \
  } while (0)

/* ---------------------------------------------------------------------------------------- */
/* Argument helpers: each throws a TypeError/RangeError and returns false on bad input.       */

TR_UNUSED static bool arg_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  return napi_get_value_int32(env, v, out) == napi_ok;
}

TR_UNUSED static bool arg_uint32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  napi_valuetype t;
  double d = -1;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= 4294967295.0)) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a number in 0..2^32-1", name);
    napi_throw_range_error(env, NULL, msg);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

/* A Uint8Array (Buffer is one): pointer to its first byte (byteOffset applied) and length. */
TR_UNUSED static bool arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Buffer or Uint8Array", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  *data = p;
  return true;
}

TR_UNUSED static bool arg_u32_array(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok ||
      type != napi_uint32_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Uint32Array", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  *data = p;
  return true;
}

/* Checks that [offset, offset + length) lies inside a buffer of buf_len bytes. */
TR_UNUSED static bool check_range(napi_env env, size_t buf_len, uint32_t offset, uint32_t length) {
  if ((uint64_t)offset + length > buf_len) {
    napi_throw_range_error(env, NULL, "offset + length is beyond the end of the buffer");
    return false;
  }
  return true;
}

/* ---------------------------------------------------------------------------------------- */
/* fd handles: what JS holds instead of a bare descriptor number                              */
/*
 * open() and udpOpen() hand JS an object tagged FD_TAG and wrapping the descriptor, never the
 * number: every function that takes an fd checks the tag, so a forged or stale integer (or an
 * fd of another part of the process) is refused with a TypeError instead of being written to,
 * read, ioctl'd or closed. Closing through the handle marks it closed (fd -1), so a second
 * close cannot hit a number the kernel has since given to someone else. A handle collected
 * while still open closes its fd: a dropped device or socket does not outlive its owner.
 */

static const napi_type_tag FD_TAG = {0x3f9a6c1e2b7d4e85ULL, 0xc06b1d2e9a4f7315ULL};

typedef struct tr_fd {
  int fd; /* -1 once closed */
} tr_fd_t;

/* Closes the handle's fd (once; later calls do nothing). Returns close()'s errno, 0 when fine. */
TR_UNUSED static int tr_fd_close(tr_fd_t *h) {
  if (h->fd < 0) return 0;
  int fd = h->fd;
  h->fd = -1;
  /* On Linux the fd is released even when close() reports EINTR: never retry. */
  return close(fd) < 0 && errno != EINTR ? errno : 0;
}

TR_UNUSED static void tr_fd_finalize(napi_env env, void *data, void *hint) {
  tr_fd_t *h = data;
  tr_fd_close(h);
  free(h);
}

/*
 * Wraps fd, which the caller just opened, in a new tagged handle. On failure the fd is closed
 * and an exception is pending (NULL). *out (optional) lets the caller close it through the
 * handle if building its result fails later.
 */
TR_UNUSED static napi_value tr_fd_new(napi_env env, int fd, tr_fd_t **out) {
  napi_value handle;
  tr_fd_t *h = malloc(sizeof *h);
  if (h == NULL) {
    close(fd);
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  h->fd = fd;
  if (napi_create_object(env, &handle) != napi_ok || napi_wrap(env, handle, h, tr_fd_finalize, NULL, NULL) != napi_ok) {
    close(fd);
    free(h);
    throw_napi_failure(env, "making an fd handle");
    return NULL;
  }
  /* From here on the finalizer owns h (and closes the fd if nobody did). */
  if (napi_type_tag_object(env, handle, &FD_TAG) != napi_ok) {
    tr_fd_close(h);
    throw_napi_failure(env, "tagging an fd handle");
    return NULL;
  }
  if (out != NULL) *out = h;
  return handle;
}

/* The handle behind v: TypeError for anything open()/udpOpen() did not return. */
TR_UNUSED static bool arg_fd_handle(napi_env env, napi_value v, tr_fd_t **out) {
  napi_valuetype t;
  bool tagged = false;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, v, &FD_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "fd must be a handle returned by open() or udpOpen(), not a number");
    return false;
  }
  *out = data;
  return true;
}

/* The open descriptor behind v: TypeError for a forged handle, Error EBADF for a closed one. */
TR_UNUSED static bool arg_fd(napi_env env, napi_value v, int *fd) {
  tr_fd_t *h;
  if (!arg_fd_handle(env, v, &h)) return false;
  if (h->fd < 0) {
    napi_throw_error(env, "EBADF", "the fd handle is already closed");
    return false;
  }
  *fd = h->fd;
  return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Instance data                                                                               */

/*
 * The addon's state per instance (Node-API instance data: one per environment, i.e. the main
 * thread and each worker), set at module init and freed by its finalizer when the environment
 * goes away, so a terminated worker leaves nothing behind. Parts are made on first use.
 */
typedef struct tr_aead tr_aead_t;

typedef struct tr_instance {
  tr_aead_t *aead; /* aead.c's cipher contexts, NULL until the first seal or open */
} tr_instance_t;

/* Frees what tr_aead_of() made (NULL is fine); aead.c. */
void tr_aead_free(tr_aead_t *a);

TR_UNUSED static bool get_bool_prop(napi_env env, napi_value obj, const char *key) {
  bool has = false, out = false;
  napi_value v;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  if (napi_coerce_to_bool(env, v, &v) != napi_ok) return false;
  napi_get_value_bool(env, v, &out);
  return out;
}


/* Each C file registers its own functions on the exports object. */
napi_status tr_register_aead(napi_env env, napi_value exports);
napi_status tr_register_udp(napi_env env, napi_value exports);
napi_status tr_register_privileges(napi_env env, napi_value exports);
napi_status tr_register_limits(napi_env env, napi_value exports);

#endif
