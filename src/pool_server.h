// The pools socket (per-invocation pools, docs/LEAKS.md): where a shim about
// to exec make or ninja asks the root for a pool of that invocation's own.
//
// Protocol (SOCK_SEQPACKET, one request and one reply per connection):
//   shim -> root  "pool PID COMMAND LINE"  (PID: the process that will exec
//                                           the tool; the rest: its words)
//   root -> shim  "ok" with three fds: the token pipe's read end, the returns
//                 pipe's write end and the life pipe's write end (see
//                 invocation_pool.h), or "error WHY" with none.
// Only the root's uid may connect. Out of fds (a low open-file limit, or
// many tools at once) a request is refused at once, and the tool shares the
// pool it was given. Each pool is listed beside the root's
// budget.json (ListInvocationPool, outer_budget.h) from before the shim gets
// it until the invocation ends, so that a jobbridge nested below the tool
// tells it for the root's. The server then watches each pool: tokens
// written back are handed to the delegate as they come, and when the life
// pipe reads end of file (the invocation's last process has exited) the pool
// is closed and its books go to the delegate. Hooks, if set, hear of each
// pool before its invocation gets it and once it has ended (the bridge hands
// copies of the pool's ends to its caretaker, src/caretaker.h).
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "endpoints/invocation_pool.h"
#include "util/unique_fd.h"

namespace jobbridge {

class PoolServer {
 public:
  struct Invocation {
    uint64_t id = 0;
    pid_t pid = 0;
    std::string command;
    std::unique_ptr<InvocationPool> pool;
  };

  class Delegate {
   public:
    virtual ~Delegate() = default;
    // A new invocation got its pool (empty: the delegate stocks it).
    virtual void OnStarted(Invocation* invocation) = 0;
    // The invocation wrote `count` tokens back (already read out of its pool).
    virtual void OnReturned(Invocation* invocation, int count) = 0;
    // The invocation has ended (or the server shuts down): its books, settled.
    virtual void OnEnded(const Invocation& invocation, const InvocationPool::Books& books) = 0;
  };

  // Optional: `created` runs before the invocation is handed its pool (so a
  // copy made there covers it from its first token), `ended` after OnEnded,
  // and also for a pool that could not be handed over.
  struct Hooks {
    std::function<void(const Invocation&)> created;
    std::function<void(const Invocation&)> ended;
  };

  // The longest request accepted, in bytes.
  static constexpr size_t kMaxRequest = 4096;

  // `list_dir`: where the pools given out are listed, the folder of the
  // root's budget.json.
  PoolServer(uv_loop_t* loop, Delegate* delegate, std::string list_dir);
  ~PoolServer();
  PoolServer(const PoolServer&) = delete;
  PoolServer& operator=(const PoolServer&) = delete;

  // Binds and listens on `path` (mode 0600). Returns false and sets *err.
  bool Listen(const std::string& path, std::string* err);
  void SetHooks(Hooks hooks) { hooks_ = std::move(hooks); }

  size_t invocation_count() const { return invocations_.size(); }

  // Stops listening only: a new invocation's request is refused, and the
  // invocations there are go on (a daemon that stops).
  void StopListening();
  // Stops listening and ends every invocation (OnEnded for each, with what
  // it still held as reclaimed). Run the loop after, for the handles to close.
  void Shutdown();

 private:
  struct Watched;
  struct Pending;
  void ClosePending(Pending* pending);
  static void OnListenReadable(uv_poll_t* handle, int status, int events);
  static void OnRequestReadable(uv_poll_t* handle, int status, int events);
  static void OnPoolEvent(uv_poll_t* handle, int status, int events);
  void Serve(int connection);
  bool RefuseOneOutOfFds();
  void RefuseOutOfFds(int connection, const std::string& detail);
  void Answer(int connection, const std::string& request);
  void End(uint64_t id);

  uv_loop_t* loop_;
  Delegate* delegate_;
  std::string list_dir_;
  Hooks hooks_;
  UniqueFd listen_fd_;
  // Out of fds, closed to make room to accept a request and refuse it at
  // once (RefuseOneOutOfFds), then opened again.
  UniqueFd spare_fd_;
  uv_poll_t* listen_poll_ = nullptr;
  bool warned_out_of_fds_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Watched>> invocations_;
  std::unordered_set<Pending*> pending_;  // connections whose request has not come
};

}  // namespace jobbridge
