// bench_client: load generator for the socket jobserver protocol
// (docs/PROTOCOL.md). It finds the server in JOBSERVERV2, so the same binary
// runs against bench/reference_server and as the COMMAND of
// `jobbridge -jN -- bench_client MODE`. scripts/bench.sh runs both and prints
// them side by side. Each mode prints one line of key=value figures on stdout.
// This file has the throughput modes; handoff.c the latency ones.
//
//   throughput [-c C] [-t S]  C client processes (default 1), each looping
//                             connect + read grant + close for S seconds
//   fairness   [-c C] [-t S]  the same load, default 64 clients; run it with
//                             a budget of 2 to see how the server shares
//   handoff    [-n R]         socket -> socket wake-up, budget of 1 free slot
//   pipe-handoff [-n R]       pipe -> pipe wake-up, the floor of a legacy one
//   legacy-handoff [-n R]     legacy token -> socket waiter; under jobbridge -j2
//   (-w CPU pins the waiting thread of a hand-off mode to that CPU)
//   sem-throughput, sem-handoff, sem-idle-grant [-s SLOTS]: the same loads
//                             on the Robust Jobserver's semaphore (sysvsem.c)
//
// Exit status: 0, 1 on a failure (named on stderr), 3 when JOBSERVERV2 (for
// a sem- mode ROBUST_JOBSERVER) is not set (the script prints "n/a" for it
// rather than an error).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handoff.h"
#include "sysvsem.h"

enum { kExitNoServer = 3, kMaxClients = 1024 };

int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char* server_path(void) {
  const char* path = getenv("JOBSERVERV2");
  if (path == NULL || path[0] == '\0') {
    fprintf(stderr, "bench_client: JOBSERVERV2 is not set\n");
    exit(kExitNoServer);
  }
  return path;
}

// Connects (one request). Returns the fd, or -1 after saying why.
int connect_server(const char* path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc;
  do rc = connect(fd, (struct sockaddr*)&addr, sizeof addr);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    fprintf(stderr, "bench_client: connect %s: %s\n", path, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

// Blocks until the grant byte arrives. Returns 0, or -1 after saying why.
int read_grant(int fd) {
  char byte;
  ssize_t n;
  do n = read(fd, &byte, 1);
  while (n < 0 && errno == EINTR);
  if (n == 1) return 0;
  fprintf(stderr, "bench_client: waiting for a grant: %s\n",
          n == 0 ? "the server closed the connection" : strerror(errno));
  return -1;
}

// One client process: cycles until the deadline, counting the cycles that
// ended before it. Runs in a fork, so returns only through _exit.
static void client_loop(cycle_fn cycle, const void* arg, int start_fd, const int64_t* start,
                        int64_t seconds, uint64_t* count) {
  char byte;
  while (read(start_fd, &byte, 1) < 0 && errno == EINTR) {
  }  // EOF: the parent released every client at once
  int64_t deadline = *start + seconds;
  uint64_t cycles = 0;
  for (;;) {
    if (cycle(arg) != 0) _exit(1);
    if (now_ns() > deadline) break;
    cycles++;
  }
  *count = cycles;  // written once, at the end: no cache-line ping-pong
  _exit(0);
}

// A socket client's cycle: connect (one request), read the grant, close.
static int socket_cycle(const void* path) {
  int fd = connect_server(path);
  int rc = fd >= 0 ? read_grant(fd) : -1;
  if (fd >= 0) close(fd);
  return rc;
}

// throughput, fairness and sem-throughput: C processes (not threads, as
// real clients are separate processes with their own fd tables) started
// together.
int run_clients(int clients, double seconds, cycle_fn cycle, const void* arg) {
  if (clients < 1 || clients > kMaxClients) return fprintf(stderr, "bad -c\n"), 1;
  size_t size = sizeof(int64_t) + sizeof(uint64_t) * clients;
  int64_t* start = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  uint64_t* counts = (uint64_t*)(start + 1);
  int gate[2];
  if (start == MAP_FAILED || pipe2(gate, O_CLOEXEC) != 0) return perror("bench_client"), 1;
  pid_t pids[kMaxClients];
  int failed = 0;
  for (int i = 0; i < clients; i++) {
    pids[i] = fork();
    if (pids[i] < 0) {
      perror("bench_client: fork");
      failed = 1;
      clients = i;  // the ones started still run to the deadline
      break;
    }
    if (pids[i] == 0) {
      close(gate[1]);
      client_loop(cycle, arg, gate[0], start, (int64_t)(seconds * 1e9), &counts[i]);
    }
  }
  *start = now_ns();
  close(gate[1]);  // releases them all
  for (int i = 0; i < clients; i++) {
    int status = 0, rc;
    while ((rc = waitpid(pids[i], &status, 0)) < 0 && errno == EINTR) {
    }
    failed |= rc < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  if (failed) return fprintf(stderr, "bench_client: a client failed\n"), 1;
  uint64_t total = 0, max = 0, min = UINT64_MAX;
  for (int i = 0; i < clients; i++) {
    total += counts[i];
    max = counts[i] > max ? counts[i] : max;
    min = counts[i] < min ? counts[i] : min;
  }
  // How often a client slept (voluntary context switches of all the reaped
  // clients, per cycle): whether the slots were contended at all.
  struct rusage usage;
  getrusage(RUSAGE_CHILDREN, &usage);
  printf(
      "clients=%d seconds=%.1f cycles_per_s=%.0f max=%llu min=%llu max_min=%.3f "
      "slept_per_cycle=%.3f\n",
      clients, seconds, total / seconds, (unsigned long long)max, (unsigned long long)min,
      min ? (double)max / min : 1e9, total ? (double)usage.ru_nvcsw / total : 0);
  return 0;
}

// The legacy pool jobbridge gives its COMMAND: the last --jobserver-auth= (or
// --jobserver-fds=) of the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS set.
// Returns 0 and the read and write fds, or -1 after saying why. The
// inherited fds are used as they are: their flags are shared with the tree.
static int legacy_pool(int* r, int* w) {
  const char* flags = getenv("CARGO_MAKEFLAGS");
  if (!flags) flags = getenv("MAKEFLAGS");
  if (!flags) flags = getenv("MFLAGS");
  const char* auth = NULL;
  for (const char* p = flags; p && (p = strstr(p, "--jobserver-")); p++) {
    if (!strncmp(p, "--jobserver-auth=", 17)) auth = p + 17;
    if (!strncmp(p, "--jobserver-fds=", 16)) auth = p + 16;
  }
  if (auth && !strncmp(auth, "fifo:", 5)) {
    char fifo[4096];
    snprintf(fifo, sizeof fifo, "%.*s", (int)strcspn(auth + 5, " "), auth + 5);
    *r = *w = open(fifo, O_RDWR | O_CLOEXEC);  // our own description, blocking
    if (*r >= 0) return 0;
  } else if (auth && sscanf(auth, "%d,%d", r, w) == 2 && *r >= 0 && *w >= 0) {
    struct stat st;
    if (fcntl(*r, F_GETFD) >= 0 && fcntl(*w, F_GETFD) >= 0 && fstat(*r, &st) == 0 &&
        S_ISFIFO(st.st_mode))
      return 0;
  }
  fprintf(stderr, "bench_client: no usable legacy jobserver in MAKEFLAGS (%s)\n",
          flags ? flags : "unset");
  return -1;
}

static int usage(void) {
  fprintf(stderr,
          "usage: bench_client throughput|fairness [-c CLIENTS] [-t SECONDS]\n"
          "       bench_client handoff|pipe-handoff|legacy-handoff [-n ROUNDS] [-w CPU]\n"
          "       bench_client sem-throughput [-c CLIENTS] [-t SECONDS] [-s SLOTS]\n"
          "       bench_client sem-handoff [-n ROUNDS] [-w CPU] [-s SLOTS]\n"
          "       bench_client sem-idle-grant [-n ROUNDS]\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc % 2 != 0) return usage();  // MODE, then option-value pairs
  const char* mode = argv[1];
  int clients = strcmp(mode, "fairness") == 0 ? 64 : 1;
  struct handoff_options h = {.pool_r = -1, .pool_w = -1, .rounds = 2000, .waiter_cpu = -1};
  double seconds = 2;
  int slots = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-c"))
      clients = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-t"))
      seconds = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "-n"))
      h.rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-w"))
      h.waiter_cpu = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-s"))
      slots = atoi(argv[i + 1]);
    else
      return usage();
  }
  if (h.rounds < 1 || seconds <= 0 || slots < 0) return usage();
  if (!strncmp(mode, "sem-", 4)) {
    struct sem_options s = {.slots = slots,
                            .clients = clients,
                            .seconds = seconds,
                            .rounds = h.rounds,
                            .waiter_cpu = h.waiter_cpu};
    int status = run_sem(mode, &s);
    return status == 2 ? usage() : status;
  }
  if (!strcmp(mode, "throughput") || !strcmp(mode, "fairness"))
    return run_clients(clients, seconds, socket_cycle, server_path());
  if (!strcmp(mode, "pipe-handoff"))
    h.kind = kPipeToPipe;
  else if (!strcmp(mode, "handoff"))
    h.kind = kSocketToSocket;
  else if (!strcmp(mode, "legacy-handoff"))
    h.kind = kLegacyToSocket;
  else
    return usage();
  if (h.kind != kPipeToPipe) h.path = server_path();
  if (h.kind == kLegacyToSocket && legacy_pool(&h.pool_r, &h.pool_w) != 0) return 1;
  return run_handoff(&h);
}
