// bench_client's Robust Jobserver modes (sysvsem.c): the same load against
// jobbridge's semaphore (ROBUST_JOBSERVER=sysvsem:ID) and against a bare set
// the client makes itself, with no server at all.
#pragma once

struct sem_options {
  int slots;  // > 0: a bare set of our own with that many units; 0: ROBUST_JOBSERVER
  int clients;
  double seconds;
  int rounds;
  int waiter_cpu;  // pin the waiter thread of sem-handoff to this CPU, or -1
};

// Runs MODE (sem-throughput, sem-handoff or sem-idle-grant) and prints one
// line of key=value figures. Returns the exit status: 3 when ROBUST_JOBSERVER
// is not set (and no -s), 2 for an unknown mode, 1 on a failure (named on
// stderr). A bare set is removed before it returns, whatever happened.
int run_sem(const char* mode, const struct sem_options* o);
