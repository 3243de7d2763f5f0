// The Robust Jobserver's semaphore (docs/PROTOCOL.md, "The Robust
// Jobserver") measured from a client's side: take a unit with
// semop(-1, SEM_UNDO), blocking, give it back with semop(+1, SEM_UNDO).
// Under `jobbridge -jN` the set is jobbridge's (ROBUST_JOBSERVER); with
// -s SLOTS it is a bare set made here (semget(IPC_PRIVATE), SETVAL SLOTS)
// with no server at all, the floor the kernel sets, removed at the end.
//
//   sem-throughput [-c K] [-t S]  K client processes, each cycling -1, +1
//                                 for S seconds (cycles_per_s: grants/s)
//   sem-handoff [-n R] [-w CPU]   a holder's +1 to the grant of a waiter
//                                 blocked in -1, on a budget of one slot
//   sem-idle-grant [-n R]         a client blocking on an idle server to its
//                                 grant: jobbridge must see the waiter (its
//                                 GETNCNT poll) before it gives a unit. A
//                                 bare set has no such step, so no -s here.
//
// Every set it uses is named in $BENCH_SEM_LOG (its id, a line each) before
// it is used, so that scripts/bench.sh can check that none was left behind.
#define _GNU_SOURCE
#include "sysvsem.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <time.h>
#include <unistd.h>

#include "handoff.h"

enum { kExitNoServer = 3, kGiveUpAfter = 3 };

union semun {  // semctl's fourth argument, which the caller defines
  int val;
  struct semid_ds* buf;
  unsigned short* array;
};

// One semop of `delta` on the set's only semaphore, with SEM_UNDO as the
// spec says, retried on EINTR. Returns 0, or -1 after saying why.
static int sem_step(int id, int delta) {
  struct sembuf op = {0, (short)delta, SEM_UNDO};
  int rc;
  do rc = semop(id, &op, 1);
  while (rc != 0 && errno == EINTR);
  if (rc != 0)
    fprintf(stderr, "bench_client: semop %+d on set %d: %s\n", delta, id, strerror(errno));
  return rc;
}

static int sem_cycle(const void* id) {
  int set = *(const int*)id;
  return sem_step(set, -1) == 0 && sem_step(set, +1) == 0 ? 0 : -1;
}

static void sleep_ns(int64_t ns) {
  struct timespec t = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

static void log_set(int id) {
  const char* path = getenv("BENCH_SEM_LOG");
  if (path == NULL || path[0] == '\0') return;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || dprintf(fd, "%d\n", id) < 0) perror("bench_client: BENCH_SEM_LOG");
  if (fd >= 0) close(fd);
}

// The set to use: a bare one with `slots` units, or the server's. Returns
// its id, or -1 with *status set (3: no server) after saying why.
static int open_set(int slots, int* status) {
  *status = 1;
  if (slots > 0) {
    int id = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    if (id < 0) return perror("bench_client: semget"), -1;
    log_set(id);
    union semun value = {.val = slots};
    if (semctl(id, 0, SETVAL, value) == 0) return id;
    perror("bench_client: semctl SETVAL");
    semctl(id, 0, IPC_RMID);
    return -1;
  }
  const char* name = getenv("ROBUST_JOBSERVER");
  if (name == NULL || name[0] == '\0') {
    fprintf(stderr, "bench_client: ROBUST_JOBSERVER is not set\n");
    *status = kExitNoServer;
    return -1;
  }
  int id, end = 0;
  if (sscanf(name, "sysvsem:%d%n", &id, &end) != 1 || name[end] != '\0' || id < 0) {
    fprintf(stderr, "bench_client: ROBUST_JOBSERVER=%s is not sysvsem:ID\n", name);
    return -1;
  }
  log_set(id);
  return id;
}

struct sem_handoff {
  int id, waiter_cpu;
  sem_t go, done;  // holder -> waiter, waiter -> holder
  atomic_int granted;
  int failed, stop;
  int64_t woke_ns;
};

static void sem_wait_intr(sem_t* sem) {
  while (sem_wait(sem) != 0 && errno == EINTR) {
  }
}

static void* sem_waiter(void* arg) {
  struct sem_handoff* h = arg;
  if (h->waiter_cpu >= 0) {  // so that the wake-up crosses CPUs
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(h->waiter_cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("bench_client: sched_setaffinity");
  }
  for (;;) {
    sem_wait_intr(&h->go);
    if (h->stop) return NULL;
    h->failed = sem_step(h->id, -1) != 0;
    h->woke_ns = now_ns();
    atomic_store(&h->granted, 1);
    sem_post(&h->done);
  }
}

// Waits (2 s at most) until the waiter is blocked in semop: GETNCNT counts
// exactly those, and nobody else here blocks. Returns 1 when it is, 0 when
// not seen, -1 when it got a unit before the release (more than one slot).
static int wait_until_blocked(struct sem_handoff* h) {
  int64_t limit = now_ns() + 2000000000LL;
  while (now_ns() < limit) {
    if (atomic_load(&h->granted)) return -1;
    if (semctl(h->id, 0, GETNCNT) >= 1) return 1;
    sched_yield();
  }
  return 0;
}

static int compare(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

// Two threads of this process hand the one slot to each other: the holder
// (this thread) gives it back while the waiter is blocked, the waiter's
// grant is the next round's held slot. SEM_UNDO adjustments are per process,
// so the waiter's -1 and the holder's +1 balance.
static int sem_handoff(int id, const struct sem_options* o) {
  struct sem_handoff h = {.id = id, .waiter_cpu = o->waiter_cpu};
  int rounds = o->rounds, unverified = 0, status = 0;
  if (sem_step(id, -1) != 0) return 1;  // the one slot
  int64_t* lat = calloc(rounds, sizeof *lat);
  sem_init(&h.go, 0, 0);
  sem_init(&h.done, 0, 0);
  pthread_t waiter;
  pthread_create(&waiter, NULL, sem_waiter, &h);
  for (int i = 0; i < rounds && status == 0; i++) {
    atomic_store(&h.granted, 0);
    sem_post(&h.go);
    int blocked = unverified >= kGiveUpAfter ? 0 : wait_until_blocked(&h);
    unverified += blocked == 0;
    int64_t released = now_ns();
    if (blocked >= 0 && sem_step(id, +1) != 0) status = 1;
    sem_wait_intr(&h.done);
    if (h.failed) {
      status = 1;  // said why
    } else if (blocked < 0) {
      fprintf(stderr, "bench_client: the waiter got a unit nobody gave back: more than one slot\n");
      status = 1;
    }
    lat[i] = h.woke_ns - released;
  }
  h.stop = 1;
  sem_post(&h.go);
  pthread_join(waiter, NULL);
  sem_step(id, +1);
  if (status == 0) {
    qsort(lat, rounds, sizeof *lat, compare);
    printf("rounds=%d p50_us=%.1f p99_us=%.1f unverified=%d\n", rounds, lat[rounds / 2] / 1e3,
           lat[rounds * 99 / 100] / 1e3, unverified);
  }
  free(lat);
  return status;
}

// Waits (2 s at most) until the semaphore holds no unit: jobbridge takes a
// unit nobody takes back into its budget (kStockIdleMs). Returns 0 or -1.
static int wait_until_empty(int id) {
  for (int i = 0; i < 2000; i++) {
    int value = semctl(id, 0, GETVAL);
    if (value < 0) return perror("bench_client: semctl GETVAL"), -1;
    if (value == 0) return 0;
    sleep_ns(1000000);
  }
  fprintf(stderr, "bench_client: the unit given back was not taken back within 2 s\n");
  return -1;
}

// Each round: the semaphore empty, jobbridge idle for 32-48 ms (its poll has
// backed off to its slowest interval by then, 31 ms after the last change,
// and the random part spreads the moment of blocking over that interval),
// then one client blocks; timed from the semop to its return.
static int sem_idle_grant(int id, int rounds) {
  int64_t* lat = calloc(rounds, sizeof *lat);
  int status = 0;
  srand(getpid());
  for (int i = 0; i < rounds && status == 0; i++) {
    if (wait_until_empty(id) != 0) {
      status = 1;
      break;
    }
    sleep_ns(32000000 + (int64_t)(rand() % 16000) * 1000);
    int64_t asked = now_ns();
    if (sem_step(id, -1) != 0) {
      status = 1;
      break;
    }
    lat[i] = now_ns() - asked;
    if (sem_step(id, +1) != 0) status = 1;
  }
  if (status == 0) {
    qsort(lat, rounds, sizeof *lat, compare);
    printf("rounds=%d p50_ms=%.2f max_ms=%.2f\n", rounds, lat[rounds / 2] / 1e6,
           lat[rounds - 1] / 1e6);
  }
  free(lat);
  return status;
}

int run_sem(const char* mode, const struct sem_options* o) {
  int throughput = !strcmp(mode, "sem-throughput"), handoff = !strcmp(mode, "sem-handoff");
  int idle = !strcmp(mode, "sem-idle-grant");
  if (!throughput && !handoff && !idle) return 2;
  if (idle && o->slots > 0) {
    fprintf(stderr, "bench_client: sem-idle-grant needs a server (a bare set has none): no -s\n");
    return 2;
  }
  int status;
  int id = open_set(o->slots, &status);
  if (id < 0) return status;
  if (throughput)
    status = run_clients(o->clients, o->seconds, sem_cycle, &id);
  else if (handoff)
    status = sem_handoff(id, o);
  else
    status = sem_idle_grant(id, o->rounds);
  if (o->slots > 0 && semctl(id, 0, IPC_RMID) != 0) {
    perror("bench_client: semctl IPC_RMID");
    status = 1;
  }
  return status;
}
