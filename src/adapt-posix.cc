#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "adapt.h"
#include "core/makeflags.h"
#include "log.h"
#include "outer_budget.h"
#include "util/c_strings.h"
#include "util/eintr.h"

extern char** environ;

namespace jobbridge {

namespace {

enum class Form { kPipe, kFifo };

Form FormFor(const std::string& tool) { return tool == "ninja" ? Form::kFifo : Form::kPipe; }

std::string SelfPath() {
  std::error_code error;
  return std::filesystem::read_symlink("/proc/self/exe", error).string();
}

// Finds `name` in PATH, skipping anything that is jobbridge itself (its own
// shims, or those of a jobbridge further out). "" when none.
std::string FindRealTool(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string self = SelfPath();
  const char* path = std::getenv("PATH");
  std::string rest = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find(':', start);
    if (end == std::string::npos) end = rest.size();
    std::string folder = rest.substr(start, end - start);
    start = end + 1;
    std::string candidate = (folder.empty() ? "." : folder) + "/" + name;
    if (access(candidate.c_str(), X_OK) != 0) continue;
    std::error_code error;
    auto real = std::filesystem::canonical(candidate, error);
    if (error || real.string() == self) continue;
    return candidate;
  }
  return "";
}

// The jobserver in `form`, reaching the same pool as `auth`. Opens fds for a
// FIFO turned into R,W (not close-on-exec: they are for the tool). Returns
// false and sets *err when that cannot be done.
bool Convert(const JobserverAuth& auth, Form form, JobserverAuth* out, std::string* err) {
  if (form == Form::kFifo && auth.kind == JobserverAuth::Kind::kPipe) {
    // ninja opens the path for reading and writing. An inherited pipe has a
    // path of its own in /proc, and it is a real FIFO to stat(): opening it
    // opens the same pipe. (With jobbridge's two pipes ninja then writes its
    // tokens back into the token pipe, which keeps the budget; only the
    // broker's sharing of returned tokens is bypassed.) The fds are checked
    // as a joining jobbridge checks them: a recipe without '+' closes them.
    if (!CheckLegacyJobserver(auth, err)) return false;
    *out = {JobserverAuth::Kind::kFifo, -1, -1, "/proc/self/fd/" + std::to_string(auth.read_fd)};
    return true;
  }
  if (form == Form::kPipe && auth.kind == JobserverAuth::Kind::kFifo) {
    // make 4.3 wants two fds: one read-write description of the FIFO serves
    // as both (O_RDWR: opening never waits for a writer).
    int fd = RetryOnEintr([&] { return open(auth.fifo_path.c_str(), O_RDWR); });
    if (fd < 0) {
      *err = "cannot open the jobserver FIFO " + auth.fifo_path + ": " + strerror(errno);
      return false;
    }
    *out = {JobserverAuth::Kind::kPipe, fd, fd, ""};
    return true;
  }
  *out = auth;
  return true;
}

// Rewrites one variable's value in place: every jobserver word becomes
// --jobserver-auth= in the tool's form; every other word stays.
bool AdaptValue(const std::string& value, Form form, std::string* adapted, std::string* err) {
  Makeflags flags;
  if (!ParseMakeflags(value, &flags, err)) return false;
  auto kind = flags.auth.kind;
  if (kind != JobserverAuth::Kind::kPipe && kind != JobserverAuth::Kind::kFifo) {
    *adapted = value;  // no jobserver, or make's "-2,-2": nothing to adapt
    return true;
  }
  JobserverAuth converted;
  if (!Convert(flags.auth, form, &converted, err)) return false;
  *adapted = WithJobserver(flags.words, converted);
  return true;
}

}  // namespace

bool IsAdaptedTool(const std::string& name) {
  for (const char* tool : kAdaptedTools) {
    if (name == tool) return true;
  }
  return false;
}

int RunAdapted(const std::string& tool, const std::vector<std::string>& argv) {
  std::string real = FindRealTool(argv[0]);
  if (real.empty()) {
    LogError("adapt: no '" + argv[0] + "' in PATH besides jobbridge's own shim; install it " +
             "or check PATH");
    return 127;
  }
  Form form = FormFor(tool);
  // A FIFO opened for one variable serves the others too: convert once.
  std::string cache_in, cache_out;
  for (const char* variable : kMakeflagsVariables) {
    const char* value = std::getenv(variable);
    if (!value) continue;
    std::string adapted, err;
    if (value == cache_in) {
      adapted = cache_out;
    } else if (!AdaptValue(value, form, &adapted, &err)) {
      // As make does with a jobserver it cannot use: say so, run the tool.
      LogWarning("adapt: cannot give " + tool + " the jobserver in " + variable + ": " + err +
                 "; running " + tool + " with it unchanged");
      adapted = value;
    }
    cache_in = value;
    cache_out = adapted;
    setenv(variable, adapted.c_str(), 1);
  }
  std::vector<char*> args = CStrings(argv);
  execv(real.c_str(), args.data());
  LogError("adapt: cannot run " + real + ": " + strerror(errno));
  return 126;
}

int AdaptMain(const std::vector<std::string>& args) {
  size_t first = !args.empty() && args[0] == "--" ? 1 : 0;
  if (first >= args.size()) {
    LogError("adapt: no tool given; usage: jobbridge adapt [--] TOOL [ARGS...] (TOOL: make, " +
             std::string("gmake or ninja)"));
    return 2;
  }
  std::vector<std::string> argv(args.begin() + static_cast<long>(first), args.end());
  std::string tool = std::filesystem::path(argv[0]).filename().string();
  if (!IsAdaptedTool(tool)) {
    LogError("adapt: jobbridge knows the jobserver form of make, gmake and ninja, not '" + tool +
             "'");
    return 2;
  }
  return RunAdapted(tool, argv);
}

bool CreateShims(const std::string& dir, std::string* err) {
  std::string self = SelfPath();
  if (self.empty() || mkdir(dir.c_str(), 0700) != 0) {
    *err = "cannot create the adapter folder " + dir + ": " + strerror(errno);
    return false;
  }
  for (const char* tool : kAdaptedTools) {
    std::string link = dir + "/" + tool;
    if (symlink(self.c_str(), link.c_str()) != 0) {
      *err = "cannot create the adapter " + link + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

}  // namespace jobbridge
