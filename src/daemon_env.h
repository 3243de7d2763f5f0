// What `jobbridge daemon` tells later CI steps (pure: unit-tested in
// tests/daemon_env_test.cc): the variables that name its budget, written in
// the syntax of the shell or CI system that reads them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace jobbridge {

// Names the daemon's runtime folder to the steps: a shim that finds it (and
// not kChargedVariable) is a top-level tool and takes its implicit slot
// (implicit_slot.h); `jobbridge daemon` finds a running daemon through it.
inline constexpr const char* kDaemonVariable = "JOBBRIDGE_DAEMON";

enum class EnvFormat { kSh, kFish, kGithub, kGitlab };

// "sh", "fish", "github", "gitlab". False with *err naming the choices.
bool ParseEnvFormat(const std::string& text, EnvFormat* format, std::string* err);

// A duration: a number of seconds, or a number with a unit (ms, s, m, h):
// "90", "1.5s", "10m". At least 1 ms, at most 30 days. False with *err.
bool ParseDuration(const std::string& text, int64_t* ms, std::string* err);

// Where the daemon's budget is, as found once it serves.
struct DaemonPlaces {
  int jobs = 0;
  std::string fifo;     // the legacy pool
  std::string socket;   // JOBSERVERV2
  std::string robust;   // ROBUST_JOBSERVER's value, "" when not offered
  std::string pools;    // the pools socket, "" when none
  std::string control;  // the control socket, "" when none
  std::string runtime;  // the runtime folder
  std::string shims;    // the shim folder, put first in PATH; "" when none
};

// NAME=VALUE for each variable the steps need; PATH is left out (it is the
// shim folder put first, which each format writes its own way).
std::vector<std::string> DaemonVariables(const DaemonPlaces& places);

// Every name DaemonVariables may set, and of those the ones `variables`
// does not set: a shell that evaluated an earlier daemon's text must drop
// them (a daemon may offer no semaphore, or no pools).
inline constexpr const char* kDaemonVariableNames[] = {
    "MAKEFLAGS",       "MFLAGS",           "CARGO_MAKEFLAGS", "JOBBRIDGE_CARGO_MAKEFLAGS",
    "JOBSERVERV2",     "ROBUST_JOBSERVER", "JOBBRIDGE_POOLS", "JOBBRIDGE_CONTROL",
    "JOBBRIDGE_DAEMON"};
std::vector<std::string> NamesNotSet(const std::vector<std::string>& variables);

// The text `eval` (sh, gitlab: POSIX sh; fish: `eval (...)`) runs to unset
// `unset` (names), set `variables` (NAME=VALUE) and put `path_first` first
// in PATH (none when "").
std::string ShellText(EnvFormat format, const std::vector<std::string>& variables,
                      const std::string& path_first, const std::vector<std::string>& unset = {});

// Lines for GitHub Actions' $GITHUB_ENV file (NAME=VALUE, or the
// NAME<<DELIMITER form for a value with a newline), and for $GITHUB_PATH.
std::string GithubEnvText(const std::vector<std::string>& variables);
std::string GithubPathText(const std::string& path_first);

// The daemon's message to the process that started it, also kept as
// kDaemonEnvFile in its runtime folder for a second `jobbridge daemon`:
// "ready", the shim folder, each NAME=VALUE and "end", each ended by a NUL.
inline constexpr const char* kDaemonEnvFile = "daemon.env";
inline constexpr const char* kDaemonLogFile = "daemon.log";
std::string EncodeDaemonEnv(const std::string& path_first,
                            const std::vector<std::string>& variables);
// False when `text` is not such a message (cut short: the daemon died).
bool DecodeDaemonEnv(const std::string& text, std::string* path_first,
                     std::vector<std::string>* variables);

// `value` quoted for POSIX sh ('...', a ' as '\'') or fish ('...', \' and \\).
std::string ShQuote(const std::string& value);
std::string FishQuote(const std::string& value);

}  // namespace jobbridge
