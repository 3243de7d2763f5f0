// Reading and writing the GNU make jobserver as it travels in MAKEFLAGS.
//
// Pure string work (no getenv, no fds): the caller hands in the variables.
// The forms and rules are the ones in docs/ARCHITECTURE.md ("MAKEFLAGS"):
// --jobserver-auth=R,W, --jobserver-fds=R,W, --jobserver-auth=fifo:PATH, the
// last jobserver word wins, negative fds mean "no jobserver", and a first
// word of single-letter flags ("kn", or "-kn" in MFLAGS) with an 'n' means a
// dry run.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace jobbridge {

struct JobserverAuth {
  enum class Kind {
    kNone,      // no jobserver word at all
    kDisabled,  // a jobserver word with negative fds (make 4.4's "-2,-2")
    kPipe,      // R,W: two inherited fds
    kFifo,      // fifo:PATH
  };
  Kind kind = Kind::kNone;
  int read_fd = -1;
  int write_fd = -1;
  std::string fifo_path;

  bool operator==(const JobserverAuth&) const = default;
};

struct Makeflags {
  std::vector<std::string> words;  // as written, escapes kept
  // What ninja and jobserver-rs read: the last --jobserver-auth= or
  // --jobserver-fds= word.
  JobserverAuth auth;
  // What make reads: the last of those and of --jobserver-a=, which make's
  // getopt takes as an abbreviation of --jobserver-auth= (see JobserverWords).
  JobserverAuth make_auth;
  bool dry_run = false;
  std::optional<int> jobs;  // from -jN / --jobs=N; 0 for a bare -j
};

// Parses one MAKEFLAGS/MFLAGS/CARGO_MAKEFLAGS value. Returns false and sets
// *err (naming the bad word) when a jobserver word is malformed.
bool ParseMakeflags(std::string_view text, Makeflags* out, std::string* err);

// The variable a jobserver-rs client (cargo, rustc, cc-rs) reads: the first of
// CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set, even when it is empty.
struct MakeflagsSource {
  std::string variable;
  std::string value;
};
using GetEnvFn = std::function<const char*(const char* name)>;
std::optional<MakeflagsSource> SelectMakeflags(const GetEnvFn& getenv_fn);

// The variables a bridge must set (or clear) together.
inline constexpr const char* kMakeflagsVariables[] = {"CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"};

// The words of a MAKEFLAGS value, escapes kept; never fails.
std::vector<std::string> SplitMakeflags(std::string_view text);

// `words` without anything that speaks of parallelism: -j, -jN, --jobs[=N],
// and every --jobserver-auth= / --jobserver-fds= / --jobserver-a= word.
std::vector<std::string> WordsWithoutJobserver(const std::vector<std::string>& words);

// One pool as jobbridge names it to a tree: by two fds (`pipe`, kind kPipe),
// by a path (`fifo`, kind kFifo), or by both (two names of the same pool).
struct PoolNames {
  JobserverAuth pipe;
  JobserverAuth fifo;
};

// The jobserver words that name `names` to every client at once. With one
// name, its --jobserver-auth= word. With both,
//   --jobserver-auth=R,W --jobserver-auth=fifo:PATH --jobserver-a=R,W
// because the clients read different words (docs/ARCHITECTURE.md, "Legacy
// forms"): gcc's lto-wrapper the first --jobserver-auth= (R,W), ninja and
// jobserver-rs the last --jobserver-auth= (fifo), make the last of
// --jobserver-auth=, --jobserver-fds= and --jobserver-a= (R,W; make 4.3 takes
// fifo: as a fatal error). Empty when `names` holds neither.
std::vector<std::string> JobserverWords(const PoolNames& names);

// `words` with the first jobserver word (--jobserver-auth=, --jobserver-fds=,
// --jobserver-a=) replaced by `jobserver_words` and the other jobserver words
// dropped; every other word stays where it was. What an adapter hands a tool
// that needs another form.
std::string WithJobserver(const std::vector<std::string>& words,
                          const std::vector<std::string>& jobserver_words);
// The same with the one word that names `auth`.
std::string WithJobserver(const std::vector<std::string>& words, const JobserverAuth& auth);

// "R,W" or "fifo:PATH" (PATH must not contain whitespace or backslashes).
std::string FormatAuth(const JobserverAuth& auth);

// A MAKEFLAGS value: `kept` (the user's other words, in order) followed by
// "-jN --jobserver-auth=..." (a bare "-j" when `jobs` is 0: the budget is not
// known). Variable assignments after a "--" word stay last.
std::string FormatMakeflags(const std::vector<std::string>& kept, int jobs,
                            const JobserverAuth& auth);
// The same with every name in `names` (JobserverWords).
std::string FormatMakeflagsForPool(const std::vector<std::string>& kept, int jobs,
                                   const PoolNames& names);

}  // namespace jobbridge
