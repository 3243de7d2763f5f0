#include "fd_limits-posix.h"

#include <dirent.h>

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

bool EnoughFreeFds(std::string* err) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return true;
  // Fds in use below the limit: numbers at or above it take no room, and the
  // listing's own fd is not jobbridge's.
  DIR* listing = opendir("/proc/self/fd");
  if (!listing) return true;  // /proc unreadable: let the first EMFILE say it
  rlim_t used = 0;
  int own = dirfd(listing);
  while (dirent* entry = readdir(listing)) {
    int fd = 0;
    if (!ParseWholeNumber(entry->d_name, &fd) || fd == own) continue;
    if (static_cast<rlim_t>(fd) < limit.rlim_cur) ++used;
  }
  closedir(listing);
  rlim_t free = limit.rlim_cur > used ? limit.rlim_cur - used : 0;
  if (free >= kMinFreeFds) return true;
  *err = "only " + std::to_string(free) + " file descriptors are free under the open-file " +
         "limit of " + std::to_string(limit.rlim_cur) + " (ulimit -n); jobbridge needs " +
         std::to_string(kMinFreeFds) + ": raise the limit (ulimit -n 1024) or close inherited fds";
  return false;
}

}  // namespace jobbridge
