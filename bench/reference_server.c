// reference_server: the smallest server of the socket jobserver protocol
// (docs/PROTOCOL.md) that is still correct, written as the yardstick that
// scripts/bench.sh measures jobbridge against in the same run. One thread,
// level-triggered epoll, no allocation after start-up, so its figures are
// close to what the kernel allows for this protocol.
//
// Usage: reference_server PATH N
// Listens on PATH with a budget of N slots, prints "ready" on stdout once
// listening (so the caller waits for an event, not a sleep), and exits on
// SIGTERM or SIGINT, removing PATH.
//
// What it does, as the spec says: accepts every connection at once (so
// waiters block in read(), not in connect()); each connection and each '+'
// is one request in a single FIFO queue across connections; a grant is one
// '+' byte written with MSG_NOSIGNAL (a waiter that died gives EPIPE: drop it,
// keep the slot); '-' and EOF give slots back. Any other byte, or '-' with
// nothing held, closes the connection. Peers of another uid are refused.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { kMaxFd = 4096, kQueueSize = 1 << 16 };

// Per connection, indexed by fd. `generation` tells a queue entry of a
// closed connection from one of a new connection that reused its fd.
struct conn {
  unsigned generation;
  int open;
  int granted;  // slots this connection holds
  int waiting;  // its requests still in the queue
};

struct request {
  int fd;
  unsigned generation;
};

struct server {
  int epoll_fd;
  int listen_fd;
  int free_slots;
  struct conn conns[kMaxFd];
  struct request queue[kQueueSize];  // ring buffer, FIFO across connections
  unsigned head, tail;
};

static void drop(struct server* s, int fd) {
  struct conn* c = &s->conns[fd];
  s->free_slots += c->granted;  // waiting requests go stale in the queue
  c->open = c->granted = c->waiting = 0;
  close(fd);  // also removes it from the epoll set
}

static int enqueue(struct server* s, int fd) {
  if (s->tail - s->head == kQueueSize) return 0;
  s->queue[s->tail++ % kQueueSize] = (struct request){fd, s->conns[fd].generation};
  s->conns[fd].waiting++;
  return 1;
}

// Grants free slots to the oldest live requests.
static void dispatch(struct server* s) {
  while (s->free_slots > 0 && s->head != s->tail) {
    struct request r = s->queue[s->head++ % kQueueSize];
    struct conn* c = &s->conns[r.fd];
    if (!c->open || c->generation != r.generation || c->waiting == 0) continue;
    c->waiting--;
    if (send(r.fd, "+", 1, MSG_NOSIGNAL) == 1) {
      c->granted++;
      s->free_slots--;
    } else {
      drop(s, r.fd);  // the waiter is gone; the slot stays free
    }
  }
}

static void accept_all(struct server* s) {
  for (;;) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        perror("reference_server: accept4");
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (fd >= kMaxFd || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        cred.uid != getuid()) {
      close(fd);
      continue;
    }
    struct conn* c = &s->conns[fd];
    c->generation++;
    c->open = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0 || !enqueue(s, fd)) drop(s, fd);
  }
}

static void on_readable(struct server* s, int fd) {
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {  // EOF or error: the client gave everything back
    drop(s, fd);
    return;
  }
  struct conn* c = &s->conns[fd];
  for (ssize_t i = 0; i < n; i++) {
    if (buf[i] == '+' && enqueue(s, fd)) continue;
    if (buf[i] == '-' && c->granted > 0) {
      c->granted--;
      s->free_slots++;
      continue;
    }
    fprintf(stderr, "reference_server: protocol error (byte 0x%02x), closing\n",
            (unsigned char)buf[i]);
    drop(s, fd);
    return;
  }
}

static int listen_on(const char* path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "reference_server: socket path longer than %zu bytes\n",
            sizeof addr.sun_path - 1);
    return -1;
  }
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(fd, SOMAXCONN) != 0) {
    perror("reference_server: listen");
    return -1;
  }
  return fd;
}

int main(int argc, char** argv) {
  if (argc != 3 || atoi(argv[2]) < 1) {
    fprintf(stderr, "usage: reference_server PATH N\n");
    return 2;
  }
  static struct server s;  // ~0.6 MB: static, not on the stack
  s.free_slots = atoi(argv[2]);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, NULL);  // delivered through signalfd instead
  int sig_fd = signalfd(-1, &stop, SFD_CLOEXEC);
  s.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  s.listen_fd = listen_on(argv[1]);
  if (sig_fd < 0 || s.epoll_fd < 0 || s.listen_fd < 0) return 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = s.listen_fd};
  epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, s.listen_fd, &ev);
  ev.data.fd = sig_fd;
  epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, sig_fd, &ev);
  printf("ready\n");
  fflush(stdout);

  for (;;) {
    struct epoll_event events[64];
    int n = epoll_wait(s.epoll_fd, events, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == sig_fd) {
        unlink(argv[1]);
        return 0;
      }
      if (fd == s.listen_fd)
        accept_all(&s);
      else if (s.conns[fd].open)  // may have been dropped earlier in this batch
        on_readable(&s, fd);
    }
    dispatch(&s);
  }
}
