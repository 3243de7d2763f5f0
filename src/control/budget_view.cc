#include "control/budget_view.h"

#include <chrono>
#include <fstream>
#include <iterator>

#include "endpoints/root_pool_endpoint.h"

namespace jobbridge {

namespace {

using nlohmann::json;

constexpr size_t kMaxCommandLine = 200;

json ZeroPerSide() {
  json sides = json::object();
  for (const char* side : kSideNames) sides[side] = 0;
  return sides;
}

}  // namespace

std::string CommandLineOf(pid_t pid) {
  if (pid <= 0) return "";
  std::ifstream file("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  for (char& c : text) {
    if (c == '\0') c = ' ';
  }
  return text.size() > kMaxCommandLine ? text.substr(0, kMaxCommandLine) + "..." : text;
}

BudgetView::BudgetView(Sources sources) : sources_(std::move(sources)) {
  int64_t epoch_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  epoch_minus_loop_ms_ = epoch_ms - static_cast<int64_t>(uv_now(sources_.loop));
  uv_loop_t* loop = sources_.loop;
  for (const auto& [owner, held] : sources_.ledger->Holders()) held_since_[owner] = uv_now(loop);
  sources_.ledger->AddObserver([this, loop](Owner owner, int held) {
    if (held == 0) {
      held_since_.erase(owner);
    } else {
      held_since_.try_emplace(owner, uv_now(loop));
    }
  });
}

int64_t BudgetView::EpochMs(uint64_t loop_ms) const {
  return static_cast<int64_t>(loop_ms) + epoch_minus_loop_ms_;
}

json BudgetView::Status() {
  Ledger* ledger = sources_.ledger;
  json in_use = ZeroPerSide(), idle = ZeroPerSide(), waiting = ZeroPerSide();
  int stocked = 0;
  if (sources_.broker) {
    for (const Broker::Place& place : sources_.broker->Places()) {
      const char* side = SideOf(place.owner.kind);
      in_use[side] = in_use[side].get<int>() + place.held - place.idle;
      idle[side] = idle[side].get<int>() + place.idle;
      waiting[side] = waiting[side].get<int>() + place.waiting;
      stocked += place.held;
    }
  }
  // What the broker's places do not cover: the command's implicit slot, a
  // joined jobbridge's leases.
  for (const auto& [owner, held] : ledger->Holders()) {
    bool placed = sources_.broker && owner.kind != OwnerKind::kCommand;
    if (!placed) in_use[SideOf(owner.kind)] = in_use[SideOf(owner.kind)].get<int>() + held;
  }
  json status = {{"in_use", in_use},
                 {"idle", idle},
                 {"waiting", waiting},
                 {"joined", sources_.joined.empty() ? json(nullptr) : json(sources_.joined)},
                 {"daemon", sources_.daemon}};
  if (sources_.daemon) status["stopping"] = sources_.stopping && sources_.stopping();
  if (sources_.joined.empty()) {
    status["budget"] = ledger->budget();
    status["free"] = ledger->free();
    // After a shrink: slots out beyond the budget, withheld as they come back.
    status["withheld"] = ledger->over();
  } else {
    status["budget"] = nullptr;  // the outer budget's, which it does not say
    status["free"] = nullptr;
    status["withheld"] = 0;
  }
  Broker* broker = sources_.broker;
  status["reclaimed"] = broker ? broker->reclaimed() : 0;
  status["surplus"] = broker ? broker->surplus_dropped() + broker->counted_surplus() : 0;
  return status;
}

json BudgetView::Holders() {
  uint64_t now = uv_now(sources_.loop);
  json holders = json::array(), waiters = json::array();
  auto entry = [&](const char* side, pid_t pid, int slots, uint64_t since) {
    json e = {{"side", side}, {"slots", slots}};
    if (pid > 0) {
      e["pid"] = pid;
      e["command"] = CommandLineOf(pid);
      e["attributed"] = true;
    } else {
      e["pid"] = nullptr;
      e["attributed"] = false;
    }
    if (since != 0) {
      e["since_ms"] = EpochMs(since);
      e["for_ms"] = now - since;
    }
    return e;
  };
  if (int held = sources_.ledger->HeldBy(kCommandOwner); held > 0) {
    json e = entry("command", sources_.command ? sources_.command() : -1, held,
                   held_since_.count(kCommandOwner) ? held_since_[kCommandOwner] : 0);
    e["note"] = "the implicit slot: COMMAND runs on it";
    holders.push_back(e);
  }
  if (!sources_.broker) return {{"holders", holders}, {"waiters", waiters}};
  for (const Broker::Place& place : sources_.broker->Places()) {
    const char* side = SideOf(place.owner.kind);
    int in_use = place.held - place.idle;
    auto since = held_since_.find(place.owner);
    if (in_use > 0) {
      json e = entry(side, place.pid, in_use, since == held_since_.end() ? 0 : since->second);
      if (place.owner.kind == OwnerKind::kLegacyPool) {
        e["note"] = "tokens read from the shared pool by processes jobbridge cannot tell apart";
      } else if (place.owner.kind == OwnerKind::kSemaphore) {
        e["note"] = "units taken by ROBUST_JOBSERVER clients; the kernel does not say which";
      } else if (place.owner.kind == OwnerKind::kInvocation) {
        e["note"] = "tokens its processes read from its own pool";
      }
      holders.push_back(e);
    }
    if (place.waiting > 0) {
      json e = entry(side, place.pid, place.waiting, place.waiting_since);
      e.erase("slots");
      e["requests"] = place.waiting;
      waiters.push_back(e);
    }
  }
  return {{"holders", holders}, {"waiters", waiters}};
}

bool BudgetView::Resize(int jobs, json* body, std::string* err) {
  if (!sources_.broker) {
    *err = "this jobbridge joined " + sources_.joined +
           ": its budget is that one's (resize the outermost jobbridge, or restart with --root)";
    return false;
  }
  if (!sources_.broker->Resize(jobs, err)) return false;
  if (sources_.resized) sources_.resized(jobs);
  *body = {{"jobs", jobs}, {"withheld", sources_.ledger->over()}};
  return true;
}

}  // namespace jobbridge
