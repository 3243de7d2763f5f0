// The root legacy pool (legacy_pool.h) as an endpoint (endpoint.h): what
// COMMAND and every tool outside a pool of its own read tokens from. Its
// readers are invisible (they block on an empty pipe), a slot given to it is
// a token put into the pool, and taking one back reads one out of it. It
// also watches the pool, so the broker hears when a client writes a token
// back (the returns pipe, or a write into the FIFO) and, while asked to,
// when a token is there to take.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "endpoints/endpoint.h"
#include "endpoints/legacy_pool.h"

namespace jobbridge {

inline constexpr Owner kLegacyOwner{OwnerKind::kLegacyPool, 0};

class RootPoolEndpoint : public Endpoint {
 public:
  // `pool` must outlive it.
  explicit RootPoolEndpoint(LegacyPool* pool) : pool_(pool) {}
  ~RootPoolEndpoint() override { Stop(); }
  RootPoolEndpoint(const RootPoolEndpoint&) = delete;
  RootPoolEndpoint& operator=(const RootPoolEndpoint&) = delete;

  // Starts watching: `wake` runs on the loop when a client wrote a token
  // back, and, while WatchTokens(true), when the pool holds one.
  void Start(uv_loop_t* loop, std::function<void()> wake);
  // Closes the handles (freed in their close callbacks). Idempotent.
  void Stop();

  // Pipes: clients write tokens back into a returns pipe only the bridge
  // reads. False for a FIFO, where they land in the pool itself.
  bool pipes() const { return pool_->ReturnsFd() >= 0; }
  // True when clients wrote tokens back that TakeReturned has not read yet.
  bool returned_waiting() const { return returned_waiting_; }
  // Reads every token clients wrote back; how many, or -1 with *err.
  int TakeReturned(std::string* err);
  // Wakes the broker while the pool holds a token (a FIFO's clients and
  // those that reach a pipe by its path write theirs back into it).
  void WatchTokens(bool on);

  Owner owner() const override { return kLegacyOwner; }
  Traits traits() const override { return {.waiters_seen = false, .keeps_stock = true}; }
  // Tokens a client could read now (returned ones not passed on excluded).
  int Stocked(std::string* err) const override { return pool_->Available(err); }
  bool Give(int count, std::string* err) override { return pool_->Put(count, err); }
  int TakeBack(int max, std::string* err) override { return pool_->Take(max, err); }

 private:
  static void OnReturnsReadable(uv_poll_t* handle, int status, int events);
  static void OnTokenReadable(uv_poll_t* handle, int status, int events);
  static void OnFifoWritten(uv_fs_event_t* handle, const char* name, int events, int status);

  LegacyPool* pool_;
  std::function<void()> wake_;
  bool returned_waiting_ = false;
  bool watching_tokens_ = false;
  uv_poll_t* returns_poll_ = nullptr;    // handles are freed in their close callbacks
  uv_fs_event_t* fifo_watch_ = nullptr;  // a FIFO pool: one event per client write
  uv_poll_t* token_poll_ = nullptr;
};

}  // namespace jobbridge
