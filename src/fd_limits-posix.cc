#include "fd_limits-posix.h"

#include <dirent.h>

#include <cerrno>

#include "core/numbers.h"

namespace jobbridge {

rlimit RaiseFdLimit() {
  rlimit original{};
  if (getrlimit(RLIMIT_NOFILE, &original) != 0) return {};
  rlimit raised = original;
  raised.rlim_cur = original.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);
  return original;
}

rlim_t FreeFds(rlim_t* limit) {
  rlimit current{};
  if (getrlimit(RLIMIT_NOFILE, &current) != 0 || current.rlim_cur == RLIM_INFINITY) {
    return RLIM_INFINITY;
  }
  *limit = current.rlim_cur;
  // Fds in use below the limit: numbers at or above it take no room, and the
  // listing's own fd is not jobbridge's.
  DIR* listing = opendir("/proc/self/fd");
  if (!listing && errno == EMFILE) return 0;
  if (!listing) return RLIM_INFINITY;  // /proc unreadable: let the first EMFILE say it
  rlim_t used = 0;
  int own = dirfd(listing);
  while (dirent* entry = readdir(listing)) {
    int fd = 0;
    if (!ParseWholeNumber(entry->d_name, &fd) || fd == own) continue;
    if (static_cast<rlim_t>(fd) < *limit) ++used;
  }
  closedir(listing);
  return *limit > used ? *limit - used : 0;
}

bool EnoughFreeFds(std::string* err) {
  rlim_t limit = 0;
  rlim_t free = FreeFds(&limit);
  if (free >= kMinFreeFds) return true;
  *err = "only " + std::to_string(free) + " file descriptors are free under the open-file " +
         "limit of " + std::to_string(limit) + " (ulimit -n); jobbridge needs " +
         std::to_string(kMinFreeFds) + ": raise the limit (ulimit -n 1024) or close inherited fds";
  return false;
}

bool EnoughFdsForPools(std::string* err) {
  rlim_t limit = 0;
  rlim_t free = FreeFds(&limit);
  if (free >= kFdsForPools) return true;
  *err = "only " + std::to_string(free) + " file descriptors are free under the open-file " +
         "limit of " + std::to_string(limit) + " (ulimit -n), and a pool of its own for each " +
         "make and ninja needs " + std::to_string(kFdsForPools) + " (raise the limit: ulimit -n " +
         "1024)";
  return false;
}

}  // namespace jobbridge
