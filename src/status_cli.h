// `jobbridge status [--json] [--watch] [--pid PID | --socket PATH]`: asks a
// running jobbridge's control socket (docs/CONTROL.md) for its status and
// holders and prints them as a table (or JSON); --watch redraws in place.
// `jobbridge resize N` asks it to change its budget.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "util/unique_fd.h"

namespace jobbridge {

struct StatusOptions {
  bool json = false;
  bool watch = false;
  bool help = false;
  int pid = 0;              // find the jobbridge with this pid
  std::string socket;       // or this control socket
  double interval_s = 1.0;  // between redraws with --watch
};

// Parses the words after "status" (or the --pid and --socket of another
// `command`, named in the messages). Returns false and sets *err to a
// one-line message, "COMMAND: ...", that names the fix.
bool ParseStatusCommandLine(const std::vector<std::string>& args, StatusOptions* options,
                            std::string* err, const std::string& command = "status");
std::string StatusUsageText();

// Where to ask: --socket, --pid, else the tree's JOBBRIDGE_CONTROL. False
// with *err saying how to name one.
bool FindControlSocket(const StatusOptions& options, std::string* path, std::string* err);

// A control connection kept open after Exchange: what was read past the
// replies stays in `pending`, for ReadReplyLine.
struct ControlConnection {
  UniqueFd fd;
  std::string pending;
};

// Sends `requests` (one line each) on a new connection to the control socket
// `path` and reads a reply per request (each must speak kControlVersion);
// false with *err (naming the socket) when one cannot be had. A reply that
// is not ok is returned as it is, for the caller to report. *gone (may be
// null): the jobbridge has ended (nothing listens, or it closed the
// connection). `keep` (may be null) keeps the connection for more lines.
bool Exchange(const std::string& path, const std::vector<nlohmann::json>& requests,
              std::vector<nlohmann::json>* replies, std::string* err, bool* gone = nullptr,
              ControlConnection* keep = nullptr);

// One reply line from a control socket within `timeout_ms` (the rest of
// what was read stays in *pending); false with *err saying why not.
bool ReadReplyLine(int fd, int64_t timeout_ms, std::string* pending, std::string* line,
                   std::string* err);

// The table: the budget and each side's slots, then holders by slots and
// age, then waiters. `status` and `holders` are the replies' bodies.
std::string FormatStatusTable(const nlohmann::json& status, const nlohmann::json& holders);

// Runs the command: 0, or 1 when no jobbridge answers (the message says how
// to name one), 2 for a bad command line.
int StatusMain(const std::vector<std::string>& args);

// `jobbridge resize N [--pid PID | --socket PATH]`: 0 when resized, 1 when
// refused or no jobbridge answers, 2 for a bad command line.
int ResizeMain(const std::vector<std::string>& args);
std::string ResizeUsageText();

}  // namespace jobbridge
