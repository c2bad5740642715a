/*
 * Helpers shared by the addon's C files: errors thrown as JS exceptions (errno name in .code),
 * NAPI_CALL, and argument checks that throw a TypeError/RangeError and return false.
 * Static functions in a header: each file uses a subset, hence the unused attribute.
 */
#ifndef TUNROUTE_NAPI_UTIL_H
#define TUNROUTE_NAPI_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

TR_UNUSED static bool arg_fd(napi_env env, napi_value v, int *fd) {
  int32_t x;
  if (!arg_int32(env, v, "fd", &x)) return false;
  if (x < 0) {
    napi_throw_range_error(env, NULL, "fd must be >= 0");
    return false;
  }
  *fd = x;
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

#endif
