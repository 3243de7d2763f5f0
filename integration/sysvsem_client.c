/* A Robust Jobserver client (codeberg.org/mlugg/robust-jobserver, POSIX
 * method sysvsem) for test_sysvsem.py, making exactly the calls zig's std.job
 * makes: it parses ROBUST_JOBSERVER=sysvsem:ID, takes a unit with
 * semop(ID, {0, -1, SEM_UNDO}) (blocking; EINTR retried), runs its job, and
 * gives the unit back with semop(ID, {0, +1, SEM_UNDO}).
 *
 * usage: sysvsem_client NAME SECONDS [COUNT]
 * Runs COUNT jobs (default 1) one after another, each on a unit of its own.
 * A job records "start NAME.i NS" and "end NAME.i NS" in $JOBLOG around a
 * sleep of SECONDS, as integration/job.sh does (one O_APPEND write each; NAME
 * alone when COUNT is 1), in this process, so that a SIGKILL of the client
 * ends its job too. It also records "pid NAME PID" at its start, "want
 * NAME NS" before each take, "grant NAME NS" once it holds the unit and
 * "gone NAME NS" when the semaphore is gone.
 *
 * Exit status: 0; 2 for a bad command line; 3 when ROBUST_JOBSERVER is unset
 * or malformed; 4 when the semaphore is gone (EIDRM, EINVAL) or refuses this
 * process (EACCES) or fails otherwise. Every failure is one line on stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <time.h>
#include <unistd.h>

static const char* name;

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t); /* date +%s%N, as job.sh stamps */
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* One line, one O_APPEND write, as job.sh does. Best effort: a client run
 * without $JOBLOG (or as a user who cannot write it) still runs. */
static void record(const char* kind, const char* label, long long value) {
  const char* path = getenv("JOBLOG");
  if (!path || !*path) return;
  char line[512];
  int n = snprintf(line, sizeof line, "%s %s %lld\n", kind, label, value);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, line, (size_t)n) != n) perror("sysvsem_client: writing $JOBLOG");
  close(fd);
}

/* ROBUST_JOBSERVER=sysvsem:ID, ID decimal and nothing else. */
static int parse_id(const char* value, int* id) {
  const char* prefix = "sysvsem:";
  if (strncmp(value, prefix, strlen(prefix)) != 0) return 0;
  const char* digits = value + strlen(prefix);
  if (*digits < '0' || *digits > '9') return 0;
  char* end = NULL;
  errno = 0;
  long parsed = strtol(digits, &end, 10);
  if (errno != 0 || *end != '\0' || parsed < 0 || parsed > 0x7fffffffL) return 0;
  *id = (int)parsed;
  return 1;
}

/* The semaphore failed: a clear line, and the status that says why. */
static int fail(const char* call, int id) {
  int why = errno;
  if (why == EIDRM || why == EINVAL) {
    record("gone", name, now_ns());
    fprintf(stderr, "sysvsem_client: %s: the jobserver is gone (semaphore %d: %s)\n", call, id,
            strerror(why));
  } else if (why == EACCES) {
    fprintf(stderr, "sysvsem_client: %s: the jobserver's semaphore %d is not ours to use (%s)\n",
            call, id, strerror(why));
  } else {
    fprintf(stderr, "sysvsem_client: %s on semaphore %d failed: %s\n", call, id, strerror(why));
  }
  return 4;
}

static int adjust(int id, short delta) {
  struct sembuf op = {0, delta, SEM_UNDO};
  int rc;
  do {
    rc = semop(id, &op, 1);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

static void run_job(const char* label, const char* seconds) {
  record("start", label, now_ns());
  double s = atof(seconds);
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
  record("end", label, now_ns());
}

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: sysvsem_client NAME SECONDS [COUNT]\n");
    return 2;
  }
  name = argv[1];
  int count = argc == 4 ? atoi(argv[3]) : 1;
  record("pid", name, (long long)getpid());
  const char* value = getenv("ROBUST_JOBSERVER");
  if (!value) {
    fprintf(stderr, "sysvsem_client: ROBUST_JOBSERVER is not set: no jobserver to take units "
                    "from\n");
    return 3;
  }
  int id = -1;
  if (!parse_id(value, &id)) {
    fprintf(stderr, "sysvsem_client: ROBUST_JOBSERVER=\"%s\" is not sysvsem:<decimal semaphore "
                    "id>\n", value);
    return 3;
  }
  for (int i = 0; i < count; ++i) {
    char label[256];
    if (count == 1) {
      snprintf(label, sizeof label, "%s", name);
    } else {
      snprintf(label, sizeof label, "%s.%d", name, i);
    }
    record("want", label, now_ns());
    if (adjust(id, -1) != 0) return fail("taking a unit (semop -1)", id);
    record("grant", label, now_ns());
    run_job(label, argv[2]);
    if (adjust(id, +1) != 0) return fail("giving the unit back (semop +1)", id);
  }
  return 0;
}
