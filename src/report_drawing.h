// What the report page draws of a trace (report_model.h), thinned so that
// the trace of a build of hours is still a page a browser opens at once:
//   - at most kMaxTracksDrawn holder rows: those with the most slot-seconds,
//     in trace order; the others are counted in one line;
//   - at most kMaxBarsDrawn bars: when there are more, the bars of each lane
//     (and each track's waits) that lie closer than a gap of G pixels are
//     drawn as one, G doubling from one pixel until they fit, or until each
//     lane is one bar (more than kMaxBarsDrawn only when the rows have more
//     lanes than that); a merged bar says how many grants it stands for and
//     how long they held;
//   - at most two counter columns per pixel: when there are more samples,
//     each pixel's column is the time-weighted mean of the slots in use per
//     side over its span, so the area drawn is the slot-seconds used.
// A short trace is drawn as it is: one bar per grant, one step per sample.
// Pure: model in, drawing out, unit-tested (tests/report_drawing_test.cc).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "control/sides.h"
#include "report_model.h"

namespace jobbridge {

struct ReportDrawing {
  static constexpr size_t kMaxTracksDrawn = 300;
  static constexpr size_t kMaxBarsDrawn = 20000;

  struct Bar {
    int64_t start_us = 0;
    int64_t end_us = 0;
    int lane = 0;
    size_t count = 1;     // grants (or waits) it stands for
    int64_t busy_us = 0;  // how long they lasted, all added up
  };
  struct Row {
    const TraceModel::Track* track = nullptr;
    std::vector<Bar> slices, waits;
  };
  // The slots in use per side (in kSideNames order) from ts_us on.
  struct Column {
    int64_t ts_us = 0;
    std::array<double, kSideNames.size()> per_side{};
  };

  std::vector<Row> rows;
  size_t hidden_tracks = 0;  // not drawn (kMaxTracksDrawn)
  double hidden_slot_seconds = 0;
  size_t bars = 0;          // slice and wait bars drawn, all rows
  size_t slice_bars = 0;    // of which slices
  size_t grants_drawn = 0;  // the grants of the rows drawn (what slice_bars stand for)
  double merge_gap_px = 0;  // 0: one bar per grant and per wait
  std::vector<Column> in_use;
  bool averaged = false;  // in_use is one mean per pixel column
};

// `plot_width_px` pixels stand for model.end_us.
ReportDrawing DrawingOf(const TraceModel& model, int plot_width_px);

}  // namespace jobbridge
