// What the control socket's "status" and "holders" replies say
// (docs/CONTROL.md): read on request from the ledger and the broker, never
// on the token path. It stamps when each owner began to hold slots (the
// ledger's observer), which the ledger, being pure, does not keep.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "broker.h"
#include "control/control_server.h"
#include "control/sides.h"
#include "core/ledger.h"

namespace jobbridge {

class BudgetView : public ControlServer::Delegate {
 public:
  struct Sources {
    uv_loop_t* loop = nullptr;
    Ledger* ledger = nullptr;
    Broker* broker = nullptr;        // null when joined: a relay serves the tree
    std::string joined;              // the outer budget, described; "" for a root
    bool daemon = false;             // `jobbridge daemon`: no command
    std::function<pid_t()> command;  // COMMAND's pid, -1 before it started
    // Ends COMMAND's tree as SIGTERM would, or stops a daemon (ControlServer::
    // Delegate::Stop).
    std::function<bool(int64_t timeout_ms)> stop;
    std::function<void(int)> resized;  // after a resize (the trace), may be empty
    std::function<bool()> stopping;    // a daemon that stops; may be empty
  };

  // Takes the ledger's observer. All sources must outlive it.
  explicit BudgetView(Sources sources);

  nlohmann::json Status() override;
  nlohmann::json Holders() override;
  bool Resize(int jobs, nlohmann::json* body, std::string* err) override;
  bool Stop(int64_t timeout_ms) override { return sources_.stop(timeout_ms); }

 private:
  // Milliseconds since the epoch of a uv_now() stamp.
  int64_t EpochMs(uint64_t loop_ms) const;

  Sources sources_;
  int64_t epoch_minus_loop_ms_ = 0;
  std::map<Owner, uint64_t> held_since_;  // uv_now() when each began to hold
};

// A process's command line from /proc (arguments joined by spaces, cut at
// 200 characters), or "" when it cannot be read.
std::string CommandLineOf(pid_t pid);

}  // namespace jobbridge
