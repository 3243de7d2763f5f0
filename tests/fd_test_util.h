// Looking at this process's files and fds from the unit tests.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace jobbridge::test_util {

// The names in a folder, without "." and "..".
inline std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* dir = opendir(path.c_str())) {
    while (dirent* entry = readdir(dir)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(dir);
  }
  return names;
}

inline bool IsCloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

inline bool IsNonBlocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// What an fd refers to, as /proc shows it ("pipe:[123]", a path), or "".
inline std::string FdTarget(int fd) {
  char buffer[PATH_MAX] = {};
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(link.c_str(), buffer, sizeof buffer - 1);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
}

// Every open fd of this process that refers to `target`.
inline std::vector<int> FdsOpenOn(const std::string& target) {
  std::vector<int> fds;
  for (const std::string& name : ListDir("/proc/self/fd")) {
    int fd = std::stoi(name);
    if (FdTarget(fd) == target) fds.push_back(fd);
  }
  return fds;
}

// Lowers the soft open-file limit so that exactly `free` fds are left
// below it; restores it when it goes.
class FewFreeFds {
 public:
  explicit FewFreeFds(int free) {
    getrlimit(RLIMIT_NOFILE, &original_);
    // The limit is the number of the unused fd after `free` unused ones.
    int limit = 0;
    for (int unused = 0;; ++limit) {
      if (fcntl(limit, F_GETFD) < 0 && unused++ == free) break;
    }
    rlimit lowered = original_;
    lowered.rlim_cur = static_cast<rlim_t>(limit);
    EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0) << std::strerror(errno);
  }
  ~FewFreeFds() { setrlimit(RLIMIT_NOFILE, &original_); }

 private:
  rlimit original_{};
};

}  // namespace jobbridge::test_util
