/*
 * Giving up root while keeping named capabilities, for the packet process (privileges.c) and the
 * watchdog (watchdog.c). Plain C, no Node: the watchdog links no addon.
 *
 * The order matters (capabilities(7)):
 *   1. PR_SET_KEEPCAPS on this thread, so the uid change below keeps its *permitted* set;
 *   2. every capability not kept leaves the bounding set (needs CAP_SETPCAP, so before 3);
 *   3. supplementary groups, gid, then uid (uid last: changing gid needs root). glibc applies
 *      setgroups/setresgid/setresuid to every thread of the process (its setxid broadcast), so no
 *      thread stays root. The other threads do not have KEEPCAPS set: they lose every capability;
 *   4. capset: effective = permitted = inheritable = the kept set, on this thread;
 *   5. the kept set is raised in the *ambient* set, so programs this thread starts (`ip`) get it
 *      although they are neither setuid nor carry file capabilities;
 *   6. KEEPCAPS off again, and no_new_privs: nothing this process execs can gain more.
 * Returns 0, or an errno with *step naming the call that failed. A failure part way leaves the
 * process with less than before, never more; callers treat it as fatal.
 */
#ifndef TUNROUTE_DROP_PRIVS_H
#define TUNROUTE_DROP_PRIVS_H

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#endif
#ifndef PR_CAP_AMBIENT_RAISE
#define PR_CAP_AMBIENT_RAISE 2
#endif

static int tr_drop_privileges(uid_t uid, gid_t gid, uint64_t keep, const char **step) {
  if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) != 0) return *step = "prctl(PR_SET_KEEPCAPS)", errno;
  /* Capabilities the kernel does not know answer EINVAL to PR_CAPBSET_READ: the end of the list. */
  for (int cap = 0; cap < 64 && prctl(PR_CAPBSET_READ, (long)cap, 0L, 0L, 0L) >= 0; cap++) {
    if ((keep >> cap) & 1U) continue;
    if (prctl(PR_CAPBSET_DROP, (long)cap, 0L, 0L, 0L) != 0) return *step = "prctl(PR_CAPBSET_DROP)", errno;
  }
  if (setgroups(0, NULL) != 0) return *step = "setgroups", errno;
  if (setresgid(gid, gid, gid) != 0) return *step = "setresgid", errno;
  if (setresuid(uid, uid, uid) != 0) return *step = "setresuid", errno;
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  for (int i = 0; i < 2; i++) {
    uint32_t word = (uint32_t)(keep >> (32 * i));
    data[i].effective = word;
    data[i].permitted = word;
    data[i].inheritable = word;
  }
  if (syscall(SYS_capset, &hdr, data) != 0) return *step = "capset", errno;
  for (int cap = 0; cap < 64; cap++) {
    if (!((keep >> cap) & 1U)) continue;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (long)cap, 0L, 0L) != 0) return *step = "prctl(PR_CAP_AMBIENT_RAISE)", errno;
  }
  if (prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L) != 0) return *step = "prctl(PR_SET_KEEPCAPS)", errno;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0) return *step = "prctl(PR_SET_NO_NEW_PRIVS)", errno;
  return 0;
}

#endif
