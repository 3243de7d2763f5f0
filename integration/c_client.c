/* A C program that takes its slots through the installed client library
 * (pkg-config jobbridge-client), for test_client_lib.py.
 *
 * usage: c_client NAME SECONDS COUNT
 * Runs COUNT jobs one after another, each on a slot of its own; a job is
 * $JOB NAME.i SECONDS, which records its own start and end. Exits 3 when the
 * jobserver is unusable or goes away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobbridge_client.h"

static int run_job(const char* name, int index, const char* seconds) {
  char label[256];
  snprintf(label, sizeof label, "%s.%d", name, index);
  pid_t pid = fork();
  if (pid == 0) {
    execl(getenv("JOB"), getenv("JOB"), label, seconds, (char*)NULL);
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: c_client NAME SECONDS COUNT\n");
    return 2;
  }
  char why[256];
  jobbridge_client* client = NULL;
  int rc = jobbridge_client_open_env(&client, why, sizeof why);
  if (rc < 0) {
    fprintf(stderr, "c_client: %s\n", why);
    return 3;
  }
  char mode[256];
  jobbridge_client_describe(client, mode, sizeof mode);
  fprintf(stderr, "c_client: using %s\n", mode);
  for (int i = 0; i < atoi(argv[3]); ++i) {
    jobbridge_slot* slot = NULL;
    rc = jobbridge_client_acquire(client, -1, &slot);
    if (rc < 0) {
      fprintf(stderr, "c_client: no slot: %s\n", jobbridge_strerror(rc));
      jobbridge_client_close(client);
      return 3;
    }
    int status = run_job(argv[1], i, argv[2]);
    jobbridge_slot_release(slot);
    if (status != 0) return status;
  }
  jobbridge_client_close(client);
  return 0;
}
