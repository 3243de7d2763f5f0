#include "control/sampler.h"

#include "endpoints/root_pool_endpoint.h"
#include "util/uv_handle.h"

namespace jobbridge {

void Sampler::Start(uv_loop_t* loop, Ledger* ledger, Broker* broker) {
  loop_ = loop;
  ledger_ = ledger;
  broker_ = broker;
  turn_end_ = new uv_check_t;
  uv_check_init(loop, turn_end_);
  turn_end_->data = this;
  if (!broker_) {
    // Joined: a relay serves the tree; every change is the ledger's.
    ledger_->AddObserver([this](Owner, int) {
      if (turn_end_) uv_check_start(turn_end_, OnTurnEnd);
    });
    return;
  }
  broker_->SetHooks({[this] {
                       if (turn_end_) uv_check_start(turn_end_, OnTurnEnd);
                     },
                     [this](const char* what, int count, pid_t pid, const std::string& command) {
                       for (const Noted& noted : noted_) noted(what, count, pid, command);
                     }});
}

void Sampler::Stop() {
  if (broker_) broker_->SetHooks({});
  CloseAndDelete(turn_end_);
  turn_end_ = nullptr;
}

void Sampler::OnTurnEnd(uv_check_t* check) {
  uv_check_stop(check);
  static_cast<Sampler*>(check->data)->SampleNow();
}

BudgetSample Sampler::SampleNow() {
  BudgetSample sample;
  sample.now_ms = uv_now(loop_);
  // Joined, the budget is the outer one's, which it does not say: 0.
  sample.budget = broker_ ? ledger_->budget() : 0;
  sample.withheld = ledger_->over();
  if (broker_) {
    sample.places = broker_->Places();
    for (const Broker::Place& place : sample.places) {
      size_t side = SideIndex(place.owner.kind);
      sample.in_use[side] += place.held - place.idle;
      sample.idle[side] += place.idle;
      sample.waiting[side] += place.waiting;
    }
  } else {
    for (const auto& [owner, held] : ledger_->Holders()) {
      sample.in_use[SideIndex(owner.kind)] += held;
    }
  }
  sample.in_use[0] = ledger_->HeldBy(kCommandOwner);
  for (const Listener& listener : listeners_) listener(sample);
  return sample;
}

}  // namespace jobbridge
