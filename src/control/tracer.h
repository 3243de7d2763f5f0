// --trace FILE: the budget as a Chrome trace-event timeline (the JSON object
// format that Perfetto and chrome://tracing open; docs/CONTROL.md, "The
// trace"): counter tracks of slots in use, idle and waiting per side and of
// the budget, one complete slice ("X", written when the slot comes back)
// per slot on a track per holder (a process: its pid and command line; a
// shared pool; the semaphore), an async "wait" slice while a holder waits,
// and instant events for tokens reclaimed, surplus dropped and resizes.
//
// Written as it happens (a build may run for hours): in batches, every
// kFlushMs or each kFlushBytes, at the end of a turn of the loop. Close
// writes the end of the JSON, so the file is valid whenever jobbridge ends
// by itself or by SIGINT/SIGTERM (they end COMMAND, then jobbridge closes
// the trace); only a SIGKILL leaves it cut short (jobbridge report reads
// such a trace as far as it goes).
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
  // Closes the flush timer (freed in its close callback); call it while the
  // loop runs. Idempotent.
  void Stop();
  // Ends every open slice, writes the end of the JSON and closes the file.
  // False with *err when a write failed (said once, when it happened).
  bool Close(std::string* err);

 private:
  explicit Tracer(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  uint64_t Now() const;
  // The track of `owner`'s slots: one per process (a socket client's
  // connections share it), else one per owner. Named when first used.
  int TrackOf(Owner owner);
  const std::string& CommandLine(pid_t pid);  // cached: a client reconnects often
  void Emit(nlohmann::json event);
  void EmitRaw(std::string_view event);  // one event, already JSON
  void EmitSlice(int tid, uint64_t start, uint64_t end, const char* side);
  void OnHeld(Owner owner, int held);
  void Sample(const BudgetSample& sample);
  void Flush();

  UniqueFd fd_;
  std::string path_;
  Sources sources_;
  static constexpr uint64_t kFlushMs = 100;
  static constexpr size_t kFlushBytes = 64 * 1024;
  uint64_t start_ns_ = 0;
  uint64_t flushed_ms_ = 0;            // uv_now() of the last write
  uv_timer_t* flush_timer_ = nullptr;  // freed in its close callback
  std::string buffer_;                 // events of this turn, not written yet
  bool first_ = true;
  bool started_ = false;
  bool failed_ = false;
  bool closed_ = false;
  struct Held {
    int tid = 0;
    std::vector<uint64_t> starts;  // of the slots it holds, oldest first
  };
  struct Wait {
    int tid = 0;
    uint64_t id = 0;
  };
  void EmitWait(char ph, const Wait& wait, uint64_t now);
  std::map<Owner, Held> open_;                     // owners holding slots (dropped at 0)
  std::map<Owner, Wait> waiting_;                  // owners with a wait open
  std::map<std::pair<int, int64_t>, int> tracks_;  // (kind, pid or id) -> tid
  std::map<pid_t, std::string> command_lines_;
  uint64_t next_wait_id_ = 1;
  std::array<int, 5> last_in_use_{}, last_idle_{}, last_waiting_{};
  bool sampled_ = false;
};

}  // namespace jobbridge
