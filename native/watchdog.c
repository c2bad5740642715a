/*
 * The watchdog's waiting half: a tiny process `tunroute up` starts beside itself instead of a
 * second Node.js (which idles at ~44 MB RSS for the daemon's whole life; this one at ~1 MB).
 *
 *   tunroute_watchdog [-u UID:GID] JOURNAL_PATH DAEMON_PID PROGRAM [ARG...]
 *
 * With -u (tunroute drops root after start, see src/privileges.ts), it first becomes that user
 * keeping only CAP_NET_ADMIN, the one capability the undoing needs (routes and rules), also for
 * PROGRAM and the `ip` it runs (ambient): the watchdog never holds more than the daemon it
 * watches. The journal lives in a directory that user owns.
 *
 * It holds the read end of a pipe from tunroute on stdin and waits, in poll(), for either
 *   - EOF on that pipe: tunroute exited, whatever the way (SIGTERM, crash, kill -9, OOM killer);
 *   - the daemon's pidfd to become readable: it exited even though someone else holds the pipe
 *     (without pidfd_open, kernels before 5.3, a kill(pid, 0) every 2 s stands in for it).
 * Then, if JOURNAL_PATH is gone, tunroute cleaned up after itself: exit 0, quietly. Otherwise
 * it execs PROGRAM with ARG... (`node watchdog-main.js --now ...`), which decides what to undo:
 * the journal's logic (kill switch, whose journal it is, the teardown) is written once, in
 * TypeScript (src/routes/watchdog-main.ts). This program only waits.
 *
 * Exit status: 0 nothing to do; 1 PROGRAM could not be run; 2 bad arguments.
 * It allocates nothing, ignores SIGINT and SIGHUP (a Ctrl-C or a closed terminal meant for
 * tunroute must not stop it first; ignored signals stay ignored across exec), runs in a session
 * of its own, and keeps only stdin, stdout and stderr open (stderr is tunroute's: the Node
 * watchdog logs there).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "drop_privs.h"

/* How often the fallback without a pidfd checks that the daemon still exists. */
#define PID_CHECK_MS 2000
/*
 * After EOF, how long to wait for the daemon to finish exiting. The kernel closes a dying
 * process's files (our pipe) a moment before the process becomes a zombie; the Node watchdog
 * must not find it "still running" and leave its journal alone.
 */
#define EXIT_WAIT_MS 5000

static void usage(void) {
  static const char msg[] =
      "usage: tunroute_watchdog [-u UID:GID] JOURNAL_PATH DAEMON_PID PROGRAM [ARG...]\n"
      "  waits on stdin (a pipe from tunroute) and on DAEMON_PID; when either ends and\n"
      "  JOURNAL_PATH still exists, execs PROGRAM ARG... (tunroute's Node watchdog with --now)\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
}

static int parse_pid(const char *s, pid_t *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > INT_MAX) return -1;
  *out = (pid_t)v;
  return 0;
}

/* Close every descriptor above stderr: whatever tunroute's spawn let through is not ours to hold. */
static void close_other_fds(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 1 << 20) max = 1 << 20;
  for (int fd = 3; fd < max; fd++) close(fd);
}

static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0U);
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait (bounded) until the pidfd says the process has exited. */
static void wait_exited(int pidfd) {
  long deadline = now_ms() + EXIT_WAIT_MS;
  for (;;) {
    long left = deadline - now_ms();
    if (left <= 0) return;
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    return; /* exited, timed out, or poll failed: the Node watchdog checks liveness itself */
  }
}

static int journal_exists(const char *path) {
  struct stat st;
  /* Anything but "no such file" (e.g. EACCES) counts as present: let the Node side decide. */
  return lstat(path, &st) == 0 || errno != ENOENT;
}

/* "UID:GID", both decimal, uid not 0. */
static int parse_ids(const char *s, uid_t *uid, gid_t *gid) {
  char *end;
  errno = 0;
  unsigned long u = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != ':' || u == 0 || u > 0xfffffffeUL) return -1;
  const char *g = end + 1;
  unsigned long v = strtoul(g, &end, 10);
  if (errno != 0 || end == g || *end != '\0' || v > 0xfffffffeUL) return -1;
  *uid = (uid_t)u;
  *gid = (gid_t)v;
  return 0;
}

int main(int argc, char **argv) {
  pid_t pid;
  uid_t uid = 0;
  gid_t gid = 0;
  int drop = 0;
  if (argc >= 3 && strcmp(argv[1], "-u") == 0) {
    if (parse_ids(argv[2], &uid, &gid) != 0) {
      usage();
      return 2;
    }
    drop = 1;
    argc -= 2;
    argv += 2;
  }
  if (argc < 4 || argv[1][0] == '\0' || parse_pid(argv[2], &pid) != 0 || argv[3][0] == '\0') {
    usage();
    return 2;
  }
  const char *journal = argv[1];

  close_other_fds();
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  (void)setsid(); /* already a session leader when spawned detached (EPERM): fine */
  if (drop) {
    const char *step = "";
    int err = tr_drop_privileges(uid, gid, 1ULL << CAP_NET_ADMIN, &step);
    if (err != 0) {
      /* Never watch on with more than asked for; tunroute's `down` still restores. */
      dprintf(STDERR_FILENO, "tunroute watchdog: cannot give up root (%s: %s): run `tunroute down` after tunroute exits\n", step, strerror(err));
      return 1;
    }
  }

  int pidfd = open_pidfd(pid);
  int exited = 0; /* known to have exited (not only that the pipe closed) */
  if (pidfd < 0 && errno == ESRCH) exited = 1;

  while (!exited) {
    struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
    int r = poll(fds, pidfd >= 0 ? 2 : 1, pidfd >= 0 ? -1 : PID_CHECK_MS);
    if (r < 0) {
      if (errno == EINTR) continue;
      break; /* cannot wait any more: act as the old watchdog did on a pipe error */
    }
    if (r == 0) { /* fallback tick */
      if (kill(pid, 0) != 0 && errno == ESRCH) exited = 1;
      continue;
    }
    if (pidfd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0) {
      exited = 1;
      continue;
    }
    if (fds[0].revents != 0) {
      char buf[256];
      ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n > 0) continue; /* tunroute never writes; whatever comes is discarded */
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      break; /* EOF (or the pipe failed): tunroute is gone or going */
    }
  }

  if (!journal_exists(journal)) return 0; /* tunroute cleaned up after itself */
  if (!exited && pidfd >= 0) {
    wait_exited(pidfd);
    if (!journal_exists(journal)) return 0;
  }
  if (pidfd >= 0) close(pidfd);

  execv(argv[3], &argv[3]);
  int e = errno;
  dprintf(STDERR_FILENO, "tunroute watchdog: cannot run %s (%s): run `tunroute down` to restore the network\n", argv[3], strerror(e));
  return 1;
}
