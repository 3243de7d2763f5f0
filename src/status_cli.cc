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
#include "util/unix_socket.h"

namespace jobbridge {

namespace {

using nlohmann::json;

constexpr int kReplyTimeoutMs = 5000;
constexpr const char* kSides[] = {"legacy", "socket", "sysvsem", "upstream", "command"};

// Where to ask: --socket, --pid, else the tree's JOBBRIDGE_CONTROL.
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

// One reply line, within kReplyTimeoutMs; false with *err otherwise.
bool ReadLine(int fd, std::string* pending, std::string* line, std::string* err) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kReplyTimeoutMs);
  size_t end;
  while ((end = pending->find('\n')) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || RetryOnEintr([&] { return poll(&p, 1, left.count()); }) <= 0) {
      *err = "no reply within " + std::to_string(kReplyTimeoutMs / 1000) + " s";
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

// Sends `requests` (one line each) and reads a reply per request; false
// with *err (naming the socket) when one cannot be had. A reply that is not
// ok is returned as it is, for the caller to report.
bool Exchange(const std::string& path, const std::vector<json>& requests,
              std::vector<json>* replies, std::string* err) {
  UniqueFd fd = ConnectUnix(path);
  if (!fd.valid()) {
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
    if (!ReadLine(fd.get(), &pending, &line, err)) {
      *err = "the jobbridge at " + path + " did not answer: " + *err;
      return false;
    }
    json reply = json::parse(line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      *err = "the jobbridge at " + path + " answered " + line.substr(0, 200);
      return false;
    }
    if (reply.value("version", 0) != kControlVersion) {
      *err = "the jobbridge at " + path + " speaks control version " +
             reply.value("version", json(nullptr)).dump() + ", this jobbridge " +
             std::to_string(kControlVersion) + " (use the same jobbridge binary)";
      return false;
    }
    replies->push_back(std::move(reply));
  }
  return true;
}

// Asks for status and holders; false with *err (naming the socket).
bool Ask(const std::string& path, json* status, json* holders, std::string* err) {
  std::vector<json> replies;
  if (!Exchange(path, {{{"request", "status"}}, {{"request", "holders"}}}, &replies, err)) {
    return false;
  }
  for (const json& reply : replies) {
    if (!reply.value("ok", false)) {
      *err = "the jobbridge at " + path + " refused: " + reply.value("error", std::string("?"));
      return false;
    }
  }
  *status = replies[0];
  *holders = replies[1];
  return true;
}

int Int(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<int>() : 0;
}

std::string Seconds(int64_t ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1fs", static_cast<double>(ms) / 1000);
  return text;
}

std::string Row(const json& entry, const char* count_key) {
  char text[64];
  std::string pid = entry.value("pid", json(nullptr)).is_number()
                        ? std::to_string(entry["pid"].get<int>())
                        : std::string("-");
  std::snprintf(text, sizeof text, "  %-8s %-9s %5d %8s  ", pid.c_str(),
                entry.value("side", "").c_str(), Int(entry, count_key),
                Seconds(entry.value("for_ms", 0)).c_str());
  std::string what = entry.value("command", "");
  if (what.empty()) what = "(" + entry.value("note", "") + ")";
  return text + what + "\n";
}

// Holders (or waiters) sorted by slots, then by how long they held.
std::vector<json> Sorted(const json& list, const char* count_key) {
  std::vector<json> entries;
  if (list.is_array()) entries.assign(list.begin(), list.end());
  std::stable_sort(entries.begin(), entries.end(), [&](const json& a, const json& b) {
    if (Int(a, count_key) != Int(b, count_key)) return Int(a, count_key) > Int(b, count_key);
    return a.value("for_ms", 0) > b.value("for_ms", 0);
  });
  return entries;
}

}  // namespace

bool ParseStatusCommandLine(const std::vector<std::string>& args, StatusOptions* options,
                            std::string* err) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&](const char* name) -> const std::string* {
      if (i + 1 < args.size()) return &args[++i];
      *err = std::string("status: ") + name + " needs a value (see jobbridge status --help)";
      return nullptr;
    };
    if (arg == "--json") {
      options->json = true;
    } else if (arg == "--watch") {
      options->watch = true;
    } else if (arg == "-h" || arg == "--help") {
      options->help = true;
    } else if (arg == "--pid") {
      const std::string* pid = value("--pid");
      if (!pid) return false;
      int parsed = 0;
      if (!ParseWholeNumber(*pid, &parsed) || parsed <= 0) {
        *err = "status: --pid " + *pid + " is not a process id";
        return false;
      }
      options->pid = parsed;
    } else if (arg == "--socket") {
      const std::string* path = value("--socket");
      if (!path) return false;
      options->socket = *path;
    } else {
      *err = "status: unknown argument " + arg + " (see jobbridge status --help)";
      return false;
    }
  }
  if (options->pid != 0 && !options->socket.empty()) {
    *err = "status: give --pid or --socket, not both";
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
  const json none = json::object();
  const json& in_use = status.contains("in_use") ? status["in_use"] : none;
  const json& idle = status.contains("idle") ? status["idle"] : none;
  const json& waiting = status.contains("waiting") ? status["waiting"] : none;
  int used = 0, idled = 0, waits = 0;
  for (const char* side : kSides) {
    used += Int(in_use, side);
    idled += Int(idle, side);
    waits += Int(waiting, side);
  }
  std::string budget = status.value("budget", json(nullptr)).is_number()
                           ? std::to_string(status["budget"].get<int>())
                           : std::string("of the outer budget");
  out += "budget " + budget;
  std::string joined = status.value("joined", json(nullptr)).is_string()
                           ? status["joined"].get<std::string>()
                           : std::string();
  out += joined.empty() ? " (root)" : " (joined " + joined + ")";
  out += ": " + std::to_string(used) + " in use, " + std::to_string(idled) + " idle";
  if (status.value("free", json(nullptr)).is_number()) {
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
  for (const json& entry : Sorted(holders.value("holders", json::array()), "slots")) {
    out += Row(entry, "slots");
  }
  std::vector<json> waiters = Sorted(holders.value("waiters", json::array()), "requests");
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
    if (!Ask(path, &status, &holders, &err)) {
      if (!first) return 0;  // watched to its end
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
  std::vector<std::string> rest;
  int jobs = 0;
  for (const std::string& arg : args) {
    int parsed = 0;
    if (jobs == 0 && ParseWholeNumber(arg, &parsed)) {
      jobs = parsed;
    } else {
      rest.push_back(arg);
    }
  }
  if (!ParseStatusCommandLine(rest, &options, &err) || options.json || options.watch) {
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
  if (!replies[0].value("ok", false)) {
    LogError("resize refused: " + replies[0].value("error", std::string("?")));
    return 1;
  }
  int withheld = replies[0].value("withheld", 0);
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
