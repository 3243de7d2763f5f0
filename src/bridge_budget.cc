#include "bridge_budget.h"

#include <cstdio>
#include <cstdlib>

#include "broker.h"
#include "endpoints/root_pool_endpoint.h"
#include "log.h"

namespace jobbridge {

OuterBudget ChooseBudget(const Options& options) {
  std::vector<std::string> warnings;
  OuterBudget outer = FindOuterBudget(std::getenv, &warnings);
  for (const std::string& warning : warnings) LogWarning(warning);
  std::string own = "a budget of its own (-j" + std::to_string(options.jobs) + ")";
  if (options.root) {
    if (outer.kind != OuterBudget::Kind::kNone) {
      // The outer budget counts this command as one job (the slot it was
      // started with); the tree below runs up to N.
      LogWarning("--root: starting " + own + " inside " + outer.Describe() +
                 ": the two budgets add up, so up to " + std::to_string(options.jobs - 1) +
                 " job(s) more than the outer one allows may run at once");
    }
    return {};
  }
  if (outer.kind == OuterBudget::Kind::kNone) {
    if (!warnings.empty()) LogWarning("no usable outer budget, so this tree gets " + own);
    return outer;
  }
  if (options.jobs_given) {
    LogWarning("-j" + std::to_string(options.jobs) + " ignored: joining " + outer.Describe() +
               " (--root starts a budget of its own)");
  }
  bool no_pool = outer.legacy.kind == JobserverAuth::Kind::kNone;
  if (outer.kind == OuterBudget::Kind::kSocket && no_pool) {
    LogWarning(outer.Describe() + " shares no legacy jobserver with this tree: make, cargo and " +
               "ninja below run one job at a time (their implicit slot); socket clients share " +
               "the outer budget");
  }
  if (outer.kind == OuterBudget::Kind::kSysvsem) {
    LogWarning(outer.Describe() + " has no legacy jobserver to share with this tree: make, " +
               "cargo and ninja below run one job at a time (their implicit slot); socket " +
               "clients and ROBUST_JOBSERVER clients share the outer budget");
  }
  if (options.verbose) LogInfo("joining " + outer.Describe());
  return outer;
}

// docs/ARCHITECTURE.md, "Joining an outer budget".
bool MakeChildPool(const Options& options, const OuterBudget& outer, Ledger* ledger,
                   const RuntimeDir& runtime_dir, ChildPool* pool, std::string* err) {
  if (outer.legacy.kind == JobserverAuth::Kind::kPipe) {  // set only when joining
    pool->identity = outer.legacy;
    pool->names = {outer.legacy, {}};
    pool->inherited_fds = {outer.legacy.read_fd, outer.legacy.write_fd};
    return true;
  }
  if (outer.legacy.kind == JobserverAuth::Kind::kFifo) {
    if (!OpenFifoPair(outer.legacy.fifo_path, &pool->outer_fifo, err)) return false;
    int r = pool->outer_fifo.read_end.get(), w = pool->outer_fifo.write_end.get();
    pool->identity = outer.legacy;
    pool->names = {{JobserverAuth::Kind::kPipe, r, w, ""}, outer.legacy};
    pool->inherited_fds = {r, w};
    return true;
  }
  // A daemon has no command: every slot starts in the pool.
  int tokens = outer.kind != OuterBudget::Kind::kNone ? 0
               : options.daemon.on                    ? options.jobs
                                                      : options.jobs - 1;
  if (tokens > 0) ledger->Grant(kLegacyOwner, tokens, err);
  pool->own = LegacyPool::Create(options.legacy_style, tokens, runtime_dir.path(), err);
  if (!pool->own) return false;
  pool->identity = pool->own->Auth();
  pool->names = pool->own->Names();
  pool->inherited_fds = pool->own->InheritedFds();
  return true;
}

// docs/ARCHITECTURE.md, "Invariants and where they are enforced": every
// token counted back at the end.
bool CloseLegacyPool(LegacyPool* pool, Ledger* ledger, const SurplusSeen& surplus, bool verbose,
                     bool command_slot, int* missing) {
  pool->CloseInherited();
  std::string err;
  int back = pool->Drain(&err);
  int expected = ledger->HeldBy(kLegacyOwner);
  if (back < 0) {
    LogWarning(err);
    return false;
  }
  // The command's implicit slot may have been lent to the pool (Broker::
  // SettleLegacyBooks; a FIFO is looked at only on events, so the broker
  // may not have seen it yet): it is the command's again, whether its
  // lender took it back or it sits in the pool. One token beyond the count
  // is that slot, not surplus.
  if (command_slot && ledger->HeldBy(kCommandOwner) == 0) {
    ledger->Transfer(kLegacyOwner, kCommandOwner, 1, &err);
    --expected;
  }
  if (back > expected) --back;
  if (expected > 0) ledger->Release(kLegacyOwner, expected, &err);
  if (back < expected) {
    if (missing) *missing = expected - back;
    LogWarning(std::to_string(expected - back) + " of " + std::to_string(expected) +
               " jobserver tokens did not come back: a job holding them was killed, or still "
               "runs outside the tree");
    return false;
  }
  if (back > expected) {
    LogWarning("the jobserver pool held " + std::to_string(back - expected) +
               " token(s) more than the " + std::to_string(expected) +
               " it handed out: a client wrote back tokens it never took");
    return false;
  }
  if (surplus.tokens > 0) {
    char when[32];
    std::snprintf(when, sizeof when, "%.1f", static_cast<double>(surplus.first_ms) / 1000);
    LogWarning("the " + std::to_string(expected) + " jobserver tokens came back, but legacy " +
               "clients wrote back " + std::to_string(surplus.tokens) +
               " token(s) they never took during the run, the first " + when +
               " s after the start; they were dropped, and until each was, more jobs than the " +
               "budget could run");
    return false;
  }
  if (verbose) {
    LogInfo("all " + std::to_string(expected) + " jobserver tokens came back (budget " +
            std::to_string(ledger->budget()) + ")");
  }
  return true;
}

}  // namespace jobbridge
