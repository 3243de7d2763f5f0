#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string_view>

#include "adapt.h"
#include "child_env.h"
#include "core/makeflags.h"
#include "implicit_slot.h"
#include "log.h"
#include "outer_budget.h"
#include "pool_client.h"
#include "util/c_strings.h"
#include "util/eintr.h"
#include "util/fifo_pair.h"

extern char** environ;

namespace jobbridge {

namespace {

// make (by any of its names) reads one R,W; every other tool gets every name
// of the pool (JobserverWords), which serves ninja, make by any name, gcc and
// jobserver-rs alike.
enum class Form { kMake, kEvery };

Form FormFor(const std::string& tool) {
  return tool == "make" || tool == "gmake" ? Form::kMake : Form::kEvery;
}

std::string SelfPath() {
  std::error_code error;
  return std::filesystem::read_symlink("/proc/self/exe", error).string();
}

// The jobbridge binaries whose shims this process has passed through: its
// own, and those of the shims that exec'd it (exec keeps the pid, so a trail
// written by another pid is a parent's, not ours). Without it, two jobbridge
// binaries (a build and an installed copy, or a copy of the binary) whose
// shims each skip only their own would exec each other forever.
class ShimTrail {
 public:
  ShimTrail() {
    binaries_.push_back(SelfPath());
    const char* trail = std::getenv(kVariable);
    std::string pid = std::to_string(getpid());
    if (!trail || !std::string_view(trail).starts_with(pid + "\n")) return;
    std::string text = trail;
    for (size_t start = pid.size() + 1; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      binaries_.push_back(text.substr(start, end - start));
      start = end + 1;
    }
  }

  // Whether `candidate` resolves to a jobbridge binary on the trail.
  bool Contains(const std::string& candidate) const {
    std::error_code error;
    auto real = std::filesystem::canonical(candidate, error);
    return !error && std::ranges::find(binaries_, real.string()) != binaries_.end();
  }

  // Written before the exec, for a shim of another binary that it may reach.
  void Export() const {
    std::string text = std::to_string(getpid());
    for (const std::string& binary : binaries_) text += "\n" + binary;
    setenv(kVariable, text.c_str(), 1);
  }

 private:
  static constexpr const char* kVariable = "JOBBRIDGE_SHIM_TRAIL";
  std::vector<std::string> binaries_;
};

bool IsExecutableFile(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) && access(path.c_str(), X_OK) == 0;
}

// Finds `name` (a basename) in PATH, skipping anything that is a jobbridge
// on the trail (its own shims, those of a jobbridge further out or of one
// that exec'd this one) and anything that is not an executable file. ""
// when none.
std::string FindInPath(const std::string& name, const ShimTrail& trail) {
  const char* path = std::getenv("PATH");
  std::string rest = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find(':', start);
    if (end == std::string::npos) end = rest.size();
    std::string folder = rest.substr(start, end - start);
    start = end + 1;
    std::string candidate = (folder.empty() ? "." : folder) + "/" + name;
    if (!IsExecutableFile(candidate) || trail.Contains(candidate)) continue;
    return candidate;
  }
  return "";
}

// The real tool for `argv0`. A path that is not a jobbridge on the trail is
// that tool (`jobbridge adapt -- ./debian/rules`, or another jobbridge's
// shim, which then looks further itself). A shim, however it was started (by
// name, or by the full path CMake caches or `command -v make` prints), looks
// for its name in PATH past every jobbridge on the trail; gmake falls back
// to make. "" when none.
std::string FindRealTool(const std::string& argv0, const ShimTrail& trail) {
  if (argv0.find('/') != std::string::npos && !trail.Contains(argv0)) return argv0;
  std::string name = std::filesystem::path(argv0).filename().string();
  std::string found = FindInPath(name, trail);
  if (found.empty() && name == "gmake") found = FindInPath("make", trail);
  return found;
}

// Fds opened for the tool: a FIFO's R,W, opened once for all the variables
// that name it, and inherited by the tool (FD_CLOEXEC cleared).
struct OpenedFifos {
  std::map<std::string, JobserverAuth> by_path;

  bool PipeFor(const std::string& path, JobserverAuth* pipe, std::string* err) {
    if (auto found = by_path.find(path); found != by_path.end()) {
      *pipe = found->second;
      return true;
    }
    FifoPair pair;
    if (!OpenFifoPair(path, &pair, err)) return false;
    for (const UniqueFd* end : {&pair.read_end, &pair.write_end}) {
      fcntl(end->get(), F_SETFD, 0);
    }
    *pipe = {JobserverAuth::Kind::kPipe, pair.read_end.Release(), pair.write_end.Release(), ""};
    by_path[path] = *pipe;
    return true;
  }
};

// Every name of the pool that `flags` names, as `form` wants them: R,W always
// (opened on the FIFO when only a path is given), and a path for kEvery
// (/proc/self/fd/R of a pipe: stat() calls it a FIFO, and opening it opens
// the pipe itself). The names given are checked as a joining jobbridge
// checks them: a recipe without '+' closes fds, a FIFO may be gone or
// replaced. Returns false and sets *err when that cannot be done.
bool NamesFor(const Makeflags& flags, Form form, OpenedFifos* fifos, PoolNames* names,
              std::string* err) {
  using Kind = JobserverAuth::Kind;
  for (const JobserverAuth& auth : {flags.make_auth, flags.auth}) {
    if (auth.kind == Kind::kPipe && names->pipe.kind == Kind::kNone) names->pipe = auth;
    if (auth.kind == Kind::kFifo && names->fifo.kind == Kind::kNone) names->fifo = auth;
  }
  // A name that fails its check is dropped while another is left: a process
  // that closes inherited fds (Python's subprocess does) cuts R,W, and the
  // FIFO's path still reaches the pool.
  std::string first_err;
  for (JobserverAuth* auth : {&names->pipe, &names->fifo}) {
    std::string check_err;
    if (auth->kind == Kind::kNone || CheckLegacyJobserver(*auth, &check_err)) continue;
    if (first_err.empty()) first_err = check_err;
    *auth = {};
  }
  if (names->pipe.kind == Kind::kNone && names->fifo.kind == Kind::kNone) {
    *err = first_err;
    return false;
  }
  if (names->pipe.kind == Kind::kNone &&
      !fifos->PipeFor(names->fifo.fifo_path, &names->pipe, err)) {
    return false;
  }
  if (form == Form::kMake) {
    names->fifo = {};
  } else if (names->fifo.kind == Kind::kNone) {
    names->fifo = {Kind::kFifo, -1, -1, "/proc/self/fd/" + std::to_string(names->pipe.read_fd)};
  }
  return true;
}

// Rewrites one variable's value: its jobserver words become the names `form`
// wants; every other word stays. *names is what the tool is given (kind kNone
// when the value names no jobserver).
bool AdaptValue(const std::string& value, Form form, OpenedFifos* fifos, std::string* adapted,
                PoolNames* names, int* jobs, std::string* err) {
  Makeflags flags;
  if (!ParseMakeflags(value, &flags, err)) return false;
  auto usable = [](const JobserverAuth& auth) {
    return auth.kind == JobserverAuth::Kind::kPipe || auth.kind == JobserverAuth::Kind::kFifo;
  };
  if (!usable(flags.auth) && !usable(flags.make_auth)) {
    *adapted = value;  // no jobserver, or make's "-2,-2": nothing to adapt
    return true;
  }
  if (!NamesFor(flags, form, fifos, names, err)) return false;
  *adapted = WithJobserver(flags.words, JobserverWords(*names));
  *jobs = flags.jobs.value_or(0);
  return true;
}

// CARGO_MAKEFLAGS below the tool. make sets MAKEFLAGS for its children (its
// own pool when it starts one), so one that jobbridge wrote must not outrank
// it; cargo's own stays. Below any other tool it gives jobserver-rs R,W,
// as the root does when MAKEFLAGS names a path (child_env.h).
void AdaptCargoMakeflags(Form form, const PoolNames& names, int jobs, bool for_cargo) {
  const char* cargo = std::getenv("CARGO_MAKEFLAGS");
  const char* mark = std::getenv(kCargoMakeflagsMark);
  // cargo itself (under a daemon) reads the pool it was given: one that
  // jobbridge wrote is rewritten to it.
  if (for_cargo && cargo && mark && std::string(cargo) == mark) cargo = nullptr;
  if (form == Form::kMake) {
    if (cargo && mark && std::string(cargo) == mark) unsetenv("CARGO_MAKEFLAGS");
    unsetenv(kCargoMakeflagsMark);
    return;
  }
  if (cargo || names.pipe.kind != JobserverAuth::Kind::kPipe) return;
  std::string value = FormatMakeflags({}, jobs, names.pipe);
  setenv("CARGO_MAKEFLAGS", value.c_str(), 1);
  setenv(kCargoMakeflagsMark, value.c_str(), 1);
}

// Per-invocation pools (docs/LEAKS.md): this invocation gets a
// pool of its own from the root. MAKEFLAGS and MFLAGS name it instead of the
// pool the shim was given, whose fds the tool no longer inherits, and the
// life fd is inherited by everything the tool starts. False (and *err) when
// the root gives none: the tool then shares the pool it was given.
bool UseOwnPool(Form form, const std::vector<std::string>& argv, PoolNames* given,
                std::string* err) {
  const char* pools = std::getenv(kPoolsVariable);
  // A tool given no jobserver (MAKEFLAGS cleared, or a pool it could not
  // use) is not handed one here either.
  if (!pools || !*pools ||
      (given->pipe.kind == JobserverAuth::Kind::kNone &&
       given->fifo.kind == JobserverAuth::Kind::kNone)) {
    return true;
  }
  std::string command;
  for (const std::string& word : argv) command += (command.empty() ? "" : " ") + word;
  ReceivedPool own;
  if (!RequestPool(pools, getpid(), command, &own, err)) return false;
  using Kind = JobserverAuth::Kind;
  for (int fd : {given->pipe.read_fd, given->pipe.write_fd}) {
    if (given->pipe.kind == Kind::kPipe && fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  int r = own.token_read.Release(), w = own.returns_write.Release();
  int life = own.life_write.Release();
  for (int fd : {r, w, life}) fcntl(fd, F_SETFD, 0);
  PoolNames names{{Kind::kPipe, r, w, ""}, {}};
  if (form != Form::kMake) names.fifo = {Kind::kFifo, -1, -1, "/proc/self/fd/" + std::to_string(r)};
  for (const char* variable : {"MAKEFLAGS", "MFLAGS"}) {
    const char* value = std::getenv(variable);
    Makeflags flags;
    std::string ignored;
    if (!value || !ParseMakeflags(value, &flags, &ignored)) continue;
    setenv(variable, WithJobserver(flags.words, JobserverWords(names)).c_str(), 1);
  }
  *given = names;
  return true;
}

// Execs the real tool; returns only when it cannot be run.
int Exec(const std::string& real, const std::vector<std::string>& argv, const ShimTrail& trail) {
  trail.Export();
  std::vector<char*> args = CStrings(argv);
  execv(real.c_str(), args.data());
  LogError("adapt: cannot run " + real + ": " + strerror(errno));
  return 126;
}

}  // namespace

bool IsAdaptedTool(const std::string& name) {
  for (const char* tool : kAdaptedTools) {
    if (name == tool) return true;
  }
  return false;
}

int RunAdapted(const std::string& tool, const std::vector<std::string>& argv) {
  ShimTrail trail;
  std::string real = FindRealTool(argv[0], trail);
  if (real.empty()) {
    LogError("adapt: no '" + tool + "' in PATH besides jobbridge's own shim; install it " +
             "or check PATH");
    return 127;
  }
  if (tool == "cargo" && !UnderDaemon()) return Exec(real, argv, trail);
  // A step's top-level tool pays for the slot it runs its first job on.
  if (std::string err; !TakeImplicitSlot(tool, &err)) {
    LogError(err);
    return 1;
  }
  Form form = FormFor(tool);
  OpenedFifos fifos;
  PoolNames given;
  int jobs = 0;
  for (const char* variable : {"MAKEFLAGS", "MFLAGS"}) {  // what make, ninja and gcc read
    const char* value = std::getenv(variable);
    if (!value) continue;
    std::string adapted, err;
    PoolNames names;
    if (!AdaptValue(value, form, &fifos, &adapted, &names, &jobs, &err)) {
      // As make does with a jobserver it cannot use: say so, run the tool.
      LogWarning("adapt: cannot give " + tool + " the jobserver in " + variable + ": " + err +
                 "; running " + tool + " with it unchanged");
      continue;
    }
    if (given.pipe.kind == JobserverAuth::Kind::kNone) given = names;
    setenv(variable, adapted.c_str(), 1);
  }
  if (std::string err; !UseOwnPool(form, argv, &given, &err)) {
    LogWarning("adapt: no pool of its own for " + tool + ": " + err + "; it shares the pool " +
               "it was given");
  }
  AdaptCargoMakeflags(form, given, jobs, tool == "cargo");
  return Exec(real, argv, trail);
}

int AdaptMain(const std::vector<std::string>& args) {
  size_t first = !args.empty() && args[0] == "--" ? 1 : 0;
  if (first >= args.size()) {
    LogError("adapt: no tool given; usage: jobbridge adapt [--] TOOL [ARGS...]");
    return 2;
  }
  std::vector<std::string> argv(args.begin() + static_cast<long>(first), args.end());
  return RunAdapted(std::filesystem::path(argv[0]).filename().string(), argv);
}

namespace {

// The folder the build (and `cmake --install`) puts beside the binary, when
// it holds a link to this very binary for every adapted tool.
std::string InstalledShims(const std::string& self) {
  std::string dir = std::filesystem::path(self).parent_path().string() + "/" + kShimFolderName;
  for (const char* tool : kAdaptedTools) {
    std::error_code error;
    auto real = std::filesystem::canonical(dir + "/" + tool, error);
    if (error || real.string() != self) return "";
  }
  return dir;
}

}  // namespace

bool CreateShims(const std::string& fallback, std::string* dir, std::string* err) {
  std::string self = SelfPath();
  if (self.empty()) {
    *err = "cannot find jobbridge's own binary in /proc/self/exe";
    return false;
  }
  if (*dir = InstalledShims(self); !dir->empty()) return true;
  if (mkdir(fallback.c_str(), 0700) != 0) {
    *err = "cannot create the adapter folder " + fallback + ": " + strerror(errno);
    return false;
  }
  for (const char* tool : kAdaptedTools) {
    std::string link = fallback + "/" + tool;
    if (symlink(self.c_str(), link.c_str()) != 0) {
      *err = "cannot create the adapter " + link + ": " + strerror(errno);
      return false;
    }
  }
  *dir = fallback;
  return true;
}

}  // namespace jobbridge
