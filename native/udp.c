/*
 * Batched UDP for the WireGuard tunnel (filled in by the UDP transport work).
 */
#include "napi_util.h"

napi_status tr_register_udp(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
  return napi_ok;
}
