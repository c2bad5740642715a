/*
 * Process limits and socket owners:
 *
 *   getNofile() -> [soft, hard]   RLIMIT_NOFILE (Infinity for RLIM_INFINITY)
 *   setNofile(soft)               sets the soft limit (the hard one stays); throws errno
 *   socketOwner(srcIp, srcPort, dstIp, dstPort) -> uid, or -1
 *
 * socketOwner asks the kernel's sock_diag (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, an exact
 * lookup by the 4-tuple, not a dump) which uid owns the local TCP socket bound to
 * srcIp:srcPort and connected to dstIp:dstPort: for a SYN that tun0 hands us, the app's socket
 * in SYN-SENT, in this process's network namespace. Addresses are IPv4 as host-order u32,
 * ports host order. One netlink socket, opened on first use and kept; the reply is read with
 * MSG_DONTWAIT (the kernel answers inside sendmsg), so the call never blocks the event loop.
 */
#include "napi_util.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

static napi_value limit_value(napi_env env, rlim_t v) {
  napi_value out = NULL;
  napi_create_double(env, v == RLIM_INFINITY ? INFINITY : (double)v, &out);
  return out;
}

static napi_value js_get_nofile(napi_env env, napi_callback_info info) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    throw_errno(env, errno, "getrlimit", "RLIMIT_NOFILE");
    return NULL;
  }
  napi_value arr;
  NAPI_CALL(env, napi_create_array_with_length(env, 2, &arr));
  NAPI_CALL(env, napi_set_element(env, arr, 0, limit_value(env, rl.rlim_cur)));
  NAPI_CALL(env, napi_set_element(env, arr, 1, limit_value(env, rl.rlim_max)));
  return arr;
}

static napi_value js_set_nofile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t soft;
  if (argc < 1 || !arg_uint32(env, argv[0], "soft", &soft)) return NULL;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    throw_errno(env, errno, "getrlimit", "RLIMIT_NOFILE");
    return NULL;
  }
  rl.rlim_cur = soft;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    throw_errno(env, errno, "setrlimit", "RLIMIT_NOFILE");
    return NULL;
  }
  return NULL;
}

/* The sock_diag socket (process-wide; the addon is used from the main thread only). */
static int diag_fd = -1;
static uint32_t diag_seq = 0;

static int diag_socket(void) {
  if (diag_fd < 0) diag_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  return diag_fd;
}

/* The uid owning the TCP socket src -> dst (network order), or -1 (none, or an error). */
static int64_t socket_owner(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport) {
  int fd = diag_socket();
  if (fd < 0) return -1;
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;
  msg.nlh.nlmsg_seq = ++diag_seq;
  msg.req.sdiag_family = AF_INET;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0U;
  msg.req.id.idiag_sport = sport;
  msg.req.id.idiag_dport = dport;
  msg.req.id.idiag_src[0] = src;
  msg.req.id.idiag_dst[0] = dst;
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
  if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&nl, sizeof nl) < 0) return -1;
  /* Replies to earlier, abandoned requests may still be queued: skip them by sequence. */
  for (int tries = 0; tries < 8; tries++) {
    uint32_t buf[2048];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) return -1;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != diag_seq) continue;
      if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
        const struct inet_diag_msg *d = NLMSG_DATA(h);
        return d->idiag_uid;
      }
      return -1; /* NLMSG_ERROR (ENOENT: no such socket) or something unexpected */
    }
  }
  return -1;
}

static napi_value js_socket_owner(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t src, sport, dst, dport;
  if (argc < 4 || !arg_uint32(env, argv[0], "srcIp", &src) || !arg_uint32(env, argv[1], "srcPort", &sport) ||
      !arg_uint32(env, argv[2], "dstIp", &dst) || !arg_uint32(env, argv[3], "dstPort", &dport)) {
    return NULL;
  }
  napi_value out;
  NAPI_CALL(env, napi_create_int64(env, socket_owner(htonl(src), htons((uint16_t)sport), htonl(dst), htons((uint16_t)dport)), &out));
  return out;
}

napi_status tr_register_limits(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"getNofile", NULL, js_get_nofile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setNofile", NULL, js_set_nofile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketOwner", NULL, js_socket_owner, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
