/*
 * WireGuard transport messages (whitepaper §5.4.6) sealed and opened with ChaCha20-Poly1305
 * from OpenSSL's libcrypto: the same library node:crypto runs on, without its per-message
 * cost. node:crypto builds a Cipheriv object (and a KeyObject lookup, and a Buffer per
 * update/final/getAuthTag) for every packet: ~6 µs for a 1,420-byte message, of which the
 * cipher itself is under 1 µs. Here one cipher context per direction is made once and only
 * re-keyed per message.
 *
 *   wgSeal(key, receiverIndex, counter, packet, padTo, out, outOff) -> message length
 *       writes type 4 | receiver index | counter (LE) | AEAD(key, counter, packet || zeros) | tag
 *       at out[outOff ..]; padTo >= packet length (the zeros are the whitepaper's padding)
 *   wgOpen(key, msg, out, outOff) -> plaintext length, or -1 when it does not authenticate
 *       msg is a whole transport message (its counter is read from it); the padded plaintext
 *       goes to out[outOff ..], which may be msg itself at offset 16 (in place); any other
 *       overlap of the two is a RangeError
 *   wgWipe()  re-keys both contexts with zeros, so no session key outlives its keypair here
 *
 * The contexts belong to the addon instance (its instance data, see napi_util.h): each JS
 * thread (the main one, a worker) has its own, no lock, and they are freed with the instance
 * when its environment goes away. Bad arguments throw; a message that fails authentication is
 * an ordinary -1 (counted by the caller).
 */
#include <openssl/evp.h>

#include "napi_util.h"

#define WG_KEY_LEN 32
#define WG_TAG_LEN 16
#define WG_HEADER_LEN 16
#define WG_MESSAGE_TRANSPORT 4

struct tr_aead {
  EVP_CIPHER *chacha; /* fetched once: an implicit fetch per init costs more than the cipher */
  EVP_CIPHER_CTX *seal_ctx;
  EVP_CIPHER_CTX *open_ctx;
};

void tr_aead_free(tr_aead_t *a) {
  if (a == NULL) return;
  /* EVP_CIPHER_CTX_free cleanses the key schedule before freeing it. */
  EVP_CIPHER_CTX_free(a->seal_ctx);
  EVP_CIPHER_CTX_free(a->open_ctx);
  EVP_CIPHER_free(a->chacha);
  free(a);
}

/* This instance's contexts, made on first use; NULL with an exception pending when they cannot be. */
static tr_aead_t *aead_of(napi_env env) {
  tr_instance_t *inst = NULL;
  if (napi_get_instance_data(env, (void **)&inst) != napi_ok || inst == NULL) {
    napi_throw_error(env, NULL, "tunroute_native: the addon instance has no state (module init failed)");
    return NULL;
  }
  if (inst->aead != NULL) return inst->aead;
  tr_aead_t *a = calloc(1, sizeof *a);
  if (a == NULL) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  a->chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  a->seal_ctx = EVP_CIPHER_CTX_new();
  a->open_ctx = EVP_CIPHER_CTX_new();
  if (a->chacha == NULL || a->seal_ctx == NULL || a->open_ctx == NULL ||
      EVP_EncryptInit_ex(a->seal_ctx, a->chacha, NULL, NULL, NULL) != 1 ||
      EVP_DecryptInit_ex(a->open_ctx, a->chacha, NULL, NULL, NULL) != 1) {
    tr_aead_free(a); /* whatever of the three was made */
    napi_throw_error(env, "ENOSYS", "libcrypto has no ChaCha20-Poly1305");
    return NULL;
  }
  inst->aead = a;
  return a;
}

/* The 96-bit nonce: 32 zero bits, then the 64-bit counter little-endian. */
static void nonce_of(uint64_t counter, uint8_t nonce[12]) {
  memset(nonce, 0, 4);
  for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(counter >> (8 * i));
}

static bool arg_key(napi_env env, napi_value v, uint8_t **key) {
  size_t len = 0;
  if (!arg_bytes(env, v, "key", key, &len)) return false;
  if (len != WG_KEY_LEN) {
    napi_throw_range_error(env, NULL, "key must be 32 bytes");
    return false;
  }
  return true;
}

/* wgSeal(key, receiverIndex, counter: bigint, packet, padTo, out, outOff) -> bytes written */
static napi_value js_wg_seal(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) {
    napi_throw_type_error(env, NULL, "wgSeal(key, receiverIndex, counter, packet, padTo, out, outOff)");
    return NULL;
  }
  uint8_t *key, *packet, *out;
  size_t packet_len, out_len;
  uint32_t receiver, pad_to, out_off;
  uint64_t counter;
  bool lossless = false;
  if (!arg_key(env, argv[0], &key) || !arg_uint32(env, argv[1], "receiverIndex", &receiver)) return NULL;
  if (napi_get_value_bigint_uint64(env, argv[2], &counter, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, NULL, "counter must be a bigint in 0..2^64-1");
    return NULL;
  }
  if (!arg_bytes(env, argv[3], "packet", &packet, &packet_len) || !arg_uint32(env, argv[4], "padTo", &pad_to) ||
      !arg_bytes(env, argv[5], "out", &out, &out_len) || !arg_uint32(env, argv[6], "outOff", &out_off)) {
    return NULL;
  }
  size_t n = pad_to > packet_len ? pad_to : packet_len;
  if ((uint64_t)out_off + WG_HEADER_LEN + n + WG_TAG_LEN > out_len) {
    napi_throw_range_error(env, NULL, "out is too small for the sealed message");
    return NULL;
  }
  tr_aead_t *a = aead_of(env);
  if (a == NULL) return NULL;

  uint8_t *msg = out + out_off;
  uint8_t *body = msg + WG_HEADER_LEN;
  /* packet and out may overlap only if packet already sits at body (sealing in place). */
  if (packet != body) memmove(body, packet, packet_len);
  memset(body + packet_len, 0, n - packet_len);
  msg[0] = WG_MESSAGE_TRANSPORT;
  msg[1] = msg[2] = msg[3] = 0;
  for (int i = 0; i < 4; i++) msg[4 + i] = (uint8_t)(receiver >> (8 * i));
  for (int i = 0; i < 8; i++) msg[8 + i] = (uint8_t)(counter >> (8 * i));

  uint8_t nonce[12];
  nonce_of(counter, nonce);
  int len = 0, fin = 0;
  if (EVP_EncryptInit_ex(a->seal_ctx, NULL, NULL, key, nonce) != 1 ||
      (n > 0 && EVP_EncryptUpdate(a->seal_ctx, body, &len, body, (int)n) != 1) ||
      EVP_EncryptFinal_ex(a->seal_ctx, body + len, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(a->seal_ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_LEN, body + n) != 1) {
    napi_throw_error(env, "EIO", "ChaCha20-Poly1305 seal failed in libcrypto");
    return NULL;
  }
  napi_value result;
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)(WG_HEADER_LEN + n + WG_TAG_LEN), &result));
  return result;
}

/* wgOpen(key, msg, out, outOff) -> plaintext length, or -1 */
static napi_value js_wg_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "wgOpen(key, msg, out, outOff)");
    return NULL;
  }
  uint8_t *key, *msg, *out;
  size_t msg_len, out_len;
  uint32_t out_off;
  if (!arg_key(env, argv[0], &key) || !arg_bytes(env, argv[1], "msg", &msg, &msg_len) ||
      !arg_bytes(env, argv[2], "out", &out, &out_len) || !arg_uint32(env, argv[3], "outOff", &out_off)) {
    return NULL;
  }
  if (msg_len < WG_HEADER_LEN + WG_TAG_LEN) {
    napi_throw_range_error(env, NULL, "msg is shorter than a transport message");
    return NULL;
  }
  size_t n = msg_len - WG_HEADER_LEN - WG_TAG_LEN;
  if ((uint64_t)out_off + n > out_len) {
    napi_throw_range_error(env, NULL, "out is too small for the plaintext");
    return NULL;
  }
  uint8_t *plain = out + out_off;
  /* In place (plain exactly where the ciphertext is) works; any other overlap would have the
   * cipher read bytes it has already overwritten, so it is refused. */
  uintptr_t m0 = (uintptr_t)msg, m1 = m0 + msg_len, p0 = (uintptr_t)plain, p1 = p0 + n;
  if (n > 0 && p0 < m1 && m0 < p1 && p0 != m0 + WG_HEADER_LEN) {
    napi_throw_range_error(env, NULL, "out overlaps msg other than exactly in place (out at msg + 16)");
    return NULL;
  }
  tr_aead_t *a = aead_of(env);
  if (a == NULL) return NULL;

  uint64_t counter = 0;
  for (int i = 7; i >= 0; i--) counter = (counter << 8) | msg[8 + i];
  uint8_t nonce[12], tag[WG_TAG_LEN];
  nonce_of(counter, nonce);
  /* The tag is copied first, so an `out` that overlaps the message can never clobber it. */
  memcpy(tag, msg + WG_HEADER_LEN + n, WG_TAG_LEN);
  int len = 0, fin = 0;
  int32_t r = -1;
  if (EVP_DecryptInit_ex(a->open_ctx, NULL, NULL, key, nonce) == 1 &&
      (n == 0 || EVP_DecryptUpdate(a->open_ctx, plain, &len, msg + WG_HEADER_LEN, (int)n) == 1) &&
      EVP_CIPHER_CTX_ctrl(a->open_ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_LEN, tag) == 1 &&
      EVP_DecryptFinal_ex(a->open_ctx, plain + len, &fin) == 1) {
    r = (int32_t)n;
  } else if (n > 0) {
    memset(plain, 0, n); /* never hand out unauthenticated plaintext */
  }
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, r, &result));
  return result;
}

/* wgWipe(): both contexts forget the last session key. */
static napi_value js_wg_wipe(napi_env env, napi_callback_info info) {
  static const uint8_t zeros[WG_KEY_LEN + 12];
  tr_instance_t *inst = NULL;
  if (napi_get_instance_data(env, (void **)&inst) == napi_ok && inst != NULL && inst->aead != NULL) {
    EVP_EncryptInit_ex(inst->aead->seal_ctx, NULL, NULL, zeros, zeros + WG_KEY_LEN);
    EVP_DecryptInit_ex(inst->aead->open_ctx, NULL, NULL, zeros, zeros + WG_KEY_LEN);
  }
  return NULL;
}

napi_status tr_register_aead(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"wgSeal", NULL, js_wg_seal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgOpen", NULL, js_wg_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgWipe", NULL, js_wg_wipe, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
