// Finding and checking the budget jobbridge was started in. Every check is
// one the failure modes in FACTS.md call for: make closes the jobserver fds
// of a recipe without '+' (the numbers may then name unrelated files), a FIFO
// may be gone, a socket root may have died and left its path behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/robust_jobserver.h"
#include "log.h"
#include "outer_budget.h"
#include "util/private_description.h"
#include "util/robust_set.h"
#include "util/unique_fd.h"
#include "util/unix_socket.h"

namespace jobbridge {

namespace {

constexpr int kBudgetFileVersion = 1;
constexpr const char* kBudgetFileName = "budget.json";
// Beside it, one entry per pool given to a tool invocation (ListInvocationPool).
constexpr const char* kInvocationPoolPrefix = "invocation-pool-";

std::string Identity(const struct stat& info) {
  return std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino);
}

// Checks one inherited end of a legacy pipe: open, a pipe or FIFO, and
// opened for `access` (O_RDONLY for R, O_WRONLY for W; O_RDWR does for both).
bool CheckInheritedEnd(int fd, int access, const char* role, std::string* err) {
  std::string name = "fd " + std::to_string(fd) + " (the jobserver's " + role + " end)";
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    *err = name + " is not open: a make recipe without '+' (or $(MAKE)) closes it";
    return false;
  }
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISFIFO(info.st_mode)) {
    *err = name + " is not a pipe: make closed it (a recipe without '+') and the number now " +
           "names another file";
    return false;
  }
  int mode = flags & O_ACCMODE;
  if (mode != access && mode != O_RDWR) {
    *err = name + " is open for " + (mode == O_RDONLY ? "reading" : "writing") + " only";
    return false;
  }
  return true;
}

// A joined jobbridge reads and writes an inherited pipe through descriptions
// of its own, opened through /proc/self/fd (Upstream). The kernel checks the
// pipe's owner and mode there: a jobbridge run as another user (su, setpriv,
// a container's user) inside the build is refused.
bool CheckReopenable(int fd, int access, const char* role, std::string* err) {
  UniqueFd reopened = OpenPrivateDescription(fd, access, err);
  if (reopened.valid()) return true;
  struct stat info {};
  std::string owner = fstat(fd, &info) == 0 ? std::to_string(info.st_uid) : "?";
  *err = "fd " + std::to_string(fd) + " (the jobserver's " + role + " end) cannot be opened " +
         "again through /proc/self/fd: " + strerror(errno) + "; this jobbridge runs as uid " +
         std::to_string(getuid()) + " and the pool belongs to uid " + owner +
         " (run it as the build's user to share its budget)";
  return false;
}

// "dev:ino" of the file a legacy jobserver's tokens are read from: the pipe
// behind R, or the FIFO. The form does not matter: the shims hand make a
// FIFO as R,W of one open FIFO, and ninja a pipe as fifo:/proc/self/fd/R,
// and both still name the same pool. "" when it cannot be looked at.
std::string PoolIdentity(const JobserverAuth& auth) {
  struct stat info {};
  bool ok = auth.kind == JobserverAuth::Kind::kPipe   ? fstat(auth.read_fd, &info) == 0
            : auth.kind == JobserverAuth::Kind::kFifo ? stat(auth.fifo_path.c_str(), &info) == 0
                                                      : false;
  return ok ? Identity(info) : "";
}

// The first variable, in jobserver-rs order, that names a usable jobserver.
void FindLegacy(const GetEnvFn& getenv_fn, OuterBudget* found, std::vector<std::string>* warnings) {
  JobserverAuth warned;
  for (const char* variable : kMakeflagsVariables) {
    const char* value = getenv_fn(variable);
    if (!value) continue;
    Makeflags flags;
    std::string err;
    if (!ParseMakeflags(value, &flags, &err)) {
      warnings->push_back("ignoring the jobserver in " + std::string(variable) + ": " + err);
      continue;
    }
    // Named both ways (JobserverWords), the pool is joined by its fds, as
    // make joins it, or by its path when the fds were closed on the way.
    JobserverAuth auth =
        flags.make_auth.kind == JobserverAuth::Kind::kPipe ? flags.make_auth : flags.auth;
    if (auth.kind != JobserverAuth::Kind::kPipe && auth.kind != JobserverAuth::Kind::kFifo) {
      continue;
    }
    bool usable = CheckLegacyJobserver(auth, &err);
    if (usable && auth.kind == JobserverAuth::Kind::kPipe) {
      usable = CheckReopenable(auth.read_fd, O_RDONLY, "read", &err) &&
               CheckReopenable(auth.write_fd, O_WRONLY, "write", &err);
    }
    if (!usable && auth != flags.auth && flags.auth.kind == JobserverAuth::Kind::kFifo) {
      std::string fifo_err;
      usable = CheckLegacyJobserver(flags.auth, &fifo_err);
      if (usable) auth = flags.auth;
    }
    if (!usable) {
      // make sets MAKEFLAGS and MFLAGS alike: one warning for one fault.
      if (auth != warned) {
        warnings->push_back("ignoring the jobserver in " + std::string(variable) + " (" +
                            Shortened(FormatAuth(auth)) + "): " + err);
      }
      warned = auth;
      continue;
    }
    found->legacy = auth;
    found->legacy_source = variable;
    found->jobs = flags.jobs;
    return;
  }
}

// Forgets the legacy pool found (it is another budget's, or dead).
void DropLegacy(OuterBudget* found) {
  found->legacy = {};
  found->legacy_source.clear();
}

}  // namespace

std::string OuterBudget::Describe() const {
  if (kind == Kind::kSocket) return "the socket root " + socket_path + " (JOBSERVERV2)";
  if (kind == Kind::kSysvsem) {
    return "the Robust Jobserver's semaphore sysvsem:" + std::to_string(semaphore_set) +
           " (ROBUST_JOBSERVER)";
  }
  if (kind == Kind::kLegacy) {
    bool fifo = legacy.kind == JobserverAuth::Kind::kFifo;
    return "the make jobserver in " + legacy_source + " (" + (fifo ? "" : "fds ") +
           FormatAuth(legacy) + ")";
  }
  return "no outer budget";
}

bool StartedInsideABuild(const GetEnvFn& getenv_fn) {
  for (const char* name : {"MAKELEVEL", "JOBSERVERV2", "ROBUST_JOBSERVER"}) {
    const char* value = getenv_fn(name);
    if (value && *value) return true;
  }
  for (const char* variable : kMakeflagsVariables) {
    const char* value = getenv_fn(variable);
    Makeflags flags;
    std::string err;
    if (!value) continue;
    if (!ParseMakeflags(value, &flags, &err) || flags.auth.kind != JobserverAuth::Kind::kNone) {
      return true;
    }
  }
  return false;
}

std::vector<int> JobserverFdsInEnvironment(const GetEnvFn& getenv_fn) {
  std::vector<int> fds;
  for (const char* variable : kMakeflagsVariables) {
    const char* value = getenv_fn(variable);
    Makeflags flags;
    std::string err;
    if (!value || !ParseMakeflags(value, &flags, &err)) continue;
    for (const JobserverAuth& auth : {flags.auth, flags.make_auth}) {
      if (auth.kind != JobserverAuth::Kind::kPipe) continue;
      for (int fd : {auth.read_fd, auth.write_fd}) {
        struct stat info {};
        bool pipe = fcntl(fd, F_GETFD) >= 0 && fstat(fd, &info) == 0 && S_ISFIFO(info.st_mode);
        if (pipe && std::find(fds.begin(), fds.end(), fd) == fds.end()) fds.push_back(fd);
      }
    }
  }
  return fds;
}

bool CheckLegacyJobserver(const JobserverAuth& auth, std::string* err) {
  if (auth.kind == JobserverAuth::Kind::kPipe) {
    return CheckInheritedEnd(auth.read_fd, O_RDONLY, "read", err) &&
           CheckInheritedEnd(auth.write_fd, O_WRONLY, "write", err);
  }
  if (auth.kind == JobserverAuth::Kind::kFifo) {
    struct stat info {};
    if (stat(auth.fifo_path.c_str(), &info) != 0) {
      *err = "the FIFO " + Shortened(auth.fifo_path) + " is missing: " + strerror(errno) +
             " (the make that made it has ended?)";
      return false;
    }
    if (!S_ISFIFO(info.st_mode)) {
      *err = Shortened(auth.fifo_path) + " is not a FIFO";
      return false;
    }
    if (access(auth.fifo_path.c_str(), R_OK | W_OK) != 0) {
      *err = "cannot read and write the FIFO " + Shortened(auth.fifo_path) + ": " + strerror(errno);
      return false;
    }
    return true;
  }
  *err = "no jobserver";
  return false;
}

bool CheckRobustJobserver(const std::string& value, int* set, std::string* err) {
  return ParseRobustJobserver(value, "it", set, err) && CheckRobustSet(*set, "it", err) == 0;
}

bool CheckSocketRoot(const std::string& path, std::string* err) {
  if (path.empty() || path[0] != '/') {
    *err = "'" + path + "' is not an absolute path";
    return false;
  }
  // Connected, the root sees a request withdrawn when the fd closes here.
  // EAGAIN: the backlog is full, so something listens.
  if (ConnectUnix(path).valid() || errno == EAGAIN) return true;
  if (errno == ENAMETOOLONG) {
    *err = path + " is longer than the " + std::to_string(kMaxSocketPathLength) +
           " bytes a socket path may have";
  } else if (errno == ENOENT) {
    *err = "no socket at " + path + " (its root has ended?)";
  } else if (errno == ECONNREFUSED) {
    *err = "nothing listens on " + path + " (its root was killed?)";
  } else if (errno == EACCES) {
    *err = "cannot connect to " + path + ": " + strerror(errno) + " (its root serves its own " +
           "user only, and this jobbridge runs as uid " + std::to_string(getuid()) + ")";
  } else {
    *err = "cannot connect to " + path + ": " + strerror(errno);
  }
  return false;
}

OuterBudget FindOuterBudget(const GetEnvFn& getenv_fn, std::vector<std::string>* warnings) {
  OuterBudget found;
  FindLegacy(getenv_fn, &found, warnings);
  const char* socket_path = getenv_fn("JOBSERVERV2");
  if (socket_path && *socket_path) {
    std::string err;
    if (CheckSocketRoot(socket_path, &err)) {
      found.kind = OuterBudget::Kind::kSocket;
      found.socket_path = socket_path;
      // MAKEFLAGS may name a pool of another budget (a make between the root
      // and us that started its own): share it only on the root's word.
      if (found.legacy.kind != JobserverAuth::Kind::kNone &&
          !SocketRootSharesPool(found.socket_path, found.legacy)) {
        DropLegacy(&found);
      }
      return found;
    }
    warnings->push_back("ignoring JOBSERVERV2: " + err);
    // A jobbridge root's pool dies with it: nobody refills or drains it.
    if (found.legacy.kind != JobserverAuth::Kind::kNone &&
        SocketRootSharesPool(socket_path, found.legacy)) {
      warnings->push_back("ignoring the jobserver in " + found.legacy_source +
                          ": it is the pool of that socket root, which is gone");
      DropLegacy(&found);
    }
  }
  // Before MAKEFLAGS, as clients choose. A semaphore root names no pool of
  // its own: whatever MAKEFLAGS names is another budget's, not shared.
  const char* robust = getenv_fn("ROBUST_JOBSERVER");
  if (robust && *robust) {
    std::string err;
    if (CheckRobustJobserver(robust, &found.semaphore_set, &err)) {
      found.kind = OuterBudget::Kind::kSysvsem;
      DropLegacy(&found);
      return found;
    }
    found.semaphore_set = -1;
    warnings->push_back("ignoring ROBUST_JOBSERVER: " + err);
  }
  if (found.legacy.kind != JobserverAuth::Kind::kNone) found.kind = OuterBudget::Kind::kLegacy;
  return found;
}

bool WriteBudgetFile(const std::string& dir, const JobserverAuth& legacy, std::string* err) {
  nlohmann::json doc = {{"version", kBudgetFileVersion}, {"legacy", PoolIdentity(legacy)}};
  std::string path = dir + "/" + kBudgetFileName;
  std::ofstream out(path);
  out << doc.dump() << "\n";
  if (!out.flush()) {
    *err = "cannot write " + path;
    return false;
  }
  return true;
}

bool ListInvocationPool(const std::string& dir, int pool_fd, pid_t pid, std::string* entry,
                        std::string* err) {
  struct stat info {};
  if (fstat(pool_fd, &info) != 0) {
    *err = std::string("cannot look at an invocation's token pipe: ") + strerror(errno);
    return false;
  }
  // A symlink: made and removed without an fd, so a root short of fds can
  // still list a pool it could make. It points at the invocation's pid, for
  // whoever looks into the folder.
  *entry = dir + "/" + kInvocationPoolPrefix + Identity(info);
  if (symlink(std::to_string(pid).c_str(), entry->c_str()) != 0) {
    *err = "cannot list an invocation's pool as " + *entry + ": " + strerror(errno);
    return false;
  }
  return true;
}

void UnlistInvocationPool(const std::string& entry) { unlink(entry.c_str()); }

bool SocketRootSharesPool(const std::string& socket_path, const JobserverAuth& legacy) {
  std::string identity = PoolIdentity(legacy);
  if (identity.empty()) return false;
  std::string dir = socket_path.substr(0, socket_path.rfind('/'));
  // A pool the root gave one tool invocation (a make started through its
  // shims names that one in MAKEFLAGS, not the root's own): listed for as
  // long as that invocation runs, so for as long as anything below it does.
  struct stat info {};
  if (lstat((dir + "/" + kInvocationPoolPrefix + identity).c_str(), &info) == 0) return true;
  std::ifstream in(dir + "/" + kBudgetFileName);
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  auto doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return false;
  auto version = doc.find("version");
  auto pool = doc.find("legacy");
  if (version == doc.end() || *version != kBudgetFileVersion || pool == doc.end() ||
      !pool->is_string()) {
    return false;
  }
  return *pool == identity;
}

}  // namespace jobbridge
