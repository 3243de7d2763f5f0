// The token ledger: who holds which of the budget's N slots.
//
// Pure bookkeeping (STYLE.md rule 1): no I/O, no clock, no libuv. Every slot
// that is not free has exactly one owner, and no operation can make the slots
// out exceed the budget or take back a slot from someone who does not hold it.
// The byte-moving code asks the ledger first and moves bytes only when the
// ledger said yes.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace jobbridge {

enum class OwnerKind : uint8_t {
  kCommand,     // the implicit slot of the command jobbridge runs
  kLegacyPool,  // tokens parked in (or taken from) a legacy pipe/FIFO pool
  kSocket,      // a socket-protocol connection (later issues)
  kUpstream,    // a lease from an outer budget (later issues)
  kInvocation,  // tokens stocked in (or taken from) one tool invocation's own pool
  kSemaphore,   // units in the Robust Jobserver's semaphore, or taken from it by its clients
};

struct Owner {
  OwnerKind kind;
  uint64_t id = 0;
  auto operator<=>(const Owner&) const = default;
};

// "legacy pool #0", "command #0", ... for messages.
std::string DescribeOwner(Owner owner);

class Ledger {
 public:
  // The largest budget jobbridge accepts; a legacy pipe must hold budget-1
  // bytes without blocking, and 4096 fits every pipe's minimum capacity.
  static constexpr int kMaxBudget = 4096;

  // budget must be in [1, kMaxBudget].
  explicit Ledger(int budget);

  // Told, after every change, each owner whose count changed and what it
  // holds now (status and the trace each add one; none may call back in).
  using Observer = std::function<void(Owner owner, int held)>;
  void AddObserver(Observer observer) { observers_.push_back(std::move(observer)); }

  int budget() const { return budget_; }
  int granted() const { return granted_; }
  int free() const { return granted_ < budget_ ? budget_ - granted_ : 0; }
  // Slots out beyond the budget after it shrank (Resize): withheld as they
  // come back, never taken from their holders; 0 otherwise.
  int over() const { return granted_ > budget_ ? granted_ - budget_ : 0; }

  // Changes the budget to `budget` (in [1, kMaxBudget]; false with *err
  // otherwise, nothing changed). Growing frees slots at once; shrinking
  // below what is out leaves over() > 0 until enough come back: no grant
  // succeeds meanwhile.
  bool Resize(int budget, std::string* err);
  int HeldBy(Owner owner) const;
  std::vector<std::pair<Owner, int>> Holders() const;

  // Gives `count` (> 0) free slots to `owner`. Returns false and sets *err when
  // fewer than `count` slots are free; nothing changes then.
  bool Grant(Owner owner, int count, std::string* err);

  // Takes `count` (> 0) slots back from `owner`. Returns false and sets *err
  // when `owner` holds fewer than `count`; nothing changes then.
  bool Release(Owner owner, int count, std::string* err);

  // Moves `count` (> 0) slots from one holder to another without freeing them.
  // Returns false and sets *err when `from` holds fewer; nothing changes then.
  bool Transfer(Owner from, Owner to, int count, std::string* err);

  // Recomputes the totals from scratch. Returns false and sets *err when the
  // books do not balance (a bug in the ledger itself).
  bool CheckInvariants(std::string* err) const;

 private:
  void Changed(Owner owner) const {
    if (observers_.empty()) return;
    int held = HeldBy(owner);
    for (const Observer& observer : observers_) observer(owner, held);
  }

  int budget_;
  int granted_ = 0;
  // The most that may be out: the budget, or what was out when it shrank,
  // falling as slots come back.
  int ceiling_ = 0;
  std::map<Owner, int> held_;  // only owners holding at least one slot
  std::vector<Observer> observers_;
};

}  // namespace jobbridge
