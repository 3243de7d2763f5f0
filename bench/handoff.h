// What the parts of bench_client share: the clock, the client side of the
// socket protocol, the throughput runs (bench_client.c), and the hand-off
// latency runs (handoff.c). The semaphore's modes are in sysvsem.c.
#pragma once

#include <stdint.h>

enum handoff_kind {
  kSocketToSocket,  // a holder closes its connection, a socket waiter wakes
  kPipeToPipe,      // a thread writes one byte, a reader of that pipe wakes
  kLegacyToSocket,  // a legacy token is written back, a socket waiter wakes
};

// CLOCK_MONOTONIC in nanoseconds.
int64_t now_ns(void);
// JOBSERVERV2, or exits with status 3 and "JOBSERVERV2 is not set".
const char* server_path(void);
// Connects (one request). Returns the fd, or -1 after saying why on stderr.
int connect_server(const char* path);
// Blocks for the grant byte. Returns 0, or -1 after saying why on stderr.
int read_grant(int fd);

// One cycle of a throughput client: take a slot and give it back. Returns 0,
// or -1 after saying why on stderr.
typedef int (*cycle_fn)(const void* arg);
// Runs `clients` processes, each repeating cycle(arg) for `seconds`, and
// prints clients=, cycles_per_s=, max=, min=, max_min=, slept_per_cycle=.
// Returns the exit status.
int run_clients(int clients, double seconds, cycle_fn cycle, const void* arg);

struct handoff_options {
  enum handoff_kind kind;
  const char* path;    // the server; NULL for kPipeToPipe
  int pool_r, pool_w;  // the legacy pool, for kLegacyToSocket
  int rounds;
  int waiter_cpu;  // pin the waiter thread to this CPU, or -1
};

// Measures o->rounds hand-offs and prints p50/p99 in microseconds. Returns
// the exit status.
int run_handoff(const struct handoff_options* o);
