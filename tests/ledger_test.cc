// The ledger is the one place that says who holds a slot, so it is driven here
// both by hand-picked cases and by a long random walk checked against an
// independent model after every single step.
#include "core/ledger.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace jobbridge {
namespace {

constexpr Owner kCommand{OwnerKind::kCommand, 0};
constexpr Owner kPool{OwnerKind::kLegacyPool, 0};
constexpr Owner kSocket1{OwnerKind::kSocket, 1};
constexpr Owner kSocket2{OwnerKind::kSocket, 2};

// Everything a refused operation must leave untouched.
struct Snapshot {
  int budget, granted, free;
  std::vector<std::pair<Owner, int>> holders;
  bool operator==(const Snapshot&) const = default;
};

Snapshot Take(const Ledger& ledger) {
  return {ledger.budget(), ledger.granted(), ledger.free(), ledger.Holders()};
}

void ExpectBalanced(const Ledger& ledger) {
  std::string err;
  EXPECT_TRUE(ledger.CheckInvariants(&err)) << err;
}

TEST(LedgerTest, StartsWithEverySlotFree) {
  Ledger ledger(4);
  EXPECT_EQ(ledger.budget(), 4);
  EXPECT_EQ(ledger.granted(), 0);
  EXPECT_EQ(ledger.free(), 4);
  EXPECT_EQ(ledger.HeldBy(kCommand), 0);
  EXPECT_TRUE(ledger.Holders().empty());
  ExpectBalanced(ledger);
}

TEST(LedgerTest, GrantAndReleaseMoveSlotsInAndOut) {
  Ledger ledger(4);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kCommand, 1, &err)) << err;
  ASSERT_TRUE(ledger.Grant(kPool, 3, &err)) << err;
  EXPECT_EQ(ledger.HeldBy(kCommand), 1);
  EXPECT_EQ(ledger.HeldBy(kPool), 3);
  EXPECT_EQ(ledger.granted(), 4);
  EXPECT_EQ(ledger.free(), 0);
  ExpectBalanced(ledger);

  ASSERT_TRUE(ledger.Release(kPool, 2, &err)) << err;
  EXPECT_EQ(ledger.HeldBy(kPool), 1);
  EXPECT_EQ(ledger.free(), 2);
  ASSERT_TRUE(ledger.Release(kPool, 1, &err)) << err;
  EXPECT_EQ(ledger.HeldBy(kPool), 0);
  // An owner that holds nothing is not listed.
  std::vector<std::pair<Owner, int>> expected = {{kCommand, 1}};
  EXPECT_EQ(ledger.Holders(), expected);
  ExpectBalanced(ledger);
}

TEST(LedgerTest, GrantBeyondFreeIsRefusedAndChangesNothing) {
  Ledger ledger(3);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kCommand, 2, &err)) << err;
  Snapshot before = Take(ledger);
  EXPECT_FALSE(ledger.Grant(kSocket1, 2, &err));
  EXPECT_FALSE(err.empty());
  EXPECT_NE(err.find(DescribeOwner(kSocket1)), std::string::npos) << err;
  EXPECT_EQ(Take(ledger), before);
  EXPECT_EQ(ledger.HeldBy(kSocket1), 0);
  ExpectBalanced(ledger);
  // Exactly the free slots still fit.
  EXPECT_TRUE(ledger.Grant(kSocket1, 1, &err)) << err;
  EXPECT_EQ(ledger.free(), 0);
}

TEST(LedgerTest, ReleaseOfMoreThanHeldIsRefusedAndChangesNothing) {
  Ledger ledger(5);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kPool, 2, &err)) << err;
  Snapshot before = Take(ledger);

  err.clear();
  EXPECT_FALSE(ledger.Release(kPool, 3, &err));
  EXPECT_NE(err.find(DescribeOwner(kPool)), std::string::npos) << err;
  EXPECT_EQ(Take(ledger), before);

  err.clear();
  EXPECT_FALSE(ledger.Release(kSocket2, 1, &err));  // holds nothing at all
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(Take(ledger), before);
  EXPECT_EQ(ledger.HeldBy(kSocket2), 0);
  ExpectBalanced(ledger);
}

TEST(LedgerTest, TransferMovesSlotsWithoutFreeingThem) {
  Ledger ledger(6);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kPool, 5, &err)) << err;
  ASSERT_TRUE(ledger.Transfer(kPool, kSocket1, 2, &err)) << err;
  EXPECT_EQ(ledger.HeldBy(kPool), 3);
  EXPECT_EQ(ledger.HeldBy(kSocket1), 2);
  EXPECT_EQ(ledger.granted(), 5);
  EXPECT_EQ(ledger.free(), 1);
  ASSERT_TRUE(ledger.Transfer(kPool, kSocket1, 3, &err)) << err;
  std::vector<std::pair<Owner, int>> expected = {{kSocket1, 5}};
  EXPECT_EQ(ledger.Holders(), expected);
  ExpectBalanced(ledger);
}

TEST(LedgerTest, TransferOfMoreThanHeldIsRefusedAndChangesNothing) {
  Ledger ledger(6);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kPool, 2, &err)) << err;
  ASSERT_TRUE(ledger.Grant(kSocket1, 1, &err)) << err;
  Snapshot before = Take(ledger);
  err.clear();
  EXPECT_FALSE(ledger.Transfer(kPool, kSocket1, 3, &err));
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(Take(ledger), before);
  err.clear();
  EXPECT_FALSE(ledger.Transfer(kSocket2, kPool, 1, &err));
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(Take(ledger), before);
  EXPECT_EQ(ledger.HeldBy(kSocket2), 0);
  ExpectBalanced(ledger);
}

TEST(LedgerTest, TransferToItselfKeepsTheBooks) {
  Ledger ledger(3);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kCommand, 2, &err)) << err;
  Snapshot before = Take(ledger);
  EXPECT_TRUE(ledger.Transfer(kCommand, kCommand, 2, &err)) << err;
  EXPECT_EQ(Take(ledger), before);
  EXPECT_FALSE(ledger.Transfer(kCommand, kCommand, 3, &err));
  EXPECT_EQ(Take(ledger), before);
  ExpectBalanced(ledger);
}

TEST(LedgerTest, NonPositiveCountsAreRefused) {
  Ledger ledger(3);
  std::string err;
  ASSERT_TRUE(ledger.Grant(kPool, 1, &err)) << err;
  Snapshot before = Take(ledger);
  for (int count : {0, -1, -4096}) {
    SCOPED_TRACE(count);
    err.clear();
    EXPECT_FALSE(ledger.Grant(kPool, count, &err));
    EXPECT_NE(err.find(std::to_string(count)), std::string::npos) << err;
    err.clear();
    EXPECT_FALSE(ledger.Release(kPool, count, &err));
    EXPECT_FALSE(err.empty());
    err.clear();
    EXPECT_FALSE(ledger.Transfer(kPool, kSocket1, count, &err));
    EXPECT_FALSE(err.empty());
    EXPECT_EQ(Take(ledger), before);
  }
  ExpectBalanced(ledger);
}

TEST(LedgerTest, OwnersOfDifferentKindsWithTheSameIdAreDistinct) {
  Ledger ledger(Ledger::kMaxBudget);
  std::string err;
  const OwnerKind kinds[] = {OwnerKind::kCommand, OwnerKind::kLegacyPool, OwnerKind::kSocket,
                             OwnerKind::kUpstream};
  int count = 1;
  for (OwnerKind kind : kinds) ASSERT_TRUE(ledger.Grant({kind, 7}, count++, &err)) << err;
  count = 1;
  for (OwnerKind kind : kinds) EXPECT_EQ(ledger.HeldBy({kind, 7}), count++);
  EXPECT_EQ(ledger.Holders().size(), 4u);
  EXPECT_EQ(ledger.granted(), 10);
  EXPECT_EQ(ledger.free(), Ledger::kMaxBudget - 10);
  ASSERT_TRUE(ledger.Grant(kSocket1, ledger.free(), &err)) << err;
  EXPECT_FALSE(ledger.Grant(kSocket2, 1, &err));
  ExpectBalanced(ledger);
}

TEST(LedgerTest, DescribeOwnerNamesKindAndId) {
  EXPECT_EQ(DescribeOwner({OwnerKind::kCommand, 0}), "command #0");
  EXPECT_EQ(DescribeOwner({OwnerKind::kLegacyPool, 3}), "legacy pool #3");
  EXPECT_NE(DescribeOwner({OwnerKind::kSocket, 12}).find("#12"), std::string::npos);
  EXPECT_NE(DescribeOwner({OwnerKind::kUpstream, 1}), DescribeOwner({OwnerKind::kSocket, 1}));
}

// --- Random walk against a model -------------------------------------------

// The model: what each owner holds and how many slots are free, kept by the
// simplest code that can be right.
struct Model {
  int budget;
  int free;
  std::map<Owner, int> held;  // may list owners with 0
};

std::vector<Owner> AllOwners() {
  std::vector<Owner> owners;
  for (OwnerKind kind :
       {OwnerKind::kCommand, OwnerKind::kLegacyPool, OwnerKind::kSocket, OwnerKind::kUpstream}) {
    for (uint64_t id : {0u, 1u, 2u}) owners.push_back({kind, id});
  }
  return owners;
}

::testing::AssertionResult Matches(const Ledger& ledger, const Model& model,
                                   const std::vector<Owner>& owners) {
  if (ledger.free() != model.free || ledger.granted() != model.budget - model.free) {
    return ::testing::AssertionFailure() << "free " << ledger.free() << " granted "
                                         << ledger.granted() << ", model free " << model.free;
  }
  std::vector<std::pair<Owner, int>> expected;
  for (const Owner& owner : owners) {
    auto it = model.held.find(owner);
    int want = it == model.held.end() ? 0 : it->second;
    if (ledger.HeldBy(owner) != want) {
      return ::testing::AssertionFailure() << DescribeOwner(owner) << " holds "
                                           << ledger.HeldBy(owner) << ", model says " << want;
    }
    if (want > 0) expected.emplace_back(owner, want);
  }
  std::sort(expected.begin(), expected.end());
  if (ledger.Holders() != expected) return ::testing::AssertionFailure() << "Holders() differs";
  std::string err;
  if (!ledger.CheckInvariants(&err)) return ::testing::AssertionFailure() << err;
  return ::testing::AssertionSuccess();
}

struct WalkStats {
  long ok[3] = {0, 0, 0};
  long refused[3] = {0, 0, 0};
};

void RandomWalk(uint32_t seed, int budget, int steps, WalkStats* stats) {
  SCOPED_TRACE("seed " + std::to_string(seed) + ", budget " + std::to_string(budget));
  std::mt19937 rng(seed);
  const std::vector<Owner> owners = AllOwners();
  std::uniform_int_distribution<size_t> pick_owner(0, owners.size() - 1);
  std::uniform_int_distribution<int> pick_op(0, 2);
  // Mostly small counts, sometimes past the budget, sometimes not positive.
  std::uniform_int_distribution<int> pick_count(-1, budget + 1);
  std::uniform_int_distribution<int> pick_small(1, 3);
  std::bernoulli_distribution small(0.7);

  Ledger ledger(budget);
  Model model{budget, budget, {}};
  for (int step = 0; step < steps; ++step) {
    const int op = pick_op(rng);
    const Owner a = owners[pick_owner(rng)];
    const Owner b = owners[pick_owner(rng)];
    const int count = small(rng) ? pick_small(rng) : pick_count(rng);

    bool model_ok = count > 0;
    std::string err;
    bool ok = false;
    switch (op) {
      case 0:
        model_ok = model_ok && count <= model.free;
        ok = ledger.Grant(a, count, &err);
        if (model_ok) {
          model.held[a] += count;
          model.free -= count;
        }
        break;
      case 1:
        model_ok = model_ok && model.held[a] >= count;
        ok = ledger.Release(a, count, &err);
        if (model_ok) {
          model.held[a] -= count;
          model.free += count;
        }
        break;
      default:
        model_ok = model_ok && model.held[a] >= count;
        ok = ledger.Transfer(a, b, count, &err);
        if (model_ok) {
          model.held[a] -= count;
          model.held[b] += count;
        }
        break;
    }
    ASSERT_EQ(ok, model_ok) << "step " << step << ": op " << op << " " << DescribeOwner(a) << " -> "
                            << DescribeOwner(b) << " count " << count << ": " << err;
    if (!ok) {
      ASSERT_FALSE(err.empty()) << "step " << step;
    }
    (ok ? stats->ok : stats->refused)[op]++;
    ASSERT_TRUE(Matches(ledger, model, owners)) << "after step " << step;
  }
}

TEST(LedgerTest, RandomWalkMatchesModel) {
  // 1.2M operations in all; a failure names the seed and the step.
  constexpr int kStepsPerWalk = 200'000;
  const std::pair<uint32_t, int> walks[] = {
      {20240601u, 8}, {1u, 1}, {2u, 2}, {3u, 5}, {4u, 16}, {5u, 64},
  };
  WalkStats stats;
  for (const auto& [seed, budget] : walks) {
    RandomWalk(seed, budget, kStepsPerWalk, &stats);
    if (HasFatalFailure()) return;
  }
  // The walk must really exercise both outcomes of every operation.
  for (int op = 0; op < 3; ++op) {
    EXPECT_GT(stats.ok[op], 10'000) << "op " << op;
    EXPECT_GT(stats.refused[op], 10'000) << "op " << op;
  }
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// Status and the trace hear of every change, and only of changes: each owner
// whose count changed, with its count after.
TEST(LedgerTest, TheObserverHearsEachChangedOwnerOnce) {
  Ledger ledger(4);
  std::vector<std::pair<Owner, int>> heard;
  ledger.AddObserver([&](Owner owner, int held) { heard.push_back({owner, held}); });
  Owner a{OwnerKind::kSocket, 1}, b{OwnerKind::kSemaphore, 0};
  std::string err;
  ASSERT_TRUE(ledger.Grant(a, 2, &err)) << err;
  ASSERT_TRUE(ledger.Transfer(a, b, 1, &err)) << err;
  ASSERT_TRUE(ledger.Release(b, 1, &err)) << err;
  EXPECT_FALSE(ledger.Release(b, 1, &err));  // refused: nothing changed
  EXPECT_FALSE(ledger.Grant(a, 9, &err));
  std::vector<std::pair<Owner, int>> expected = {{a, 2}, {a, 1}, {b, 1}, {b, 0}};
  EXPECT_EQ(heard, expected);
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// Growing frees slots at once; shrinking below what is out withholds: no
// grant until enough came back, and nothing is taken from a holder.
TEST(LedgerTest, ResizeGrowsAtOnceAndShrinksAsSlotsComeBack) {
  Ledger ledger(4);
  Owner a{OwnerKind::kSocket, 1};
  std::string err;
  ASSERT_TRUE(ledger.Grant(a, 4, &err)) << err;
  ASSERT_TRUE(ledger.Resize(6, &err)) << err;
  EXPECT_EQ(ledger.free(), 2);
  ASSERT_TRUE(ledger.Resize(2, &err)) << err;
  EXPECT_EQ(ledger.HeldBy(a), 4) << "a shrink took slots from their holder";
  EXPECT_EQ(ledger.free(), 0);
  EXPECT_EQ(ledger.over(), 2);
  EXPECT_TRUE(ledger.CheckInvariants(&err)) << err;
  EXPECT_FALSE(ledger.Grant(a, 1, &err)) << "granted while over the shrunk budget";
  ASSERT_TRUE(ledger.Release(a, 1, &err)) << err;
  EXPECT_EQ(ledger.over(), 1);
  EXPECT_FALSE(ledger.Grant(a, 1, &err)) << "a slot that came back was handed out again";
  ASSERT_TRUE(ledger.Release(a, 2, &err)) << err;
  EXPECT_EQ(ledger.over(), 0);
  EXPECT_EQ(ledger.free(), 1);
  EXPECT_TRUE(ledger.CheckInvariants(&err)) << err;
  EXPECT_FALSE(ledger.Resize(0, &err));
  EXPECT_FALSE(ledger.Resize(Ledger::kMaxBudget + 1, &err));
  EXPECT_EQ(ledger.budget(), 2);
}

}  // namespace
}  // namespace jobbridge
