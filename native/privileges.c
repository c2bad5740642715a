/*
 * lookupUser(name) and dropPrivileges(uid, gid, keepMask) for `tunroute up`, which opens the
 * device and applies its routes as root and then carries packets as an ordinary user with only
 * the capabilities it still needs (see drop_privs.h for the order of the calls and why).
 * lookupUser goes through NSS (getpwnam_r), as `id NAME` does, so users from LDAP etc. count.
 */
#include <pwd.h>

#include "drop_privs.h"
#include "napi_util.h"

/* lookupUser(name) -> { uid, gid } | undefined. */
static napi_value js_lookup_user(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[256];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok || len == 0 || len >= sizeof name - 1) {
    napi_throw_type_error(env, NULL, "lookupUser(name): name must be a non-empty string under 255 bytes");
    return NULL;
  }
  struct passwd pw, *found = NULL;
  char buf[4096];
  int err = getpwnam_r(name, &pw, buf, sizeof buf, &found);
  napi_value out;
  if (err != 0 && err != ENOENT && err != ESRCH) {
    throw_errno(env, err, "getpwnam_r", NULL);
    return NULL;
  }
  if (found == NULL) {
    NAPI_CALL(env, napi_get_undefined(env, &out));
    return out;
  }
  napi_value v;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)pw.pw_uid, &v));
  NAPI_CALL(env, napi_set_named_property(env, out, "uid", v));
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)pw.pw_gid, &v));
  NAPI_CALL(env, napi_set_named_property(env, out, "gid", v));
  return out;
}

/* dropPrivileges(uid, gid, keepLow, keepHigh): keep = keepHigh << 32 | keepLow. Throws on failure. */
static napi_value js_drop_privileges(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t uid, gid, lo, hi;
  if (argc < 4 || napi_get_value_uint32(env, argv[0], &uid) != napi_ok || napi_get_value_uint32(env, argv[1], &gid) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &lo) != napi_ok || napi_get_value_uint32(env, argv[3], &hi) != napi_ok) {
    napi_throw_type_error(env, NULL, "dropPrivileges(uid, gid, keepLow, keepHigh): four unsigned integers");
    return NULL;
  }
  if (uid == 0) {
    napi_throw_range_error(env, NULL, "dropPrivileges: uid 0 is root; name an unprivileged user");
    return NULL;
  }
  const char *step = "";
  int err = tr_drop_privileges((uid_t)uid, (gid_t)gid, ((uint64_t)hi << 32) | lo, &step);
  if (err != 0) {
    throw_errno(env, err, step, NULL);
    return NULL;
  }
  napi_value out;
  NAPI_CALL(env, napi_get_undefined(env, &out));
  return out;
}

napi_status tr_register_privileges(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lookupUser", NULL, js_lookup_user, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dropPrivileges", NULL, js_drop_privileges, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
