// UsageMeter and ProgressLine's text (control/usage.h) on samples made by hand.
#include "control/usage.h"

#include <gtest/gtest.h>

namespace jobbridge {
namespace {

BudgetSample At(uint64_t ms, int budget, int socket_in_use, int socket_waiting) {
  BudgetSample sample;
  sample.now_ms = ms;
  sample.budget = budget;
  sample.in_use[0] = 1;  // the command's slot
  sample.in_use[2] = socket_in_use;
  sample.waiting[2] = socket_waiting;
  return sample;
}

// Budget 4. 0-1 s: 1 in use, nobody waits; 1-3 s: 4 in use, 2 wait;
// 3-4 s: 2 in use, 1 waits. While waiting: (4*2 + 2*1) / (4*3) = 10/12;
// over the run: (1 + 8 + 2) / 16.
TEST(UsageMeterTest, UtilisationWhileWorkWaitedAndOverTheRun) {
  UsageMeter meter;
  meter.Add(At(0, 4, 0, 0));
  meter.Add(At(1000, 4, 3, 2));
  meter.Add(At(3000, 4, 1, 1));
  EXPECT_NEAR(meter.utilisation_waiting(4000), 10.0 / 12.0, 1e-9);
  EXPECT_NEAR(meter.utilisation_overall(4000), 11.0 / 16.0, 1e-9);
  EXPECT_EQ(meter.peak_waiting(), 2);
  EXPECT_EQ(meter.Summary(4000, 1, 2),
            "utilisation 83.3 % while work waited (3.0 s), 68.8 % over the run; peak 2 waiting; "
            "1 reclaimed, 2 surplus dropped");
}

TEST(UsageMeterTest, NothingWaitedIsSaidSo) {
  UsageMeter meter;
  meter.Add(At(0, 2, 0, 0));
  EXPECT_LT(meter.utilisation_waiting(1000), 0);
  EXPECT_EQ(meter.Summary(1000, 0, 0),
            "utilisation n/a (nothing ever waited), 50.0 % over the run; peak 0 waiting; "
            "0 reclaimed, 0 surplus dropped");
}

TEST(ProgressLineTest, TheLineNamesTheSidesInUse) {
  BudgetSample sample = At(0, 4, 2, 3);
  sample.in_use[1] = 1;
  EXPECT_EQ(ProgressLine::Text(sample, 12345),
            "[jobbridge] 4/4 in use (legacy 1, socket 2), 3 waiting, 12.3 s");
}

// Drawn on the last row in plain attributes with the cursor (and the
// build's attributes) saved and restored around it, cut one column short of
// the edge so the last row never scrolls.
TEST(ProgressLineTest, TheLineIsDrawnOnTheLastRowAndCutShortOfTheEdge) {
  EXPECT_EQ(ProgressLine::OnLastRow("[jobbridge] 1/2 in use", 24, 80),
            "\0337\033[24;1H\033[0m\033[2K[jobbridge] 1/2 in use\0338");
  EXPECT_EQ(ProgressLine::OnLastRow("0123456789abc", 5, 10),
            "\0337\033[5;1H\033[0m\033[2K012345678\0338");
}

}  // namespace
}  // namespace jobbridge
