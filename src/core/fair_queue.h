// Requests waiting for a slot, served in turns between the clients that
// asked: each waiting client gets one slot per round, in the order the
// clients first asked, whatever the number of requests each has waiting.
// A client that sends a flood of requests then delays a newcomer by at most
// one slot, not by its whole flood (docs/ARCHITECTURE.md, "Sharing one
// budget"). Pure logic: no I/O; the time a client began to wait comes from
// a clock the owner may give it (SetClock), for status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <utility>

namespace jobbridge {

class FairQueue {
 public:
  using Client = uint64_t;

  // Stamps when each client began to wait (Since); without one, 0.
  void SetClock(std::function<uint64_t()> clock) { clock_ = std::move(clock); }

  // One more request of `client`. A client with none waiting joins the end
  // of the round.
  void Push(Client client) {
    auto [it, added] = clients_.try_emplace(client);
    if (added) {
      it->second.turn = order_.insert(order_.end(), client);
      it->second.since = clock_ ? clock_() : 0;
    }
    ++it->second.waiting;
    ++size_;
  }

  // The client whose turn it is. The queue must not be empty.
  Client Front() const { return order_.front(); }

  // Serves one request of Front(): a client with more waiting goes to the
  // end of the round.
  void Pop() {
    Client client = order_.front();
    auto it = clients_.find(client);
    --size_;
    if (--it->second.waiting == 0) {
      order_.pop_front();
      clients_.erase(it);
    } else {
      order_.splice(order_.end(), order_, order_.begin());
    }
  }

  // Withdraws every request of `client`; returns how many there were.
  int Erase(Client client) {
    auto it = clients_.find(client);
    if (it == clients_.end()) return 0;
    int waiting = it->second.waiting;
    order_.erase(it->second.turn);
    clients_.erase(it);
    size_ -= waiting;
    return waiting;
  }

  // Withdraws up to `count` requests of `client`; while some are left it
  // keeps its turn. Returns how many were withdrawn.
  int Withdraw(Client client, int count) {
    auto it = clients_.find(client);
    if (it == clients_.end() || count <= 0) return 0;
    if (count >= it->second.waiting) return Erase(client);
    it->second.waiting -= count;
    size_ -= count;
    return count;
  }

  // Requests of `client` waiting.
  int Count(Client client) const {
    auto it = clients_.find(client);
    return it == clients_.end() ? 0 : it->second.waiting;
  }

  // When `client` began to wait (its first request since it had none), by
  // the clock; 0 when it has none waiting.
  uint64_t Since(Client client) const {
    auto it = clients_.find(client);
    return it == clients_.end() ? 0 : it->second.since;
  }

  void Clear() {
    order_.clear();
    clients_.clear();
    size_ = 0;
  }

  size_t size() const { return size_; }  // requests, all clients together
  bool empty() const { return size_ == 0; }
  size_t clients() const { return order_.size(); }

 private:
  struct Entry {
    int waiting = 0;
    std::list<Client>::iterator turn;  // its place in order_
    uint64_t since = 0;                // clock_() at its first request
  };
  std::function<uint64_t()> clock_;
  std::list<Client> order_;  // clients with requests waiting, whose turn first
  std::unordered_map<Client, Entry> clients_;
  size_t size_ = 0;
};

}  // namespace jobbridge
