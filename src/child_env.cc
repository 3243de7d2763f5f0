#include "child_env.h"

#include <cstdlib>
#include <string_view>

#include "control/control_server.h"
#include "pool_client.h"

extern char** environ;

namespace jobbridge {

std::vector<std::string> ChildEnvironment(int jobs, const PoolNames& names,
                                          const std::string& socket_path,
                                          const std::optional<std::string>& robust,
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
    replaced |= text.starts_with(std::string(kCargoMakeflagsMark) + "=");
    // An outer root's pool server: tools below a nested jobbridge take from
    // its pool, and the bridge names its own server when it has one.
    replaced |= text.starts_with(std::string(kPoolsVariable) + "=");
    // An outer jobbridge's control socket: the nearest one is named.
    replaced |= text.starts_with(std::string(kControlVariable) + "=");
    replaced |= robust && text.starts_with("ROBUST_JOBSERVER=");
    if (!replaced) env.emplace_back(text);
  }
  env.push_back("MAKEFLAGS=" + FormatMakeflagsForPool(kept, jobs, names));
  env.push_back("MFLAGS=" + FormatMakeflagsForPool({}, jobs, names));
  if (names.fifo.kind == JobserverAuth::Kind::kFifo &&
      names.pipe.kind == JobserverAuth::Kind::kPipe) {
    std::string cargo = FormatMakeflags({}, jobs, names.pipe);
    env.push_back("CARGO_MAKEFLAGS=" + cargo);
    env.push_back(std::string(kCargoMakeflagsMark) + "=" + cargo);
  }
  env.push_back("JOBSERVERV2=" + socket_path);
  if (robust && !robust->empty()) env.push_back("ROBUST_JOBSERVER=" + *robust);
  if (!shim_dir.empty()) {
    const char* path = std::getenv("PATH");
    env.push_back("PATH=" + shim_dir + ":" + (path ? path : "/usr/local/bin:/usr/bin:/bin"));
  }
  return env;
}

}  // namespace jobbridge
