// Reads the broker's places (Broker::Places) once per turn of the loop in
// which the broker acted (joined, with no broker: in which the ledger
// changed), and hands the totals per side to whoever listens:
// the trace's counters, the exit summary's utilisation, --progress. The
// broker calls back after every pass of its policy (Broker::Hooks); the
// reading waits for the end of the turn (a uv_check), so a burst of events
// costs one reading.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "broker.h"
#include "control/sides.h"
#include "core/ledger.h"

namespace jobbridge {

struct BudgetSample {
  uint64_t now_ms = 0;  // uv_now()
  int budget = 0;       // 0 when joined: the outer budget's, which it does not say
  int withheld = 0;
  std::array<int, 5> in_use{}, idle{}, waiting{};
  std::vector<Broker::Place> places;
  int total(const std::array<int, 5>& sides) const {
    int sum = 0;
    for (int n : sides) sum += n;
    return sum;
  }
};

class Sampler {
 public:
  using Listener = std::function<void(const BudgetSample&)>;
  using Noted =
      std::function<void(const char* what, int count, pid_t pid, const std::string& command)>;

  Sampler() = default;
  ~Sampler() { Stop(); }
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Takes the broker's hooks; all must outlive the sampler (or its Stop).
  void Start(uv_loop_t* loop, Ledger* ledger, Broker* broker);
  void OnSample(Listener listener) { listeners_.push_back(std::move(listener)); }
  void OnNoted(Noted noted) { noted_.push_back(std::move(noted)); }
  // Reads now (also without the broker having acted), and tells listeners.
  BudgetSample SampleNow();
  // Closes the check handle (freed in its close callback). Idempotent.
  void Stop();

 private:
  static void OnTurnEnd(uv_check_t* check);

  uv_loop_t* loop_ = nullptr;
  Ledger* ledger_ = nullptr;
  Broker* broker_ = nullptr;
  uv_check_t* turn_end_ = nullptr;
  std::vector<Listener> listeners_;
  std::vector<Noted> noted_;
};

}  // namespace jobbridge
