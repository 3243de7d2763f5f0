// Two readers of the sampler (control/sampler.h): UsageMeter adds up the
// utilisation for -v's exit summary, and ProgressLine keeps one status line
// on a terminal (--progress), redrawn in place as ninja and cargo do.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

#include "control/sampler.h"

namespace jobbridge {

class UsageMeter {
 public:
  // The state `sample` shows holds from its time until the next one.
  void Add(const BudgetSample& sample);
  // "utilisation 93.1 % while work waited (4.2 s), 71.0 % over the run;
  // peak 5 waiting; 0 reclaimed, 0 surplus dropped", up to `end_ms`.
  std::string Summary(uint64_t end_ms, int reclaimed, int surplus) const;

  // Slot-seconds in use over slot-seconds of the budget while some request
  // waited (-1: nothing waited), and over the run (-1: no time passed).
  double utilisation_waiting(uint64_t end_ms) const;
  double utilisation_overall(uint64_t end_ms) const;
  int peak_waiting() const { return peak_waiting_; }

 private:
  struct Sums {
    double used_waiting = 0, budget_waiting = 0, used_all = 0, budget_all = 0, waited_s = 0;
  };
  Sums Through(uint64_t end_ms) const;

  bool started_ = false;
  uint64_t last_ms_ = 0;
  int in_use_ = 0, waiting_ = 0, budget_ = 0;
  Sums sums_;
  int peak_waiting_ = 0;
};

class ProgressLine {
 public:
  static constexpr uint64_t kRedrawMs = 50;
  ProgressLine() = default;
  ~ProgressLine() { Stop(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Draws on `fd` (the caller checked it is a terminal) from now on.
  void Start(uv_loop_t* loop, int fd, Sampler* sampler);
  // Clears the line and closes the timer. Idempotent.
  void Stop();
  // The line for `sample`, `elapsed_ms` after the start (no escapes).
  static std::string Text(const BudgetSample& sample, uint64_t elapsed_ms);

 private:
  static void OnTimer(uv_timer_t* timer);
  void Draw();

  uv_loop_t* loop_ = nullptr;
  int fd_ = -1;
  uv_timer_t* timer_ = nullptr;
  uint64_t start_ms_ = 0;
  uint64_t drawn_ms_ = 0;
  BudgetSample last_;
  bool drawn_ = false;
  bool changed_ = false;  // a sample came since the last drawing
  bool sampled_ = false;
};

}  // namespace jobbridge
