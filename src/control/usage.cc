#include "control/usage.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

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

void ProgressLine::Start(uv_loop_t* loop, int fd, Sampler* sampler) {
  loop_ = loop;
  fd_ = fd;
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
  if (line->changed_ || uv_now(line->loop_) >= line->drawn_ms_ + 1000) line->Draw();
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

void ProgressLine::Draw() {
  if (!sampled_) return;
  drawn_ms_ = uv_now(loop_);
  changed_ = false;
  std::string line = "\r\033[K" + Text(last_, drawn_ms_ - start_ms_);
  RetryOnEintr([&] { return write(fd_, line.data(), line.size()); });
  drawn_ = true;
}

void ProgressLine::Stop() {
  if (!timer_) return;
  CloseAndDelete(timer_);
  timer_ = nullptr;
  if (drawn_) RetryOnEintr([&] { return write(fd_, "\r\033[K", 4); });
}

}  // namespace jobbridge
