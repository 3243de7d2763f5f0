#include "child_env.h"

#include <cstdlib>
#include <string_view>

#include "log.h"

extern char** environ;

namespace jobbridge {

void WarnAboutOuterJobserver(int jobs) {
  // Every variable is checked, since each is replaced for the children.
  for (const char* variable : kMakeflagsVariables) {
    const char* value = std::getenv(variable);
    if (!value) continue;
    Makeflags flags;
    std::string err;
    if (!ParseMakeflags(value, &flags, &err)) {
      LogWarning("ignoring a malformed jobserver in " + std::string(variable) + ": " + err);
      continue;
    }
    auto kind = flags.auth.kind;
    if (kind == JobserverAuth::Kind::kPipe || kind == JobserverAuth::Kind::kFifo) {
      LogWarning("started inside another jobserver (" + std::string(variable) + " has " +
                 FormatAuth(flags.auth) + "); joining an outer budget is not supported yet, " +
                 "so this tree gets its own budget of " + std::to_string(jobs));
      return;
    }
  }
  const char* outer_socket = std::getenv("JOBSERVERV2");
  if (outer_socket && *outer_socket) {
    LogWarning(std::string("started inside another jobserver (JOBSERVERV2 is ") + outer_socket +
               "); joining an outer budget is not supported yet, so this tree gets its own "
               "budget of " +
               std::to_string(jobs));
  }
}

std::vector<std::string> ChildEnvironment(int jobs, const JobserverAuth& auth,
                                          const std::string& socket_path,
                                          const std::string& shim_dir) {
  // A malformed jobserver word was reported already and is dropped with the
  // rest of its kind; -k, variables and the like stay.
  std::vector<std::string> kept;
  if (const char* makeflags = std::getenv("MAKEFLAGS")) {
    kept = WordsWithoutJobserver(SplitMakeflags(makeflags));
  }
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view text(*entry);
    bool replaced =
        text.starts_with("JOBSERVERV2=") || (!shim_dir.empty() && text.starts_with("PATH="));
    for (const char* name : kMakeflagsVariables) {
      replaced |= text.starts_with(std::string(name) + "=");
    }
    if (!replaced) env.emplace_back(text);
  }
  env.push_back("MAKEFLAGS=" + FormatMakeflags(kept, jobs, auth));
  env.push_back("MFLAGS=" + FormatMakeflags({}, jobs, auth));
  env.push_back("CARGO_MAKEFLAGS=" + FormatMakeflags({}, jobs, auth));
  env.push_back("JOBSERVERV2=" + socket_path);
  if (!shim_dir.empty()) {
    const char* path = std::getenv("PATH");
    env.push_back("PATH=" + shim_dir + ":" + (path ? path : "/usr/local/bin:/usr/bin:/bin"));
  }
  return env;
}

}  // namespace jobbridge
