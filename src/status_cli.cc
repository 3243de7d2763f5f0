#include "status_cli.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "control/control_protocol.h"
#include "control/control_server.h"
#include "core/numbers.h"
#include "log.h"
#include "runtime_dir-posix.h"
#include "util/eintr.h"
#include "util/json_fields.h"
#include "util/option_args.h"
#include "util/unix_socket.h"

namespace jobbridge {

namespace {

using json_fields::Bool;
using json_fields::Str;
using nlohmann::json;

constexpr int kReplyTimeoutMs = 5000;
constexpr const char* kSides[] = {"legacy", "socket", "sysvsem", "upstream", "command"};

// Asks for status and holders; false with *err (naming the socket).
// *gone: the jobbridge has ended (nothing listens, or it closed the
// connection), as opposed to any other failure.
bool Ask(const std::string& path, json* status, json* holders, std::string* err, bool* gone) {
  std::vector<json> replies;
  if (!Exchange(path, {{{"request", "status"}}, {{"request", "holders"}}}, &replies, err, gone)) {
    return false;
  }
  for (const json& reply : replies) {
    if (!Bool(reply, "ok")) {
      *err = "the jobbridge at " + path + " refused: " + Str(reply, "error", "?");
      return false;
    }
  }
  *status = replies[0];
  *holders = replies[1];
  return true;
}

int Int(const json& object, const char* key) {
  return static_cast<int>(std::clamp<int64_t>(json_fields::Int(object, key), -(1 << 30), 1 << 30));
}

std::string Seconds(int64_t ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1fs", static_cast<double>(ms) / 1000);
  return text;
}

std::string Row(const json& entry, const char* count_key) {
  char text[64];
  std::string pid = json_fields::Int(entry, "pid", -1) > 0
                        ? std::to_string(json_fields::Int(entry, "pid"))
                        : std::string("-");
  std::snprintf(text, sizeof text, "  %-8s %-9s %5d %8s  ", pid.c_str(), Str(entry, "side").c_str(),
                Int(entry, count_key), Seconds(json_fields::Int(entry, "for_ms")).c_str());
  std::string what = Str(entry, "command");
  if (what.empty()) what = "(" + Str(entry, "note") + ")";
  return text + what + "\n";
}

// Holders (or waiters) sorted by slots, then by how long they held.
std::vector<json> Sorted(const json& list, const char* count_key) {
  std::vector<json> entries;
  if (list.is_array()) entries.assign(list.begin(), list.end());
  std::stable_sort(entries.begin(), entries.end(), [&](const json& a, const json& b) {
    if (Int(a, count_key) != Int(b, count_key)) return Int(a, count_key) > Int(b, count_key);
    return json_fields::Int(a, "for_ms") > json_fields::Int(b, "for_ms");
  });
  return entries;
}

}  // namespace

bool ReadReplyLine(int fd, int64_t timeout_ms, std::string* pending, std::string* line,
                   std::string* err) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t end;
  while ((end = pending->find('\n')) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || RetryOnEintr([&] { return poll(&p, 1, left.count()); }) <= 0) {
      *err = "no reply within " + std::to_string(timeout_ms / 1000) + " s";
      return false;
    }
    char buffer[4096];
    ssize_t n = RetryOnEintr([&] { return read(fd, buffer, sizeof buffer); });
    if (n <= 0) {
      *err = "the jobbridge closed the connection (it ended?)";
      return false;
    }
    pending->append(buffer, static_cast<size_t>(n));
  }
  *line = pending->substr(0, end);
  pending->erase(0, end + 1);
  return true;
}

bool Exchange(const std::string& path, const std::vector<json>& requests,
              std::vector<json>* replies, std::string* err, bool* gone, ControlConnection* keep) {
  UniqueFd fd = ConnectUnix(path);
  if (!fd.valid()) {
    if (gone) *gone = errno == ENOENT || errno == ECONNREFUSED;
    *err = "cannot reach the jobbridge at " + path + ": " + strerror(errno) +
           (errno == ENOENT || errno == ECONNREFUSED ? " (it is not running)" : "");
    return false;
  }
  std::string text;
  for (const json& request : requests) text += request.dump() + "\n";
  if (RetryOnEintr([&] { return send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL); }) !=
      static_cast<ssize_t>(text.size())) {
    *err = "cannot ask the jobbridge at " + path + ": " + strerror(errno);
    return false;
  }
  std::string pending, line;
  replies->clear();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!ReadReplyLine(fd.get(), kReplyTimeoutMs, &pending, &line, err)) {
      if (gone) *gone = err->find("closed the connection") != std::string::npos;
      *err = "the jobbridge at " + path + " did not answer: " + *err;
      return false;
    }
    json reply = json::parse(line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      *err = "the jobbridge at " + path + " answered " + line.substr(0, 200);
      return false;
    }
    if (json_fields::Int(reply, "version", -1) != kControlVersion) {
      *err = "the jobbridge at " + path + " speaks control version " +
             (reply.contains("version") ? reply["version"].dump() : std::string("(none)")) +
             ", this jobbridge " + std::to_string(kControlVersion) +
             " (use the same jobbridge binary)";
      return false;
    }
    replies->push_back(std::move(reply));
  }
  if (keep) *keep = {std::move(fd), std::move(pending)};
  return true;
}

bool FindControlSocket(const StatusOptions& options, std::string* path, std::string* err) {
  if (!options.socket.empty()) {
    *path = options.socket;
    return true;
  }
  if (options.pid != 0) {
    *path = RuntimeDir::ControlSocketOf(options.pid);
    if (path->empty()) {
      *err = "no jobbridge with pid " + std::to_string(options.pid) +
             " has a runtime folder here (it may use another TMPDIR or XDG_RUNTIME_DIR: give " +
             "--socket PATH)";
    }
    return !path->empty();
  }
  const char* named = std::getenv(kControlVariable);
  if (named && *named) {
    *path = named;
    return true;
  }
  *err = std::string(kControlVariable) + " is not set: run jobbridge status inside a " +
         "jobbridge's tree, or name one with --pid PID or --socket PATH";
  return false;
}

bool ParseStatusCommandLine(const std::vector<std::string>& args, StatusOptions* options,
                            std::string* err, const std::string& command) {
  const std::string help = "jobbridge " + command + " --help";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string v;
    auto value = [&](const char* name) -> const std::string* {
      if (OptionValue(args, &i, name, help, &v, err)) return &v;
      *err = command + ": " + *err;
      return nullptr;
    };
    if (arg == "--json") {
      options->json = true;
    } else if (arg == "--watch") {
      options->watch = true;
    } else if (arg == "-h" || arg == "--help") {
      options->help = true;
    } else if (IsOption(arg, "--pid")) {
      const std::string* pid = value("--pid");
      if (!pid) return false;
      int parsed = 0;
      if (!ParseWholeNumber(*pid, &parsed) || parsed <= 0) {
        *err = command + ": --pid " + *pid + " is not a process id";
        return false;
      }
      options->pid = parsed;
    } else if (IsOption(arg, "--socket")) {
      const std::string* path = value("--socket");
      if (!path) return false;
      options->socket = *path;
    } else {
      *err = command + ": unknown argument " + arg + " (see " + help + ")";
      return false;
    }
  }
  if (options->pid != 0 && !options->socket.empty()) {
    *err = command + ": give --pid or --socket, not both";
    return false;
  }
  return true;
}

std::string StatusUsageText() {
  return "usage: jobbridge status [--json] [--watch] [--pid PID | --socket PATH]\n"
         "Shows a running jobbridge's budget, who holds its slots and who waits.\n"
         "  --json         one JSON object: {\"status\": ..., \"holders\": ...} (docs/CONTROL.md)\n"
         "  --watch        redraw every second, like top (Ctrl-C ends it)\n"
         "  --pid PID      the jobbridge with this pid (default: the one whose tree this is,\n"
         "                 named by $JOBBRIDGE_CONTROL)\n"
         "  --socket PATH  the control socket at PATH\n";
}

std::string FormatStatusTable(const json& status, const json& holders) {
  std::string out;
  const json& in_use = json_fields::Obj(status, "in_use");
  const json& idle = json_fields::Obj(status, "idle");
  const json& waiting = json_fields::Obj(status, "waiting");
  int used = 0, idled = 0, waits = 0;
  for (const char* side : kSides) {
    used += Int(in_use, side);
    idled += Int(idle, side);
    waits += Int(waiting, side);
  }
  std::string budget = json_fields::Int(status, "budget", -1) > 0
                           ? std::to_string(Int(status, "budget"))
                           : std::string("of the outer budget");
  out += "budget " + budget;
  std::string joined = Str(status, "joined");
  out += !joined.empty()          ? " (joined " + joined + ")"
         : Bool(status, "daemon") ? " (daemon)"
                                  : " (root)";
  out += ": " + std::to_string(used) + " in use, " + std::to_string(idled) + " idle";
  if (status.is_object() && status.contains("free") && status["free"].is_number()) {
    out += ", " + std::to_string(Int(status, "free")) + " free";
  }
  out += ", " + std::to_string(waits) + " waiting\n";
  out += "reclaimed " + std::to_string(Int(status, "reclaimed")) + ", surplus dropped " +
         std::to_string(Int(status, "surplus")) + "\n\n";
  char line[80];
  std::snprintf(line, sizeof line, "  %-9s %6s %6s %8s\n", "side", "in use", "idle", "waiting");
  out += line;
  for (const char* side : kSides) {
    std::snprintf(line, sizeof line, "  %-9s %6d %6d %8d\n", side, Int(in_use, side),
                  Int(idle, side), Int(waiting, side));
    out += line;
  }
  std::snprintf(line, sizeof line, "\n  %-8s %-9s %5s %8s  %s\n", "PID", "SIDE", "SLOTS", "FOR",
                "COMMAND");
  out += "holders:" + std::string(line);
  const json empty = json::array();
  auto list = [&](const char* key) -> const json& {
    auto it = holders.is_object() ? holders.find(key) : holders.end();
    return it != holders.end() && it->is_array() ? *it : empty;
  };
  for (const json& entry : Sorted(list("holders"), "slots")) {
    out += Row(entry, "slots");
  }
  std::vector<json> waiters = Sorted(list("waiters"), "requests");
  if (!waiters.empty()) {
    std::snprintf(line, sizeof line, "\n  %-8s %-9s %5s %8s  %s\n", "PID", "SIDE", "ASKS", "FOR",
                  "COMMAND");
    out += "waiters:" + std::string(line);
    for (const json& entry : waiters) out += Row(entry, "requests");
  }
  return out;
}

int StatusMain(const std::vector<std::string>& args) {
  StatusOptions options;
  std::string err, path;
  if (!ParseStatusCommandLine(args, &options, &err)) {
    LogError(err);
    return 2;
  }
  if (options.help) {
    std::fputs(StatusUsageText().c_str(), stdout);
    return 0;
  }
  if (!FindControlSocket(options, &path, &err)) {
    LogError(err);
    return 1;
  }
  for (bool first = true;; first = false) {
    json status, holders;
    bool gone = false;
    if (!Ask(path, &status, &holders, &err, &gone)) {
      if (!first && gone) return 0;  // watched to its end
      LogError(err);
      return 1;
    }
    for (json* reply : {&status, &holders}) {
      reply->erase("ok");
      reply->erase("version");
    }
    std::string text =
        options.json
            ? json{{"version", kControlVersion}, {"status", status}, {"holders", holders}}.dump() +
                  "\n"
            : FormatStatusTable(status, holders);
    // In place, as top redraws: home, the text, then clear what is left.
    if (options.watch && !options.json) text = "\033[H" + text + "\033[J";
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    if (!options.watch) return 0;
    std::this_thread::sleep_for(std::chrono::duration<double>(options.interval_s));
  }
}

int ResizeMain(const std::vector<std::string>& args) {
  StatusOptions options;
  std::string err, path;
  // The options first (--pid and --socket take the next word), then
  // exactly one more word: N.
  std::vector<std::string> rest, positional;
  for (size_t i = 0; i < args.size(); ++i) {
    rest.push_back(args[i]);
    if ((args[i] == "--pid" || args[i] == "--socket") && i + 1 < args.size()) {
      rest.push_back(args[++i]);
    } else if (!args[i].starts_with("-")) {
      rest.pop_back();
      positional.push_back(args[i]);
    }
  }
  int jobs = 0;
  if (positional.size() > 1) {
    LogError("resize: give one budget N, not " + std::to_string(positional.size()) +
             " words (jobbridge resize N [--pid PID | --socket PATH])");
    return 2;
  }
  if (positional.size() == 1 && (!ParseWholeNumber(positional[0], &jobs) || jobs <= 0)) {
    LogError("resize: " + positional[0] + " is not a budget: give a whole number from 1");
    return 2;
  }
  if (!ParseStatusCommandLine(rest, &options, &err, "resize") || options.json || options.watch) {
    LogError(err.empty() ? "resize: only --pid PID or --socket PATH may go with N" : err);
    return 2;
  }
  if (options.help) {
    std::fputs(ResizeUsageText().c_str(), stdout);
    return 0;
  }
  if (jobs <= 0) {
    LogError("resize: give the new budget N, a whole number from 1 (jobbridge resize N)");
    return 2;
  }
  if (!FindControlSocket(options, &path, &err)) {
    LogError(err);
    return 1;
  }
  std::vector<json> replies;
  if (!Exchange(path, {{{"request", "resize"}, {"jobs", jobs}}}, &replies, &err)) {
    LogError(err);
    return 1;
  }
  if (!Bool(replies[0], "ok")) {
    LogError("resize refused: " + Str(replies[0], "error", "?"));
    return 1;
  }
  int withheld = Int(replies[0], "withheld");
  std::printf("budget now %d", jobs);
  if (withheld > 0)
    std::printf(" (%d slot(s) still out beyond it: withheld as they come back)", withheld);
  std::printf("\n");
  return 0;
}

std::string ResizeUsageText() {
  return "usage: jobbridge resize N [--pid PID | --socket PATH]\n"
         "Changes a running jobbridge's budget to N: growing adds slots at once; shrinking\n"
         "withholds slots as they come back until what runs fits (no job is stopped).\n"
         "The jobbridge is found as by jobbridge status.\n";
}

}  // namespace jobbridge
