#include "report_model.h"

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>
#include <utility>

#include "util/json_fields.h"

namespace jobbridge {

namespace {

using nlohmann::json;

// A trace is input from a file: every field is read through json_fields,
// so no shape of JSON can throw.
using json_fields::Int;
using json_fields::Obj;
using json_fields::Str;
constexpr int64_t kMaxUs = json_fields::kMaxMagnitude;

int64_t Ts(const json& event) { return std::clamp<int64_t>(Int(event, "ts"), 0, kMaxUs); }

// The events of a trace whose end is missing (cut short by a SIGKILL): its
// event list closed by hand after the last event, or, when that one is cut
// in half, after the one before (one event per line, as the tracer writes).
json Salvage(std::string text) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ',' || text.back() == ' ')) {
      text.pop_back();
    }
    json trace = json::parse(text + "\n]}", nullptr, false);
    if (!trace.is_discarded()) return trace;
    size_t last = text.rfind("\n{");
    if (last == std::string::npos) break;
    text.resize(last);
  }
  return json();
}

std::map<std::string, int> Sides(const json& args) {
  std::map<std::string, int> sides;
  for (const auto& [side, value] : args.items()) {
    if (value.is_number_integer()) {
      sides[side] = static_cast<int>(std::clamp<int64_t>(value.get<int64_t>(), 0, 1 << 20));
    }
  }
  return sides;
}

int64_t Total(const std::map<std::string, int>& sides) {
  int64_t total = 0;
  for (const auto& [side, n] : sides) total += n;
  return total;
}

// Utilisation: slot-seconds in use over slot-seconds of the budget, over
// the times when work waited (and over the whole run).
void Figures(TraceModel* model) {
  struct Step {
    int64_t ts;
    int kind;  // 0 in use, 1 waiting, 2 budget
    int64_t value;
  };
  std::vector<Step> steps;
  for (const auto& sample : model->in_use)
    steps.push_back({sample.ts_us, 0, Total(sample.per_side)});
  for (const auto& sample : model->waiting) {
    steps.push_back({sample.ts_us, 1, Total(sample.per_side)});
    model->peak_waiting =
        static_cast<int>(std::max<int64_t>(model->peak_waiting, Total(sample.per_side)));
  }
  for (const auto& [ts, slots] : model->budget) steps.push_back({ts, 2, slots});
  std::stable_sort(steps.begin(), steps.end(),
                   [](const Step& a, const Step& b) { return a.ts < b.ts; });
  int64_t state[3] = {0, 0, 0};
  double used_waiting = 0, budget_waiting = 0, used_all = 0, budget_all = 0;
  int64_t last = 0;
  auto advance = [&](int64_t to) {
    double dt = static_cast<double>(to - last) / 1e6;
    if (dt <= 0) return;
    used_all += static_cast<double>(state[0]) * dt;
    budget_all += static_cast<double>(state[2]) * dt;
    if (state[1] > 0) {
      used_waiting += static_cast<double>(state[0]) * dt;
      budget_waiting += static_cast<double>(state[2]) * dt;
      model->waited_seconds += dt;
    }
    last = to;
  };
  for (const Step& step : steps) {
    advance(step.ts);
    state[step.kind] = step.value;
  }
  advance(model->end_us);
  if (budget_waiting > 0) model->utilisation = used_waiting / budget_waiting;
  if (budget_all > 0) model->utilisation_overall = used_all / budget_all;
}

// Slices of one track that overlap (a process's several connections) go on
// lanes: each on the first lane free at its start.
void AssignLanes(TraceModel::Track* track) {
  std::sort(track->slices.begin(), track->slices.end(),
            [](const auto& a, const auto& b) { return a.start_us < b.start_us; });
  // Lanes free again by the time they end (a min-heap), and the lane
  // numbers given up so far (the lowest is taken first).
  using Busy = std::pair<int64_t, int>;
  std::priority_queue<Busy, std::vector<Busy>, std::greater<>> busy;
  std::priority_queue<int, std::vector<int>, std::greater<>> free_lanes;
  int lanes = 0;
  for (TraceModel::Span& slice : track->slices) {
    while (!busy.empty() && busy.top().first <= slice.start_us) {
      free_lanes.push(busy.top().second);
      busy.pop();
    }
    if (free_lanes.empty()) free_lanes.push(lanes++);
    slice.lane = free_lanes.top();
    free_lanes.pop();
    busy.push({slice.end_us, slice.lane});
  }
  track->lanes = std::max(1, lanes);
}

}  // namespace

bool LoadTrace(const std::string& text, TraceModel* model, std::string* err) {
  *model = {};
  json trace = json::parse(text, nullptr, false);
  if (trace.is_discarded()) {
    trace = Salvage(text);
    model->cut_short = true;
    if (trace.is_discarded() || trace.is_null()) {
      *err = "not a JSON trace (is it a file written by jobbridge --trace?)";
      return false;
    }
  }
  if (!trace.is_object() || !trace.contains("traceEvents") || !trace["traceEvents"].is_array()) {
    *err = "not a trace-event file: no \"traceEvents\" list";
    return false;
  }
  const json& events = trace["traceEvents"];
  bool ours = std::any_of(events.begin(), events.end(), [](const json& e) {
    return e.is_object() && Str(e, "name") == "jobbridge_clock";
  });
  if (!ours) {
    *err = "a trace, but not one written by jobbridge --trace (no jobbridge_clock event)";
    return false;
  }
  std::map<int, TraceModel::Track> tracks;
  std::map<int64_t, int64_t> waits_open;  // id -> start
  std::map<int64_t, int> wait_tid;
  for (const json& event : events) {
    if (!event.is_object()) continue;
    std::string ph = Str(event, "ph"), name = Str(event, "name");
    int64_t ts = Ts(event);
    model->end_us = std::max(model->end_us, ts);
    int tid = static_cast<int>(std::clamp<int64_t>(Int(event, "tid"), 0, 1 << 30));
    const json& args = Obj(event, "args");
    if (ph == "M" && name == "thread_name") {
      tracks[tid].tid = tid;
      tracks[tid].name = Str(args, "name");
    } else if (ph == "X") {
      int64_t dur = std::clamp<int64_t>(Int(event, "dur"), 0, kMaxUs);
      TraceModel::Track& track = tracks[tid];
      track.tid = tid;
      track.side = Str(event, "cat");
      track.slices.push_back({ts, ts + dur, 0});
      track.slot_seconds += static_cast<double>(dur) / 1e6;
      model->end_us = std::max(model->end_us, ts + dur);
      ++model->slice_count;
    } else if (ph == "b") {
      waits_open[Int(event, "id")] = ts;
      wait_tid[Int(event, "id")] = tid;
    } else if (ph == "e") {
      int64_t id = Int(event, "id");
      if (auto it = waits_open.find(id); it != waits_open.end()) {
        tracks[wait_tid[id]].waits.push_back({it->second, std::max(ts, it->second), 0});
        waits_open.erase(it);
      }
    } else if (ph == "C" && name == "budget") {
      model->budget.push_back(
          {ts, static_cast<int>(std::clamp<int64_t>(Int(args, "slots"), 0, 1 << 20))});
    } else if (ph == "C" && (name == "in use" || name == "waiting")) {
      (name == "in use" ? model->in_use : model->waiting).push_back({ts, Sides(args)});
    } else if (ph == "i") {
      model->marks.push_back({ts, name, args.dump(-1, ' ', false, json::error_handler_t::replace)});
    }
  }
  // Cut short: a wait still open runs to the end (a slot still held then
  // was never written: its slice is written when it comes back).
  for (const auto& [id, start] : waits_open) {
    tracks[wait_tid[id]].waits.push_back({start, model->end_us, 0});
  }
  for (auto& [tid, track] : tracks) {
    if (track.slices.empty() && track.waits.empty()) continue;
    AssignLanes(&track);
    model->tracks.push_back(std::move(track));
  }
  Figures(model);
  for (const TraceModel::Track& track : model->tracks) {
    for (const TraceModel::Span& wait : track.waits) {
      model->longest_waits.push_back(
          {track.name, wait.start_us, static_cast<double>(wait.end_us - wait.start_us) / 1e6});
    }
    model->top_holders.push_back(&track);
  }
  std::sort(model->longest_waits.begin(), model->longest_waits.end(),
            [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  if (model->longest_waits.size() > 10) model->longest_waits.resize(10);
  std::sort(model->top_holders.begin(), model->top_holders.end(),
            [](const auto* a, const auto* b) { return a->slot_seconds > b->slot_seconds; });
  if (model->top_holders.size() > 10) model->top_holders.resize(10);
  return true;
}

}  // namespace jobbridge
