#include "child_env.h"

#include <cstdlib>
#include <string_view>

extern char** environ;

namespace jobbridge {

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
