#include "runtime_dir-posix.h"

#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "util/unix_socket.h"

namespace jobbridge {

namespace {

struct Parent {
  std::string folder;
  std::string variable;  // empty for the /tmp fallback
};

Parent ChooseParent() {
  for (const char* variable : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
    const char* value = std::getenv(variable);
    if (value && *value) return {value, variable};
  }
  return {"/tmp", ""};
}

constexpr const char* kOwnerFile = "owner";
constexpr const char* kSemaphoreFile = "semaphore";

// A set's creation time (the last SETVAL, which only its creator makes), or
// -1 when it cannot be looked at or is not a set this user made for
// jobbridge (one semaphore, no key). With the id it names one set, even
// after the id is reused.
long long SemaphoreStamp(int id) {
  semid_ds info{};
  union {
    int val;
    semid_ds* buf;
    unsigned short* array;
  } argument{.buf = &info};
  if (semctl(id, 0, IPC_STAT, argument) != 0) return -1;
  if (info.sem_perm.cuid != getuid() || info.sem_perm.__key != IPC_PRIVATE || info.sem_nsems != 1) {
    errno = EINVAL;
    return -1;
  }
  return static_cast<long long>(info.sem_ctime);
}

// Removes the set a stale folder names, if it is still that set. Its id, or
// -1 when there was none to remove.
int RemoveNamedSemaphore(const std::filesystem::path& folder) {
  std::ifstream note(folder / kSemaphoreFile);
  int id = -1;
  long long stamp = -1;
  if (!(note >> id >> stamp) || id < 0 || stamp < 0 || SemaphoreStamp(id) != stamp) return -1;
  return semctl(id, 0, IPC_RMID) == 0 ? id : -1;
}

// A process's start time (clock ticks since boot, field 22 of
// /proc/PID/stat): with the pid it names one process, even after pid reuse.
std::string StartTime(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t end = text.rfind(')');  // the command name may hold spaces
  if (end == std::string::npos) return "";
  std::istringstream fields(text.substr(end + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
  }
  return field;
}

std::string OwnerLine(pid_t pid) { return std::to_string(pid) + " " + StartTime(pid); }

// True when someone listens on the folder's socket: a jobbridge in another
// pid namespace that shares this /tmp looks gone from here, but answers.
bool SocketAnswers(const std::filesystem::path& folder) {
  // Only a clear "nobody" counts: a full backlog (EAGAIN) is someone
  // listening, and anything else (no fds left, say) cannot tell, so the
  // folder is kept.
  if (ConnectUnix((folder / "jobserver.sock").string()).valid()) return true;
  return errno != ECONNREFUSED && errno != ENOENT && errno != ENAMETOOLONG;
}

// True when every process the folder's owner file names (the bridge, then
// its caretaker, as "PID START" pairs) is gone and its socket (if any) has
// no listener.
bool OwnerIsGone(const std::filesystem::path& folder) {
  std::ifstream owner(folder / kOwnerFile);
  pid_t pid = 0;
  std::string start;
  bool named = false;
  while (owner >> pid >> start) {
    if (pid <= 0) return false;  // not ours
    if (StartTime(pid) == start) return false;
    named = true;
  }
  return named && !SocketAnswers(folder);  // none named: being made
}

}  // namespace

std::vector<RuntimeDir::Swept> RuntimeDir::SweepStale() {
  std::vector<Swept> removed;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(ChooseParent().folder, error)) {
    if (!entry.path().filename().string().starts_with("jobbridge-")) continue;
    struct stat info {};
    if (lstat(entry.path().c_str(), &info) != 0 || !S_ISDIR(info.st_mode) ||
        info.st_uid != getuid() || !OwnerIsGone(entry.path())) {
      continue;
    }
    int semaphore = RemoveNamedSemaphore(entry.path());
    std::error_code ignored;
    if (std::filesystem::remove_all(entry.path(), ignored) > 0) {
      removed.push_back({entry.path().string(), semaphore});
    }
  }
  return removed;
}

RuntimeDir::RuntimeDir(RuntimeDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}

RuntimeDir::~RuntimeDir() {
  std::string ignored;
  Remove(&ignored);
}

bool RuntimeDir::Create(std::string* err) {
  if (!path_.empty()) {
    *err = "internal: the runtime folder " + path_ + " exists already";
    return false;
  }
  Parent parent = ChooseParent();
  std::string templ = parent.folder + "/jobbridge-XXXXXX";
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  if (!mkdtemp(buffer.data())) {  // mkdtemp creates it with mode 0700
    std::string fix = parent.variable.empty()
                          ? "set TMPDIR to a writable folder"
                          : "set " + parent.variable + " to a writable folder (or unset it)";
    *err =
        "cannot create a runtime folder in " + parent.folder + ": " + strerror(errno) + "; " + fix;
    return false;
  }
  path_ = buffer.data();
  std::ofstream(Join(kOwnerFile)) << OwnerLine(getpid()) << "\n";
  return true;
}

void RuntimeDir::AddOwner(pid_t pid) const {
  // Written aside and renamed, so a sweep never reads half the file.
  std::string aside = Join(std::string(kOwnerFile) + ".new");
  std::ofstream(aside) << OwnerLine(getpid()) << " " << OwnerLine(pid) << "\n";
  rename(aside.c_str(), Join(kOwnerFile).c_str());
}

std::string RuntimeDir::ControlSocketOf(pid_t pid) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(ChooseParent().folder, error)) {
    if (!entry.path().filename().string().starts_with("jobbridge-")) continue;
    std::ifstream owner(entry.path() / kOwnerFile);
    pid_t first = 0;
    if (owner >> first && first == pid) return (entry.path() / "control.sock").string();
  }
  return "";
}

bool RuntimeDir::NoteSemaphore(int id, std::string* err) const {
  long long stamp = SemaphoreStamp(id);
  if (stamp < 0) {
    *err = "cannot look at the ROBUST_JOBSERVER semaphore (sysvsem:" + std::to_string(id) +
           "): " + strerror(errno) + "; if jobbridge and its caretaker are both killed, the " +
           "next jobbridge cannot remove it (ipcrm -s " + std::to_string(id) + " does)";
    return false;
  }
  // Written aside and renamed, so a sweep never reads half the file.
  std::string aside = Join(std::string(kSemaphoreFile) + ".new");
  std::ofstream(aside) << id << " " << stamp << "\n";
  if (rename(aside.c_str(), Join(kSemaphoreFile).c_str()) != 0) {
    *err = "cannot name the ROBUST_JOBSERVER semaphore in " + path_ + ": " + strerror(errno);
    return false;
  }
  return true;
}

bool RuntimeDir::Remove(std::string* err) {
  if (path_.empty()) return true;
  // The folder is 0700 and its name random, so everything in it is ours.
  // remove_all does not follow symlinks out of it.
  std::error_code error;
  std::filesystem::remove_all(path_, error);
  if (error) {
    *err = "cannot remove the runtime folder " + path_ + ": " + error.message();
    return false;
  }
  path_.clear();
  return true;
}

}  // namespace jobbridge
