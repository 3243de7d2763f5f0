#include "report_drawing.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <unordered_map>

namespace jobbridge {

namespace {

using Bar = ReportDrawing::Bar;
using Row = ReportDrawing::Row;

// Keeps the kMaxTracksDrawn tracks with the most slot-seconds, in trace order.
void ChooseRows(const TraceModel& model, ReportDrawing* drawing) {
  std::vector<size_t> order(model.tracks.size());
  std::iota(order.begin(), order.end(), 0);
  if (order.size() > ReportDrawing::kMaxTracksDrawn) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return model.tracks[a].slot_seconds > model.tracks[b].slot_seconds;
    });
    for (size_t i = ReportDrawing::kMaxTracksDrawn; i < order.size(); ++i) {
      ++drawing->hidden_tracks;
      drawing->hidden_slot_seconds += model.tracks[order[i]].slot_seconds;
    }
    order.resize(ReportDrawing::kMaxTracksDrawn);
    std::sort(order.begin(), order.end());
  }
  for (size_t i : order) drawing->rows.push_back({&model.tracks[i], {}, {}});
}

// `spans` sorted by start. Spans of one lane that start less than `gap_us`
// after the previous bar of that lane ends become one bar (gap_us < 0: none).
std::vector<Bar> Merged(const std::vector<TraceModel::Span>& spans, double gap_us, bool use_lanes) {
  std::vector<Bar> bars;
  std::unordered_map<int, size_t> last;  // lane -> its last bar
  for (const TraceModel::Span& span : spans) {
    int lane = use_lanes ? span.lane : 0;
    int64_t length = span.end_us - span.start_us;
    auto it = last.find(lane);
    if (gap_us >= 0 && it != last.end() &&
        static_cast<double>(span.start_us - bars[it->second].end_us) < gap_us) {
      Bar& bar = bars[it->second];
      bar.end_us = std::max(bar.end_us, span.end_us);
      ++bar.count;
      bar.busy_us += length;
      continue;
    }
    last[lane] = bars.size();
    bars.push_back({span.start_us, span.end_us, lane, 1, length});
  }
  return bars;
}

size_t Bars(ReportDrawing* drawing, double gap_us) {
  size_t total = 0;
  for (Row& row : drawing->rows) {
    row.slices = Merged(row.track->slices, gap_us, true);
    std::vector<TraceModel::Span> waits = row.track->waits;
    std::stable_sort(waits.begin(), waits.end(),
                     [](const auto& a, const auto& b) { return a.start_us < b.start_us; });
    row.waits = Merged(waits, gap_us, false);
    total += row.slices.size() + row.waits.size();
  }
  return total;
}

ReportDrawing::Column ColumnOf(const TraceModel::Sample& sample) {
  ReportDrawing::Column column{sample.ts_us, {}};
  for (size_t s = 0; s < kSideNames.size(); ++s) {
    if (auto it = sample.per_side.find(kSideNames[s]); it != sample.per_side.end()) {
      column.per_side[s] = it->second;
    }
  }
  return column;
}

// One column per pixel: the time-weighted mean of the step function the
// samples draw (each sample holds until the next, the last until the end).
std::vector<ReportDrawing::Column> Averaged(const TraceModel& model, int width) {
  double per_px = static_cast<double>(model.end_us) / width;
  std::vector<ReportDrawing::Column> columns(width);
  for (int c = 0; c < width; ++c) columns[c].ts_us = static_cast<int64_t>(c * per_px);
  for (size_t k = 0; k < model.in_use.size(); ++k) {
    ReportDrawing::Column value = ColumnOf(model.in_use[k]);
    double from = static_cast<double>(model.in_use[k].ts_us);
    double to =
        static_cast<double>(k + 1 < model.in_use.size() ? model.in_use[k + 1].ts_us : model.end_us);
    for (int c = std::clamp(static_cast<int>(from / per_px), 0, width - 1); from < to; ++c) {
      if (c >= width) break;
      double edge = std::min(to, (c + 1) * per_px);
      double share = (edge - from) / per_px;
      for (size_t s = 0; s < kSideNames.size(); ++s) {
        columns[c].per_side[s] += value.per_side[s] * share;
      }
      from = edge;
    }
  }
  return columns;
}

}  // namespace

ReportDrawing DrawingOf(const TraceModel& model, int plot_width_px) {
  plot_width_px = std::max(plot_width_px, 1);
  ReportDrawing drawing;
  ChooseRows(model, &drawing);
  double per_px = model.end_us > 0 ? static_cast<double>(model.end_us) / plot_width_px : 1;
  drawing.bars = Bars(&drawing, -1);
  for (double gap_px = 1; drawing.bars > ReportDrawing::kMaxBarsDrawn; gap_px *= 2) {
    drawing.merge_gap_px = gap_px;
    drawing.bars = Bars(&drawing, gap_px * per_px);
    if (gap_px > plot_width_px) break;  // every lane one bar: as few as it gets
  }
  for (const Row& row : drawing.rows) {
    drawing.slice_bars += row.slices.size();
    for (const Bar& bar : row.slices) drawing.grants_drawn += bar.count;
  }
  if (model.end_us > 0 && model.in_use.size() > 2 * static_cast<size_t>(plot_width_px)) {
    drawing.in_use = Averaged(model, plot_width_px);
    drawing.averaged = true;
  } else {
    for (const TraceModel::Sample& sample : model.in_use)
      drawing.in_use.push_back(ColumnOf(sample));
  }
  return drawing;
}

}  // namespace jobbridge
