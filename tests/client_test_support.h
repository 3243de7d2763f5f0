// Shared by the client library's tests: a fixture with its own temporary
// folder and a clean jobserver environment (restored afterwards, so the tests
// also pass when the binary runs them all in one process), and fd helpers.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fd_test_util.h"
#include "jobbridge_client.h"

namespace jobbridge {
namespace client_test {

// The bound on waiting for an event that must come: reaching it fails the
// test instead of hanging it. Never a stand-in for the event itself.
inline constexpr int kEventMs = 10000;

// Every variable the client reads: the jobserver's, and the two that decide
// whether it has an implicit slot (unset here, so that tests run from a make
// recipe behave as the others).
inline constexpr const char* kJobserverVariables[] = {
    "JOBSERVERV2", "ROBUST_JOBSERVER", "CARGO_MAKEFLAGS",        "MAKEFLAGS",
    "MFLAGS",      "MAKELEVEL",        "JOBBRIDGE_IMPLICIT_SLOT"};

using test_util::IsCloexec;
using test_util::ListDir;

// The fds open in this process right now (without the one opendir uses).
inline std::set<int> OpenFds() {
  std::set<int> fds;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return fds;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') fds.insert(std::atoi(entry->d_name));
  }
  fds.erase(dirfd(dir));
  closedir(dir);
  return fds;
}

// Readable right now (or after waiting up to timeout_ms).
inline bool Readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jbc-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << templ << ": " << strerror(errno);
    dir_ = templ;
    for (const char* name : kJobserverVariables) {
      const char* value = getenv(name);
      saved_env_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
      unsetenv(name);
    }
    fds_before_ = OpenFds();
  }

  void TearDown() override {
    for (auto& [name, value] : saved_env_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
    for (const std::string& name : ListDir(dir_)) unlink((dir_ + "/" + name).c_str());
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << dir_ << ": " << strerror(errno);
  }

  // Fails the test unless every fd opened since SetUp (but the ones the test
  // itself keeps, `kept`) has been closed.
  void ExpectNoFdLeft(const std::set<int>& kept = {}) {
    for (int fd : OpenFds()) {
      if (!fds_before_.contains(fd) && !kept.contains(fd))
        ADD_FAILURE() << "fd " << fd << " leaked";
    }
  }

  // Fails the test unless every fd opened since SetUp but `kept` is CLOEXEC.
  void ExpectNewFdsCloexec(const std::set<int>& kept) {
    for (int fd : OpenFds()) {
      if (!fds_before_.contains(fd) && !kept.contains(fd)) {
        EXPECT_TRUE(IsCloexec(fd)) << "fd " << fd << " is inheritable";
      }
    }
  }

  std::string Why(const char* why) { return why[0] ? why : "(no reason given)"; }

  std::string dir_;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_env_;
  std::set<int> fds_before_;
};

}  // namespace client_test
}  // namespace jobbridge
