#include "control/usage.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

std::string Fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

}  // namespace

void UsageMeter::Add(const BudgetSample& sample) {
  sums_ = Through(sample.now_ms);
  started_ = true;
  last_ms_ = sample.now_ms;
  in_use_ = sample.total(sample.in_use);
  waiting_ = sample.total(sample.waiting);
  budget_ = sample.budget;
  peak_waiting_ = std::max(peak_waiting_, waiting_);
}

UsageMeter::Sums UsageMeter::Through(uint64_t end_ms) const {
  Sums sums = sums_;
  if (!started_ || end_ms <= last_ms_) return sums;
  double dt = static_cast<double>(end_ms - last_ms_) / 1000;
  sums.used_all += in_use_ * dt;
  sums.budget_all += budget_ * dt;
  if (waiting_ > 0) {
    sums.used_waiting += in_use_ * dt;
    sums.budget_waiting += budget_ * dt;
    sums.waited_s += dt;
  }
  return sums;
}

double UsageMeter::utilisation_waiting(uint64_t end_ms) const {
  Sums sums = Through(end_ms);
  return sums.budget_waiting > 0 ? sums.used_waiting / sums.budget_waiting : -1;
}

double UsageMeter::utilisation_overall(uint64_t end_ms) const {
  Sums sums = Through(end_ms);
  return sums.budget_all > 0 ? sums.used_all / sums.budget_all : -1;
}

std::string UsageMeter::Summary(uint64_t end_ms, int reclaimed, int surplus) const {
  Sums sums = Through(end_ms);
  double waiting = utilisation_waiting(end_ms), overall = utilisation_overall(end_ms);
  std::string text = "utilisation ";
  text += waiting < 0 ? "n/a (nothing ever waited)"
                      : Fixed(waiting * 100, 1) + " % while work waited (" +
                            Fixed(sums.waited_s, 1) + " s)";
  text += overall < 0 ? "" : ", " + Fixed(overall * 100, 1) + " % over the run";
  text += "; peak " + std::to_string(peak_waiting_) + " waiting; " + std::to_string(reclaimed) +
          " reclaimed, " + std::to_string(surplus) + " surplus dropped";
  return text;
}

namespace {

// The terminal's size, or {0, 0} when it is unknown or too small to keep a
// row apart (a pseudo-terminal nobody sized reads 0 x 0).
std::pair<int, int> SizeOf(int fd) {
  winsize size{};
  if (ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_row < 3 || size.ws_col < 10) return {0, 0};
  return {size.ws_row, size.ws_col};
}

// ESC 7 / ESC 8: save and restore the cursor (DECSC, DECRC).
constexpr const char* kSave = "\0337";
constexpr const char* kRestore = "\0338";

std::string MoveTo(int row) { return "\033[" + std::to_string(row) + ";1H"; }

}  // namespace

void ProgressLine::Start(uv_loop_t* loop, int fd, Sampler* sampler, const pid_t* command_group) {
  loop_ = loop;
  fd_ = fd;
  command_group_ = command_group;
  start_ms_ = uv_now(loop);
  timer_ = new uv_timer_t;
  uv_timer_init(loop, timer_);
  timer_->data = this;
  // Every kRedrawMs: the line is redrawn when a sample changed it, and once
  // a second for the elapsed time (a terminal is slow; the loop is not).
  uv_timer_start(timer_, OnTimer, 0, kRedrawMs);
  sampler->OnSample([this](const BudgetSample& sample) {
    last_ = sample;
    changed_ = true;
    sampled_ = true;
  });
}

void ProgressLine::OnTimer(uv_timer_t* timer) {
  auto* line = static_cast<ProgressLine*>(timer->data);
  // The size is read every time: a new size must be met at once, before the
  // build's output runs through the rows the terminal moved.
  if (line->changed_ || uv_now(line->loop_) >= line->drawn_ms_ + 1000 ||
      SizeOf(line->fd_) != std::make_pair(line->rows_, line->cols_)) {
    line->Draw();
  }
}

std::string ProgressLine::Text(const BudgetSample& sample, uint64_t elapsed_ms) {
  std::string sides;
  for (size_t i = 1; i < kSideNames.size(); ++i) {
    if (sample.in_use[i] == 0) continue;
    sides += (sides.empty() ? "" : ", ") + std::string(kSideNames[i]) + " " +
             std::to_string(sample.in_use[i]);
  }
  std::string text = "[jobbridge] " + std::to_string(sample.total(sample.in_use)) +
                     (sample.budget > 0 ? "/" + std::to_string(sample.budget) : "") + " in use";
  if (!sides.empty()) text += " (" + sides + ")";
  text += ", " + std::to_string(sample.total(sample.waiting)) + " waiting, " +
          Fixed(static_cast<double>(elapsed_ms) / 1000, 1) + " s";
  return text;
}

std::string ProgressLine::OnLastRow(const std::string& text, int rows, int cols) {
  // In plain attributes (the build may have left a colour set; the restore
  // brings its own back), one column short of the edge: a character in the
  // last column of the last row may scroll on some terminals.
  return std::string(kSave) + MoveTo(rows) + "\033[0m\033[2K" + text.substr(0, cols - 1) + kRestore;
}

void ProgressLine::Write(const std::string& bytes) {
  // One write, so that no output of the build lands between the cursor's
  // save and its restore; only what a short write left follows after it.
  size_t done = 0;
  for (int stalls = 0; done < bytes.size() && stalls < 10;) {
    ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {  // a non-blocking terminal, full for now
      pollfd writable{fd_, POLLOUT, 0};
      ++stalls;
      RetryOnEintr([&] { return poll(&writable, 1, 20); });
    } else {
      break;
    }
  }
  if (done < bytes.size() && bytes.find(kSave) != std::string::npos) {
    RetryOnEintr([&] { return write(fd_, kRestore, 2); });  // never left on the last row
  }
}

bool ProgressLine::Foreground() const {
  pid_t foreground = tcgetpgrp(fd_);
  // Not its controlling terminal (ENOTTY): no job control to mind.
  return foreground < 0 || foreground == getpgrp() ||
         (command_group_ && *command_group_ > 0 && foreground == *command_group_);
}

void ProgressLine::Reserve() {
  auto [rows, cols] = SizeOf(fd_);
  rows_ = rows;
  cols_ = cols;
  if (rows_ == 0) return;
  // An index first (IND: down one row, scrolling at the bottom, the column
  // kept): if the cursor is on the last row, the screen scrolls up one, so
  // that the cursor is inside the region once moved back up. Setting the
  // region homes the cursor, hence the save and restore around it.
  Write("\033D" + std::string(kSave) + "\033[1;" + std::to_string(rows_ - 1) + "r" + kRestore +
        "\033[1A");
}

void ProgressLine::Release(bool resized) {
  // A resize since the last drawing counts too (the timer reads the size
  // every 50 ms, and Stop or a Ctrl-Z may come first).
  resized = resized || (rows_ > 0 && SizeOf(fd_) != std::make_pair(rows_, cols_));
  if (rows_ > 0) {
    // Resized, the terminal has moved its rows: the line may be on another
    // row now, and its old row may hold the build's output. Below the
    // cursor there is only the line (or blank rows), so all of that is
    // cleared (ED 0), the build's text before the cursor kept.
    Write(std::string(kSave) + (resized ? "" : MoveTo(rows_) + "\033[2K") + "\033[r" + kRestore +
          (resized ? "\033[J" : ""));
    rows_ = cols_ = 0;
  }
  if (drawn_) Write("\r\033[K");
  drawn_ = false;
}

void ProgressLine::Draw() {
  if (!sampled_) return;
  if (!Foreground()) {  // in the background (bg, &): the screen is the shell's
    Release(false);
    return;
  }
  drawn_ms_ = uv_now(loop_);
  changed_ = false;
  std::string text = Text(last_, drawn_ms_ - start_ms_);
  if (SizeOf(fd_) != std::make_pair(rows_, cols_)) {
    Release(true);
    Reserve();
  }
  if (rows_ > 0) {
    Write(OnLastRow(text, rows_, cols_));
  } else {
    Write("\r\033[K" + text);
    drawn_ = true;
  }
}

void ProgressLine::Stop() {
  if (!timer_) return;
  CloseAndDelete(timer_);
  timer_ = nullptr;
  Release(false);
}

}  // namespace jobbridge
