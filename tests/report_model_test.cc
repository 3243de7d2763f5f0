// The report's model (report_model.h): figures computed from a small trace
// written by hand, a trace cut short, and what is not a trace.
#include "report_model.h"

#include <gtest/gtest.h>

#include <string>

namespace jobbridge {
namespace {

// Budget 2 for 4 s. 0-1 s: 1 in use, nobody waits. 1-3 s: 2 in use and one
// waits. 3-4 s: 1 in use, one waits. Utilisation while waiting: (2*2 + 1*1)
// / (2*3) = 5/6; over the run: (1 + 4 + 1) / 8 = 3/4.
const char* kTrace = R"({"traceEvents":[
{"ph":"M","pid":1,"name":"jobbridge_clock","args":{"epoch_us_at_ts_0":0,"version":1}},
{"ph":"M","pid":1,"tid":1,"name":"thread_name","args":{"name":"socket: pid 7 a"}},
{"ph":"M","pid":1,"tid":2,"name":"thread_name","args":{"name":"socket: pid 8 b"}},
{"ph":"C","pid":1,"ts":0,"name":"budget","args":{"slots":2}},
{"ph":"C","pid":1,"ts":0,"name":"in use","args":{"command":1,"socket":0}},
{"ph":"C","pid":1,"ts":0,"name":"waiting","args":{"socket":0}},
{"ph":"C","pid":1,"ts":1000000,"name":"in use","args":{"command":1,"socket":1}},
{"ph":"b","pid":1,"tid":2,"ts":1000000,"cat":"wait","name":"wait","id":2},
{"ph":"C","pid":1,"ts":1000000,"name":"waiting","args":{"socket":1}},
{"ph":"X","pid":1,"tid":1,"ts":1000000,"dur":2000000,"name":"slot","cat":"socket"},
{"ph":"C","pid":1,"ts":3000000,"name":"in use","args":{"command":1,"socket":0}},
{"ph":"i","s":"g","pid":1,"tid":0,"ts":3500000,"name":"reclaimed","args":{"count":1}},
{"ph":"e","pid":1,"tid":2,"ts":4000000,"cat":"wait","name":"wait","id":2},
{"ph":"C","pid":1,"ts":4000000,"name":"waiting","args":{"socket":0}}
],"displayTimeUnit":"ms","otherData":{"version":1}}
)";

TEST(ReportModelTest, FiguresFromAHandWrittenTrace) {
  TraceModel model;
  std::string err;
  ASSERT_TRUE(LoadTrace(kTrace, &model, &err)) << err;
  EXPECT_FALSE(model.cut_short);
  EXPECT_EQ(model.end_us, 4000000);
  EXPECT_EQ(model.slice_count, 1u);
  EXPECT_NEAR(model.utilisation, 5.0 / 6.0, 1e-9);
  EXPECT_NEAR(model.utilisation_overall, 3.0 / 4.0, 1e-9);
  EXPECT_NEAR(model.waited_seconds, 3.0, 1e-9);
  EXPECT_EQ(model.peak_waiting, 1);
  ASSERT_EQ(model.longest_waits.size(), 1u);
  EXPECT_EQ(model.longest_waits[0].track, "socket: pid 8 b");
  EXPECT_NEAR(model.longest_waits[0].seconds, 3.0, 1e-9);
  ASSERT_FALSE(model.top_holders.empty());
  EXPECT_EQ(model.top_holders[0]->name, "socket: pid 7 a");
  EXPECT_NEAR(model.top_holders[0]->slot_seconds, 2.0, 1e-9);
  ASSERT_EQ(model.marks.size(), 1u);
  EXPECT_EQ(model.marks[0].name, "reclaimed");
}

// A SIGKILL cuts the file short: read as far as it goes, a wait still open
// running to its end.
TEST(ReportModelTest, ATraceCutShortIsReadAsFarAsItGoes) {
  std::string text = kTrace;
  text = text.substr(0, text.find("{\"ph\":\"i\""));
  TraceModel model;
  std::string err;
  ASSERT_TRUE(LoadTrace(text, &model, &err)) << err;
  EXPECT_TRUE(model.cut_short);
  EXPECT_EQ(model.slice_count, 1u);
  EXPECT_EQ(model.end_us, 3000000);
  ASSERT_EQ(model.longest_waits.size(), 1u);
  EXPECT_NEAR(model.longest_waits[0].seconds, 2.0, 1e-9);
}

// A process's connections share its track: their slots overlap on lanes.
TEST(ReportModelTest, OverlappingSlicesOfOneTrackGoOnLanes) {
  std::string text = R"({"traceEvents":[
{"ph":"M","pid":1,"name":"jobbridge_clock","args":{"epoch_us_at_ts_0":0,"version":1}},
{"ph":"X","pid":1,"tid":3,"ts":0,"dur":10,"name":"slot","cat":"socket"},
{"ph":"X","pid":1,"tid":3,"ts":5,"dur":10,"name":"slot","cat":"socket"},
{"ph":"X","pid":1,"tid":3,"ts":12,"dur":10,"name":"slot","cat":"socket"}]})";
  TraceModel model;
  std::string err;
  ASSERT_TRUE(LoadTrace(text, &model, &err)) << err;
  ASSERT_EQ(model.tracks.size(), 1u);
  EXPECT_EQ(model.tracks[0].lanes, 2);
  EXPECT_EQ(model.tracks[0].slices[0].lane, 0);
  EXPECT_EQ(model.tracks[0].slices[1].lane, 1);
  EXPECT_EQ(model.tracks[0].slices[2].lane, 0);
}

TEST(ReportModelTest, WhatIsNotOurTraceIsNamed) {
  TraceModel model;
  std::string err;
  EXPECT_FALSE(LoadTrace("hello", &model, &err));
  EXPECT_NE(err.find("not a JSON trace"), std::string::npos) << err;
  EXPECT_FALSE(LoadTrace("[1,2]", &model, &err));
  EXPECT_NE(err.find("no \"traceEvents\" list"), std::string::npos) << err;
  EXPECT_FALSE(LoadTrace(R"({"traceEvents":[{"ph":"X","ts":1}]})", &model, &err));
  EXPECT_NE(err.find("not one written by jobbridge --trace"), std::string::npos) << err;
}

// Fields of the wrong type or missing, numbers out of range: read with
// defaults, never thrown (each of these aborted jobbridge report).
TEST(ReportModelTest, OddShapesAreReadNeverThrown) {
  const char* clock = R"({"ph":"M","name":"jobbridge_clock"})";
  for (std::string event :
       {R"({"name":5})", R"({"ph":"C","name":"budget"})",
        R"({"ph":"M","name":"thread_name","args":5})",
        R"({"ph":"X","tid":"x","ts":1e300,"dur":-5})", R"({"ph":"C","name":"in use","args":[1]})",
        R"({"ph":"b","id":"q"})", R"({"ph":"e","id":{}})", R"({"ph":"i","args":"x"})",
        R"({"ph":"X","ts":9007199254740993,"dur":9007199254740993})"}) {
    TraceModel model;
    std::string err;
    std::string text = std::string(R"({"traceEvents":[)") + clock + "," + event + "]}";
    EXPECT_NO_THROW(EXPECT_TRUE(LoadTrace(text, &model, &err)) << event << ": " << err) << event;
    EXPECT_GE(model.end_us, 0) << event;
  }
}

}  // namespace
}  // namespace jobbridge
