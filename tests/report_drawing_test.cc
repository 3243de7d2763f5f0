// What the report draws of a trace (report_drawing.h): a short trace as it
// is, and a long one thinned under the caps while the counts, the held time
// and the slot-seconds drawn stay those of the trace.
#include "report_drawing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "report.h"

namespace jobbridge {
namespace {

constexpr int kWidth = 760;

// `tracks` tracks of `per_track` slices each on `lanes` lanes. On each lane
// they come back to back, 10 ms long with 1 ms between them, and after every
// `burst` of them a pause of 1 s. Each later track's slices are 1 us longer,
// so the order by slot-seconds is known.
TraceModel Slices(int tracks, int per_track, int lanes, int burst = 1 << 30) {
  TraceModel model;
  for (int t = 0; t < tracks; ++t) {
    TraceModel::Track track;
    track.tid = t + 2;
    track.name = "legacy: pid " + std::to_string(1000 + t) + " make";
    track.side = "legacy";
    track.lanes = lanes;
    std::vector<int64_t> free_at(lanes, 0);
    for (int i = 0; i < per_track; ++i) {
      int lane = i % lanes;
      int64_t start = free_at[lane], end = start + 10000 + t;
      track.slices.push_back({start, end, lane});
      track.slot_seconds += static_cast<double>(end - start) / 1e6;
      free_at[lane] = end + ((i / lanes) % burst == burst - 1 ? 1000000 : 1000);
      model.end_us = std::max(model.end_us, end);
    }
    std::sort(track.slices.begin(), track.slices.end(),
              [](const auto& a, const auto& b) { return a.start_us < b.start_us; });
    track.waits.push_back({0, 500, 0});
    model.slice_count += per_track;
    model.tracks.push_back(track);
  }
  return model;
}

TEST(ReportDrawingTest, AShortTraceIsDrawnAsItIs) {
  TraceModel model = Slices(3, 40, 2);
  for (int k = 0; k < 100; ++k) model.in_use.push_back({k * 1000, {{"legacy", k % 3}}});
  ReportDrawing drawing = DrawingOf(model, kWidth);
  ASSERT_EQ(drawing.rows.size(), 3u);
  EXPECT_EQ(drawing.merge_gap_px, 0);
  EXPECT_EQ(drawing.bars, 3u * 41);
  EXPECT_EQ(drawing.hidden_tracks, 0u);
  EXPECT_FALSE(drawing.averaged);
  ASSERT_EQ(drawing.in_use.size(), 100u);
  EXPECT_EQ(drawing.in_use[5].ts_us, 5000);
  EXPECT_EQ(drawing.in_use[5].per_side[1], 2);  // kSideNames[1] is "legacy"
  for (const auto& row : drawing.rows) {
    for (const auto& bar : row.slices) EXPECT_EQ(bar.count, 1u);
  }
  EXPECT_EQ(RenderReport(model, "t").find("id=\"thinned\""), std::string::npos);
}

// Tracks of 8000 grants on 4 lanes in bursts of 10: 200 bursts a lane,
// 22 s of grants and 200 s of pauses. A pixel is 0.29 s and a pause more
// than 3 px, so merging what is less than 1 px apart leaves 200 bars a lane
// and 4 px one bar a lane.
struct MergeCase {
  int tracks;
  double gap_px;
  size_t bars;
};

class ReportMergeTest : public testing::TestWithParam<MergeCase> {};

TEST_P(ReportMergeTest, ManyGrantsAreMergedUnderTheCapAndStillAllCounted) {
  const MergeCase& c = GetParam();
  TraceModel model = Slices(c.tracks, 8000, 4, 10);
  ReportDrawing drawing = DrawingOf(model, kWidth);
  EXPECT_LE(drawing.bars, ReportDrawing::kMaxBarsDrawn);
  EXPECT_EQ(drawing.merge_gap_px, c.gap_px);
  EXPECT_EQ(drawing.bars, c.bars);
  size_t grants = 0;
  int64_t busy = 0, expected_busy = 0;
  for (const auto& track : model.tracks) {
    for (const auto& slice : track.slices) expected_busy += slice.end_us - slice.start_us;
  }
  for (const auto& row : drawing.rows) {
    std::map<int, int64_t> lane_end;
    for (const auto& bar : row.slices) {
      grants += bar.count;
      busy += bar.busy_us;
      ASSERT_LT(bar.lane, row.track->lanes);
      // Bars of one lane do not overlap, and those left apart are a gap apart.
      if (lane_end.count(bar.lane)) {
        EXPECT_GE(static_cast<double>(bar.start_us - lane_end[bar.lane]),
                  drawing.merge_gap_px * static_cast<double>(model.end_us) / kWidth);
      }
      lane_end[bar.lane] = bar.end_us;
    }
    ASSERT_EQ(row.waits.size(), 1u);
  }
  EXPECT_EQ(grants, model.slice_count);
  EXPECT_EQ(busy, expected_busy);

  EXPECT_EQ(drawing.grants_drawn, model.slice_count);                 // every holder has a row
  EXPECT_EQ(drawing.slice_bars + model.tracks.size(), drawing.bars);  // one wait bar a row
  std::string page = RenderReport(model, "t");
  EXPECT_NE(page.find(std::to_string(model.slice_count) + " grants are drawn as " +
                      std::to_string(drawing.slice_bars) + " bars"),
            std::string::npos);
  size_t rects = 0;
  for (size_t at = 0; (at = page.find("<rect ", at)) != std::string::npos; ++at) ++rects;
  EXPECT_EQ(rects, drawing.bars);
  EXPECT_LT(page.size(), 4u << 20);
}

INSTANTIATE_TEST_SUITE_P(Gaps, ReportMergeTest,
                         testing::Values(MergeCase{12, 1, 12 * (4 * 200 + 1)},
                                         MergeCase{30, 4, 30 * (4 + 1)}));

TEST(ReportDrawingTest, ManyHoldersKeepTheBiggestInTraceOrder) {
  TraceModel model = Slices(ReportDrawing::kMaxTracksDrawn + 200, 2, 1);
  ReportDrawing drawing = DrawingOf(model, kWidth);
  ASSERT_EQ(drawing.rows.size(), ReportDrawing::kMaxTracksDrawn);
  EXPECT_EQ(drawing.hidden_tracks, 200u);
  // Later tracks hold longer (Slices): the first 200 are the ones left out.
  double hidden = 0;
  for (size_t t = 0; t < 200; ++t) hidden += model.tracks[t].slot_seconds;
  EXPECT_NEAR(drawing.hidden_slot_seconds, hidden, 1e-9);
  for (size_t i = 0; i < drawing.rows.size(); ++i) {
    EXPECT_EQ(drawing.rows[i].track, &model.tracks[200 + i]);
  }
  EXPECT_EQ(drawing.grants_drawn, 2u * ReportDrawing::kMaxTracksDrawn);
  std::string page = RenderReport(model, "t");
  EXPECT_NE(page.find("and 200 more holders"), std::string::npos);
  EXPECT_NE(page.find("(with 600 of the trace's 1000 grants), 200 more do not"), std::string::npos);
}

TEST(ReportDrawingTest, NoWidthIsOnePixel) {
  TraceModel model = Slices(2, 10, 1);
  for (int k = 0; k < 10; ++k) model.in_use.push_back({k * 1000, {{"legacy", 1}}});
  ReportDrawing drawing = DrawingOf(model, 0);
  ASSERT_TRUE(drawing.averaged);
  ASSERT_EQ(drawing.in_use.size(), 1u);
  EXPECT_GT(drawing.in_use[0].per_side[1], 0);
}

TEST(ReportDrawingTest, ManySamplesAreOneMeanPerPixelOfTheSameArea) {
  TraceModel model;
  model.end_us = 3600000000;  // an hour
  double area = 0;
  for (int64_t ts = 0, k = 0; ts < model.end_us; ts += 7919, ++k) {
    model.in_use.push_back({ts, {{"legacy", static_cast<int>(k % 5)}, {"socket", 1}}});
    area += static_cast<double>(std::min<int64_t>(7919, model.end_us - ts)) * (k % 5 + 1);
  }
  ReportDrawing drawing = DrawingOf(model, kWidth);
  ASSERT_TRUE(drawing.averaged);
  ASSERT_EQ(drawing.in_use.size(), static_cast<size_t>(kWidth));
  double drawn = 0, per_px = static_cast<double>(model.end_us) / kWidth;
  for (const auto& column : drawing.in_use) {
    EXPECT_LE(column.per_side[1], 4.0 + 1e-9);
    EXPECT_NEAR(column.per_side[2], 1.0, 1e-6);
    drawn += (column.per_side[1] + column.per_side[2]) * per_px;
  }
  EXPECT_NEAR(drawn / area, 1.0, 1e-6);
}

}  // namespace
}  // namespace jobbridge
