// How a jobbridge settles its budget before anything runs (bridge.cc's
// set-up): the outer budget to join, or none (it is the root then), and the
// legacy pool its command's tree gets.
#pragma once

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

// A root's pool holds N-1 tokens (granted to the legacy side in `ledger`).
// A joined jobbridge hands its tree the outer legacy pool itself, or, when
// there is none to share, an empty pool of its own. False with *err.
bool MakeChildPool(const Options& options, const OuterBudget& outer, Ledger* ledger,
                   const RuntimeDir& runtime_dir, ChildPool* pool, std::string* err);

}  // namespace jobbridge
