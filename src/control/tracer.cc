#include "control/tracer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "control/budget_view.h"
#include "control/sides.h"
#include "log.h"
#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

using nlohmann::json;

constexpr int kBridgePid = 1;  // the trace's "process": jobbridge itself

}  // namespace

std::unique_ptr<Tracer> Tracer::Open(const std::string& path, std::string* err) {
  UniqueFd fd(RetryOnEintr(
      [&] { return open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); }));
  if (!fd.valid()) {
    *err = "cannot write the trace to " + path + ": " + strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<Tracer>(new Tracer(std::move(fd), path));
}

Tracer::~Tracer() {
  Stop();
  std::string err;
  Close(&err);
}

void Tracer::Start(Sources sources) {
  sources_ = std::move(sources);
  start_ns_ = uv_hrtime();
  buffer_ = "{\"traceEvents\":[\n";
  Emit({{"ph", "M"},
        {"pid", kBridgePid},
        {"name", "process_name"},
        {"args", {{"name", "jobbridge (pid " + std::to_string(getpid()) + ")"}}}});
  // Where ts 0 is on the wall clock, to line the trace up with other logs.
  int64_t epoch_us = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  Emit({{"ph", "M"},
        {"pid", kBridgePid},
        {"name", "jobbridge_clock"},
        {"args", {{"epoch_us_at_ts_0", epoch_us}, {"version", kTraceVersion}}}});
  if (sources_.broker) Resized(sources_.ledger->budget());  // joined: the outer one's, unsaid
  started_ = true;
  flush_timer_ = new uv_timer_t;
  uv_timer_init(sources_.loop, flush_timer_);
  flush_timer_->data = this;
  // Batches reach the file every kFlushMs even while nothing happens (a
  // long link step), so a SIGKILL loses at most that much.
  uv_timer_start(
      flush_timer_, [](uv_timer_t* timer) { static_cast<Tracer*>(timer->data)->Flush(); }, kFlushMs,
      kFlushMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(flush_timer_));
  for (const auto& [owner, held] : sources_.ledger->Holders()) OnHeld(owner, held);
  sources_.ledger->AddObserver([this](Owner owner, int held) { OnHeld(owner, held); });
  if (sources_.sampler) {
    sources_.sampler->OnSample([this](const BudgetSample& sample) {
      Sample(sample);
      // Written in batches: every kFlushMs, or sooner when much is waiting.
      if (buffer_.size() >= kFlushBytes || sample.now_ms >= flushed_ms_ + kFlushMs) {
        flushed_ms_ = sample.now_ms;
        Flush();
      }
    });
    sources_.sampler->OnNoted(
        [this](const char* what, int count, pid_t pid, const std::string& command) {
          json args = {{"count", count}};
          if (pid > 0) args["pid"] = pid;
          if (!command.empty()) args["command"] = command;
          Emit({{"ph", "i"},
                {"s", "g"},
                {"pid", kBridgePid},
                {"tid", 0},
                {"ts", Now()},
                {"name", what},
                {"args", args}});
        });
  }
  Flush();
}

void Tracer::Resized(int jobs) {
  Emit({{"ph", "C"},
        {"pid", kBridgePid},
        {"ts", Now()},
        {"name", "budget"},
        {"args", {{"slots", jobs}}}});
  if (started_) {
    Emit({{"ph", "i"},
          {"s", "g"},
          {"pid", kBridgePid},
          {"tid", 0},
          {"ts", Now()},
          {"name", "resize"},
          {"args", {{"jobs", jobs}}}});
  }
}

void Tracer::CommandStarted(pid_t pid) {
  Emit({{"ph", "M"},
        {"pid", kBridgePid},
        {"tid", TrackOf(kCommandOwner)},
        {"name", "thread_name"},
        {"args", {{"name", "command: pid " + std::to_string(pid) + " " + CommandLineOf(pid)}}}});
  Flush();
}

uint64_t Tracer::Now() const { return (uv_hrtime() - start_ns_) / 1000; }

const std::string& Tracer::CommandLine(pid_t pid) {
  if (command_lines_.size() > 4096) command_lines_.clear();  // pids are reused anyway
  auto [it, added] = command_lines_.try_emplace(pid);
  if (added) it->second = CommandLineOf(pid);
  return it->second;
}

int Tracer::TrackOf(Owner owner) {
  if (auto it = open_.find(owner); it != open_.end() && it->second.tid != 0) return it->second.tid;
  if (auto it = waiting_.find(owner); it != waiting_.end()) return it->second.tid;
  pid_t pid = owner.kind == OwnerKind::kCommand
                  ? (sources_.command ? sources_.command() : -1)
                  : (sources_.broker ? sources_.broker->PidOf(owner) : -1);
  std::pair<int, int64_t> key{static_cast<int>(owner.kind), pid > 0
                                                                ? -static_cast<int64_t>(pid)
                                                                : static_cast<int64_t>(owner.id)};
  auto [it, added] = tracks_.try_emplace(key, static_cast<int>(tracks_.size()) + 1);
  if (!added) return it->second;
  std::string name = SideOf(owner.kind);
  if (pid > 0) {
    name += ": pid " + std::to_string(pid) + " " + CommandLine(pid);
  } else if (owner.kind == OwnerKind::kLegacyPool) {
    name += ": the shared pool (its readers cannot be told apart)";
  } else if (owner.kind == OwnerKind::kSemaphore) {
    name += ": the semaphore (its clients cannot be told apart)";
  } else {
    name += " #" + std::to_string(owner.id);
  }
  Emit({{"ph", "M"},
        {"pid", kBridgePid},
        {"tid", it->second},
        {"name", "thread_name"},
        {"args", {{"name", name}}}});
  return it->second;
}

// Slices are the trace's hot path (one per grant): written by hand, not
// through a JSON object (bench.sh's --trace rows measure it). A slice is a
// complete event, written when its slot comes back: a process's connections
// share its track, so their slots may overlap there.
void Tracer::OnHeld(Owner owner, int held) {
  Held& open = open_[owner];
  int count = static_cast<int>(open.starts.size());
  if (held == count) return;
  if (open.tid == 0) open.tid = TrackOf(owner);
  uint64_t now = Now();
  for (; count < held; ++count) open.starts.push_back(now);
  for (; count > held; --count) {
    EmitSlice(open.tid, open.starts.back(), now, SideOf(owner.kind));
    open.starts.pop_back();
  }
  if (held == 0) open_.erase(owner);
}

void Tracer::EmitSlice(int tid, uint64_t start, uint64_t end, const char* side) {
  char event[192];
  std::snprintf(event, sizeof event,
                "{\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%llu,\"dur\":%llu,\"name\":\"slot\","
                "\"cat\":\"%s\"}",
                kBridgePid, tid, static_cast<unsigned long long>(start),
                static_cast<unsigned long long>(end - start), side);
  EmitRaw(event);
}

// The counters and the waits, from the sampler: once a turn of the loop in
// which the broker acted, and only what changed.
void Tracer::Sample(const BudgetSample& sample) {
  uint64_t now = Now();

  const std::array<int, 5>* counters[] = {&sample.in_use, &sample.idle, &sample.waiting};
  std::array<int, 5>* last[] = {&last_in_use_, &last_idle_, &last_waiting_};
  const char* names[] = {"in use", "idle", "waiting"};
  for (size_t i = 0; i < 3; ++i) {
    if (sampled_ && *counters[i] == *last[i]) continue;
    *last[i] = *counters[i];
    const std::array<int, 5>& c = *counters[i];
    char event[256];
    std::snprintf(event, sizeof event,
                  "{\"ph\":\"C\",\"pid\":%d,\"ts\":%llu,\"name\":\"%s\",\"args\":{\"command\":%d,"
                  "\"legacy\":%d,\"socket\":%d,\"sysvsem\":%d,\"upstream\":%d}}",
                  kBridgePid, static_cast<unsigned long long>(now), names[i], c[0], c[1], c[2],
                  c[3], c[4]);
    EmitRaw(event);
  }
  sampled_ = true;
  std::map<Owner, bool> waits;
  for (const Broker::Place& place : sample.places) {
    if (place.waiting > 0) waits[place.owner] = true;
  }
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (waits.contains(it->first)) {
      ++it;
      continue;
    }
    EmitWait('e', it->second, now);
    it = waiting_.erase(it);
  }
  for (const auto& [owner, yes] : waits) {
    if (waiting_.contains(owner)) continue;
    Wait wait{TrackOf(owner), next_wait_id_++};
    waiting_[owner] = wait;
    EmitWait('b', wait, now);
  }
}

void Tracer::EmitWait(char ph, const Wait& wait, uint64_t now) {
  char event[192];
  std::snprintf(
      event, sizeof event,
      "{\"ph\":\"%c\",\"pid\":%d,\"tid\":%d,\"ts\":%llu,\"cat\":\"wait\",\"name\":\"wait\","
      "\"id\":%llu}",
      ph, kBridgePid, wait.tid, static_cast<unsigned long long>(now),
      static_cast<unsigned long long>(wait.id));
  EmitRaw(event);
}

void Tracer::Emit(json event) {
  if (closed_) return;
  EmitRaw(event.dump(-1, ' ', false, json::error_handler_t::replace));
}

void Tracer::EmitRaw(std::string_view event) {
  if (closed_) return;
  if (!first_) buffer_ += ",\n";
  first_ = false;
  buffer_ += event;
}

void Tracer::Flush() {
  if (buffer_.empty() || !fd_.valid()) return;
  size_t done = 0;
  while (!failed_ && done < buffer_.size()) {
    ssize_t n = RetryOnEintr(
        [&] { return write(fd_.get(), buffer_.data() + done, buffer_.size() - done); });
    if (n <= 0) {
      failed_ = true;
      LogWarning("cannot write the trace to " + path_ + ": " + strerror(errno) +
                 "; tracing stops, the build goes on");
    } else {
      done += static_cast<size_t>(n);
    }
  }
  buffer_.clear();
}

void Tracer::Stop() {
  CloseAndDelete(flush_timer_);
  flush_timer_ = nullptr;
}

bool Tracer::Close(std::string* err) {
  if (closed_ || !fd_.valid()) return !failed_;
  if (!started_) buffer_ = "{\"traceEvents\":[";  // never started: an empty trace
  uint64_t now = Now();
  for (auto& [owner, open] : open_) {
    for (uint64_t start : open.starts) EmitSlice(open.tid, start, now, SideOf(owner.kind));
  }
  open_.clear();
  for (const auto& [owner, wait] : waiting_) EmitWait('e', wait, now);
  waiting_.clear();
  closed_ = true;
  buffer_ +=
      "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"version\":" + std::to_string(kTraceVersion) +
      "}}\n";
  Flush();
  fd_.Reset();
  if (failed_) *err = "the trace " + path_ + " is incomplete: a write failed";
  return !failed_;
}

}  // namespace jobbridge
