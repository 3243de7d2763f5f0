// How a jobbridge settles its budget before anything runs (bridge.cc's
// set-up): the outer budget to join, or none (it is the root then), and the
// legacy pool its command's tree gets; and how it counts that pool's tokens
// back at the end.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "core/ledger.h"
#include "endpoints/legacy_pool.h"
#include "outer_budget.h"
#include "runtime_dir-posix.h"
#include "util/fifo_pair.h"

namespace jobbridge {

// The legacy jobserver the command's tree gets: a pool of jobbridge's own, or
// (when it joined an outer legacy pool) that pool itself.
struct ChildPool {
  std::unique_ptr<LegacyPool> own;
  JobserverAuth identity;  // for budget.json
  PoolNames names;         // for MAKEFLAGS
  std::vector<int> inherited_fds;
  FifoPair outer_fifo;  // R,W of an outer FIFO, for the clients that need fds
};

// The budget to join, or none (then jobbridge is the root). Says what it
// skipped and why, and what --root and -j mean here.
OuterBudget ChooseBudget(const Options& options);

// A root's pool holds N-1 tokens (granted to the legacy side in `ledger`), a
// daemon's N (no command holds one).
// A joined jobbridge hands its tree the outer legacy pool itself, or, when
// there is none to share, an empty pool of its own. False with *err.
bool MakeChildPool(const Options& options, const OuterBudget& outer, Ledger* ledger,
                   const RuntimeDir& runtime_dir, ChildPool* pool, std::string* err);

// Tokens a client wrote back without taking them, dropped while the tree ran
// (Broker::DropSurplus): until then the pool held more than the budget.
struct SurplusSeen {
  int tokens = 0;
  uint64_t first_ms = 0;  // after the start
};

// Counts the tokens back and says what is missing or extra. Returns false
// when the pool does not hold what the ledger says it should (*missing: the
// tokens that did not come back). Without a command slot (a daemon), a token
// beyond the count is never that slot.
bool CloseLegacyPool(LegacyPool* pool, Ledger* ledger, const SurplusSeen& surplus, bool verbose,
                     bool command_slot = true, int* missing = nullptr);

}  // namespace jobbridge
