// Hand-off latency: the time from a holder giving a slot back (timestamp
// taken right before close() or write()) to a waiter blocked in read()
// returning with it (timestamp right after). Both sides are threads of this
// process, so the two CLOCK_MONOTONIC readings compare directly.
//
// The waiter must really be waiting before the holder releases, or the
// figure measures a read() that finds its byte already there. Two checks,
// both outside the timed window:
//  - the waiter thread is asleep: it posts "reading" and then calls read();
//    that leaves a race (it may not have reached read() yet), so the holder
//    also polls /proc/self/task/TID/stat until the thread state is 'S'.
//    Nothing else between the post and read() can sleep.
//  - the server has accepted its connection: connect() returns as soon as
//    the connection sits in the listen backlog, so the holder asks sock_diag
//    for that backlog's length and waits until it is 0. Where sock_diag
//    cannot find the listener, the check is off (accept_check=off).
// A round where either check did not hold within 2 s is still measured and
// counted in `unverified`; after 3 such rounds the rest go unverified too.
#define _GNU_SOURCE
#include "handoff.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kGiveUpAfter = 3 };

struct handoff {
  enum handoff_kind kind;
  const char* path;
  int pool_r, pool_w;
  int waiter_cpu;
  int check_accept;
  sem_t go, reading, done;  // holder -> waiter, waiter -> holder, waiter -> holder
  pid_t waiter_tid;
  int waiter_fd;  // the connection that got the slot (socket kinds)
  int failed, stop;
  int64_t woke_ns;
};

static void sem_wait_intr(sem_t* sem) {
  while (sem_wait(sem) != 0 && errno == EINTR) {
  }
}

// How many connections wait in the accept backlog of the listener bound at
// `path`, or -1 when sock_diag cannot tell.
static int accept_backlog(const char* path) {
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return -1;
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req req;
  } msg = {.nlh = {.nlmsg_len = sizeof msg,
                   .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                   .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
           .req = {.sdiag_family = AF_UNIX,
                   .udiag_states = 1 << 10,  // TCP_LISTEN: listeners only
                   .udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN}};
  int result = -1, done = send(nl, &msg, sizeof msg, 0) != sizeof msg;
  static char buf[1 << 15];
  while (!done) {
    ssize_t got = recv(nl, buf, sizeof buf, 0);
    if (got <= 0) break;
    unsigned n = got;  // NLMSG_OK compares it with an unsigned length
    for (struct nlmsghdr* h = (struct nlmsghdr*)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = 1;
        break;
      }
      struct unix_diag_msg* m = NLMSG_DATA(h);
      int len = h->nlmsg_len - NLMSG_LENGTH(sizeof *m);
      const char* name = NULL;
      size_t name_len = 0;
      int rqueue = -1;
      for (struct rtattr* a = (struct rtattr*)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == UNIX_DIAG_NAME) {
          name = RTA_DATA(a);
          name_len = strnlen(name, RTA_PAYLOAD(a));  // the kernel includes the NUL
        } else if (a->rta_type == UNIX_DIAG_RQLEN) {
          rqueue = ((struct unix_diag_rqlen*)RTA_DATA(a))->udiag_rqueue;
        }
      }
      if (name && name_len == strlen(path) && !memcmp(name, path, name_len)) result = rqueue;
    }
  }
  close(nl);
  return result;
}

// The state letter of a thread of this process ('S' = asleep), or '?'.
static char thread_state(pid_t tid) {
  char file[64], text[512];
  snprintf(file, sizeof file, "/proc/self/task/%d/stat", (int)tid);
  FILE* f = fopen(file, "re");
  size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f) fclose(f);
  text[n] = '\0';
  char* paren = strrchr(text, ')');  // the command name may hold spaces
  return paren && paren[1] ? paren[2] : '?';
}

// Returns 1 when the waiter is verified to be waiting, 0 after 2 s.
static int wait_until_waiting(struct handoff* h) {
  int64_t limit = now_ns() + 2000000000LL;
  while (now_ns() < limit) {
    if (thread_state(h->waiter_tid) == 'S' && (!h->check_accept || accept_backlog(h->path) == 0))
      return 1;
    sched_yield();
  }
  return 0;
}

static void* waiter_main(void* arg) {
  struct handoff* h = arg;
  h->waiter_tid = gettid();
  if (h->waiter_cpu >= 0) {  // so that a one-thread wake-up crosses CPUs too
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(h->waiter_cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("bench_client: sched_setaffinity");
  }
  for (;;) {
    sem_wait_intr(&h->go);
    if (h->stop) return NULL;
    int fd = h->kind == kPipeToPipe ? h->pool_r : connect_server(h->path);
    h->failed = fd < 0;
    sem_post(&h->reading);
    int rc = fd >= 0 ? read_grant(fd) : -1;  // pipe kind: any byte will do
    h->woke_ns = now_ns();
    h->failed = rc != 0;
    h->waiter_fd = fd;
    sem_post(&h->done);
  }
}

// Takes one token from the legacy pool, waiting at most 5 s for the bridge
// to put one back. Works whether or not the shared description is blocking.
static int take_token(int fd, char* token) {
  int64_t limit = now_ns() + 5000000000LL;
  while (now_ns() < limit) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) > 0 && read(fd, token, 1) == 1) return 0;
  }
  fprintf(stderr,
          "bench_client: no legacy token in the pool within 5 s (the bridge did not put the "
          "slot a socket client gave back into the pipe)\n");
  return -1;
}

static int compare(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

// One round: the holder has the slot; the waiter asks; the holder gives it
// back. Returns the latency in ns, or -1 on a failure.
static int64_t one_round(struct handoff* h, int* held, int* unverified) {
  char token = '+';
  if (h->kind == kLegacyToSocket && take_token(h->pool_r, &token) != 0) return -1;
  sem_post(&h->go);
  sem_wait_intr(&h->reading);
  if (h->failed) return sem_wait_intr(&h->done), -1;
  // After a few rounds that could not be verified (a server that does not
  // accept at once), stop trying: each costs 2 s.
  *unverified += *unverified >= kGiveUpAfter || !wait_until_waiting(h);
  int64_t released = now_ns();
  if (h->kind == kSocketToSocket)
    close(*held);
  else if (write(h->pool_w, &token, 1) != 1)
    perror("bench_client: write token");
  sem_wait_intr(&h->done);
  if (h->failed) return -1;
  if (h->kind == kSocketToSocket) *held = h->waiter_fd;  // the relay goes on
  if (h->kind == kLegacyToSocket) close(h->waiter_fd);   // back to the bridge
  return h->woke_ns - released;
}

int run_handoff(const struct handoff_options* o) {
  enum handoff_kind kind = o->kind;
  const char* path = o->path;
  int rounds = o->rounds;
  struct handoff h = {.kind = kind,
                      .path = path,
                      .pool_r = o->pool_r,
                      .pool_w = o->pool_w,
                      .waiter_cpu = o->waiter_cpu};
  int pipe_fds[2], held = -1, unverified = 0, status = 0;
  if (kind == kPipeToPipe) {
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return perror("bench_client: pipe"), 1;
    h.pool_r = pipe_fds[0];
    h.pool_w = pipe_fds[1];
  }
  if (kind == kSocketToSocket) {  // take the one free slot first
    held = connect_server(path);
    if (held < 0 || read_grant(held) != 0) return 1;
  }
  h.check_accept = path && accept_backlog(path) >= 0;
  int64_t* lat = calloc(rounds, sizeof *lat);
  sem_init(&h.go, 0, 0);
  sem_init(&h.reading, 0, 0);
  sem_init(&h.done, 0, 0);
  pthread_t waiter;
  pthread_create(&waiter, NULL, waiter_main, &h);
  for (int i = 0; i < rounds && status == 0; i++)
    if ((lat[i] = one_round(&h, &held, &unverified)) < 0) status = 1;
  h.stop = 1;
  sem_post(&h.go);
  pthread_join(waiter, NULL);
  if (held >= 0) close(held);
  if (status != 0) return status;
  qsort(lat, rounds, sizeof *lat, compare);
  printf("rounds=%d p50_us=%.1f p99_us=%.1f unverified=%d accept_check=%s\n", rounds,
         lat[rounds / 2] / 1e3, lat[rounds * 99 / 100] / 1e3, unverified,
         !path            ? "n/a"
         : h.check_accept ? "on"
                          : "off");
  free(lat);
  return 0;
}
