// Whether a System V set can be the Robust Jobserver's semaphore: shared by
// the client library and a jobbridge that joins an outer semaphore.
#pragma once

#include <sys/ipc.h>
#include <sys/sem.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace jobbridge {

// 0 when `set` exists, this user may use it and it holds exactly one
// semaphore. Otherwise sets *why (naming `named`, the variable) and returns
// -EPIPE when the set is gone (EINVAL/EIDRM: its server removed it),
// -EACCES when it belongs to another user, -EINVAL for a set of several
// semaphores, -errno else.
inline int CheckRobustSet(int set, const std::string& named, std::string* why) {
  std::string id_text = std::to_string(set);
  semid_ds info{};
  union {  // semctl's fourth argument (semun), which the caller must declare
    int val;
    semid_ds* buf;
  } arg{};
  arg.buf = &info;
  if (semctl(set, 0, IPC_STAT, arg) != 0) {
    int error = errno;
    if (error == EINVAL || error == EIDRM) {
      *why =
          named + " names semaphore set " + id_text + ", which does not exist (its server is gone)";
      return -EPIPE;
    }
    *why = named + " names semaphore set " + id_text + ": " + strerror(error) +
           (error == EACCES ? " (it belongs to another user)" : "");
    return -error;
  }
  if (info.sem_nsems != 1) {
    *why = named + " names semaphore set " + id_text + " of " + std::to_string(info.sem_nsems) +
           " semaphores; the Robust Jobserver's set has exactly one";
    return -EINVAL;
  }
  return 0;
}

}  // namespace jobbridge
