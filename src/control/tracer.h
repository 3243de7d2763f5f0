// --trace FILE: the budget as a Chrome trace-event timeline (the JSON object
// format that Perfetto and chrome://tracing open; docs/CONTROL.md, "The
// trace"): counter tracks of slots in use, idle and waiting per side and of
// the budget, one slice per slot on a track per holder (named with its pid
// and command line), an async "wait" slice per holder while it waits, and
// instant events for tokens reclaimed, surplus dropped and resizes.
//
// Written as it happens (a build may run for hours): what one turn of the
// loop produced is written at the end of that turn. Close writes the end of
// the JSON, so the file is valid whenever jobbridge ends by itself or by
// SIGINT/SIGTERM (they end COMMAND, then jobbridge closes the trace); only a
// SIGKILL leaves it cut short.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "broker.h"
#include "control/sampler.h"
#include "core/ledger.h"
#include "util/unique_fd.h"

namespace jobbridge {

inline constexpr int kTraceVersion = 1;

class Tracer {
 public:
  struct Sources {
    uv_loop_t* loop = nullptr;
    Ledger* ledger = nullptr;
    Broker* broker = nullptr;  // null when joined: slices and counters of the ledger only
    std::function<pid_t()> command;
    Sampler* sampler = nullptr;  // the counters, once a turn
  };

  // Creates (truncates) `path`, mode 0644. Null with *err naming the file
  // and the fault when it cannot.
  static std::unique_ptr<Tracer> Open(const std::string& path, std::string* err);
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Starts listening (the ledger's observer, the broker's hooks). The
  // sources must outlive the tracer.
  void Start(Sources sources);
  // The budget changed (resize).
  void Resized(int jobs);
  // COMMAND started: its track (the implicit slot's) is named after it.
  void CommandStarted(pid_t pid);
  // Ends every open slice, writes the end of the JSON and closes the file.
  // False with *err when a write failed (said once, when it happened).
  bool Close(std::string* err);

 private:
  explicit Tracer(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  uint64_t Now() const;
  int TrackOf(Owner owner);
  void Emit(nlohmann::json event);
  void OnHeld(Owner owner, int held);
  void Sample(const BudgetSample& sample);
  void Flush();

  UniqueFd fd_;
  std::string path_;
  Sources sources_;
  uint64_t start_ns_ = 0;
  std::string buffer_;  // events of this turn, not written yet
  bool first_ = true;
  bool started_ = false;
  bool failed_ = false;
  bool closed_ = false;
  std::map<Owner, int> tracks_;    // owner -> tid
  std::map<Owner, int> held_;      // slices open per owner
  std::map<Owner, bool> waiting_;  // an async wait open per owner
  std::array<int, 5> last_in_use_{}, last_idle_{}, last_waiting_{};
  bool sampled_ = false;
};

}  // namespace jobbridge
