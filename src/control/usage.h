// Two readers of the sampler (control/sampler.h): UsageMeter adds up the
// utilisation for -v's exit summary, and ProgressLine keeps one status line
// on a terminal's last row (--progress).
#pragma once

#include <sys/types.h>
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

// The status line of --progress. On a terminal whose size is known it keeps
// the last row for itself: the rows above become the scroll region (DECSTBM),
// so the build's output scrolls there and never runs through the line, and
// the line is drawn on the last row with the cursor saved and restored in
// the same write (DECSC/DECRC). The size is read again at each drawing (the
// terminal's SIGWINCH goes to the command's foreground group, not to
// jobbridge), and a new size reserves the row again. A terminal of unknown
// size (under 3 rows or 10 columns) gets the line redrawn in place instead,
// "\r\e[K", as ninja draws its own.
class ProgressLine {
 public:
  static constexpr uint64_t kRedrawMs = 50;
  ProgressLine() = default;
  ~ProgressLine() { Stop(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Draws on `fd` (the caller checked it is a terminal) from now on, while
  // the terminal's foreground is jobbridge's process group or COMMAND's
  // (`*command_group`, once started; may be null): a jobbridge in the
  // background (`&`, `bg`) leaves the screen to whoever has it.
  void Start(uv_loop_t* loop, int fd, Sampler* sampler, const pid_t* command_group);
  // Clears the line, gives the last row back and closes the timer. Idempotent.
  void Stop();
  // Gives the terminal back whole while jobbridge is stopped (Ctrl-Z): the
  // shell prints there. The next drawing takes the row again.
  void Suspend() { Release(false); }
  // The line for `sample`, `elapsed_ms` after the start (no escapes).
  static std::string Text(const BudgetSample& sample, uint64_t elapsed_ms);
  // The bytes that draw `text` on the last of `rows` rows of `cols`
  // columns, leaving the cursor where it was.
  static std::string OnLastRow(const std::string& text, int rows, int cols);

 private:
  static void OnTimer(uv_timer_t* timer);
  void Draw();
  bool Foreground() const;
  // Writes all of `bytes` (a short write, EAGAIN on a non-blocking terminal:
  // the rest follows). If the terminal will not take them, the cursor is
  // restored at least, so that it is never left on the reserved row.
  void Write(const std::string& bytes);
  void Reserve();  // the last row, at the size read now
  // Clears the line and resets the scroll region (`resized`: the terminal
  // has moved its rows since the line was drawn).
  void Release(bool resized);

  uv_loop_t* loop_ = nullptr;
  int fd_ = -1;
  const pid_t* command_group_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  uint64_t start_ms_ = 0;
  uint64_t drawn_ms_ = 0;
  BudgetSample last_;
  bool drawn_ = false;  // in place: a line is on the screen
  int rows_ = 0;        // reserved: the terminal's size then (0: not reserved)
  int cols_ = 0;
  bool changed_ = false;  // a sample came since the last drawing
  bool sampled_ = false;
};

}  // namespace jobbridge
