#include "core/ledger.h"

namespace jobbridge {

namespace {

const char* KindName(OwnerKind kind) {
  switch (kind) {
    case OwnerKind::kCommand:
      return "command";
    case OwnerKind::kLegacyPool:
      return "legacy pool";
    case OwnerKind::kSocket:
      return "socket client";
    case OwnerKind::kUpstream:
      return "upstream lease";
    case OwnerKind::kInvocation:
      return "invocation pool";
    case OwnerKind::kSemaphore:
      return "semaphore";
  }
  return "unknown owner";
}

bool CheckCount(int count, std::string* err) {
  if (count > 0) return true;
  *err = "a slot count must be positive, got " + std::to_string(count);
  return false;
}

}  // namespace

std::string DescribeOwner(Owner owner) {
  return std::string(KindName(owner.kind)) + " #" + std::to_string(owner.id);
}

Ledger::Ledger(int budget) : budget_(budget), ceiling_(budget) {}

bool Ledger::Resize(int budget, std::string* err) {
  if (budget < 1 || budget > kMaxBudget) {
    *err = "a budget must be from 1 to " + std::to_string(kMaxBudget) + ", got " +
           std::to_string(budget);
    return false;
  }
  budget_ = budget;
  ceiling_ = granted_ > budget ? granted_ : budget;
  return true;
}

int Ledger::HeldBy(Owner owner) const {
  auto it = held_.find(owner);
  return it == held_.end() ? 0 : it->second;
}

std::vector<std::pair<Owner, int>> Ledger::Holders() const { return {held_.begin(), held_.end()}; }

bool Ledger::Grant(Owner owner, int count, std::string* err) {
  if (!CheckCount(count, err)) return false;
  if (count > free()) {
    *err = "cannot grant " + std::to_string(count) + " slot(s) to " + DescribeOwner(owner) +
           ": only " + std::to_string(free()) + " of " + std::to_string(budget_) + " free";
    return false;
  }
  held_[owner] += count;
  granted_ += count;
  Changed(owner);
  return true;
}

bool Ledger::Release(Owner owner, int count, std::string* err) {
  if (!CheckCount(count, err)) return false;
  auto it = held_.find(owner);
  int held = it == held_.end() ? 0 : it->second;
  if (held < count) {
    *err = DescribeOwner(owner) + " released " + std::to_string(count) + " slot(s) but holds " +
           std::to_string(held);
    return false;
  }
  if ((it->second -= count) == 0) held_.erase(it);
  granted_ -= count;
  ceiling_ = granted_ > budget_ ? granted_ : budget_;
  Changed(owner);
  return true;
}

bool Ledger::Transfer(Owner from, Owner to, int count, std::string* err) {
  if (!CheckCount(count, err)) return false;
  if (HeldBy(from) < count) {
    *err = "cannot move " + std::to_string(count) + " slot(s) from " + DescribeOwner(from) +
           " to " + DescribeOwner(to) + ": it holds " + std::to_string(HeldBy(from));
    return false;
  }
  if (from == to) return true;
  if ((held_[from] -= count) == 0) held_.erase(from);
  held_[to] += count;
  Changed(from);
  Changed(to);
  return true;
}

bool Ledger::CheckInvariants(std::string* err) const {
  long sum = 0;
  for (const auto& [owner, count] : held_) {
    if (count <= 0) {
      *err = DescribeOwner(owner) + " is listed with " + std::to_string(count) + " slot(s)";
      return false;
    }
    sum += count;
  }
  if (sum != granted_) {
    *err = "holders add up to " + std::to_string(sum) + " but " + std::to_string(granted_) +
           " are counted as granted";
    return false;
  }
  if (granted_ < 0 || granted_ > ceiling_) {
    *err = std::to_string(granted_) + " slots out of a budget of " + std::to_string(budget_) +
           (ceiling_ > budget_ ? " shrunk from " + std::to_string(ceiling_) : "");
    return false;
  }
  return true;
}

}  // namespace jobbridge
