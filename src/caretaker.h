// The caretaker: a small process a jobbridge with a pool or a semaphore of
// its own forks before it starts COMMAND, so that the tree outlives a
// jobbridge killed with SIGKILL (or crashed).
//
// The tree writes tokens back into pipes only the bridge reads: the root
// pool's returns pipe (pipe style) and each tool invocation's own returns
// pipe (per-invocation pools, src/endpoints/invocation_pool.h). With the bridge gone,
// make's next token return would die of SIGPIPE (exit 141, without a word).
// The caretaker holds copies of the bridge's ends of the root pool and, as
// the bridge hands them over (Keep), of every live invocation pool's returns
// read end and token write end; it closes those when the invocation ends
// (Forget), so it holds two fds per live invocation, never more. It waits on
// a "life" socket whose other end only the bridge holds. A normal end tells
// it to go (Dismiss). End of file instead means the bridge died: the
// caretaker says so on stderr (it is named in the runtime folder's owner
// file from the start, so a later jobbridge does not sweep the folder away
// while it lives), and moves each token written back into the token pipe of
// the same pool, as make's own jobserver would, until no process of the
// tree holds that pool's write end any more (every invocation pool, and the
// root pool in pipe style); in fifo style it also waits for COMMAND to end.
// Then it removes the runtime folder and exits. Socket clients get no more
// slots (the socket died with the bridge), and a tool started after the
// death shares the pool it was given. The Robust Jobserver's semaphore, which
// would outlive the bridge and keep its blocked clients waiting forever, is
// removed first thing (they get EIDRM). docs/ARCHITECTURE.md, "Invariants and
// where they are enforced".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "endpoints/legacy_pool.h"
#include "runtime_dir-posix.h"
#include "util/unique_fd.h"

namespace jobbridge {

class Caretaker {
 public:
  Caretaker() = default;
  Caretaker(const Caretaker&) = delete;
  Caretaker& operator=(const Caretaker&) = delete;
  ~Caretaker() { Dismiss(); }

  // Forks the caretaker for `pool` (null: jobbridge has no pool of its own,
  // it hands its tree an outer one; else it must stay open until Dismiss),
  // the semaphore set `semaphore_id` (-1: none; endpoints/semaphore_endpoint.h)
  // and `dir`. Call it while the loop has not started and signals are held.
  // Returns false and sets *err when it cannot fork (then there is none).
  bool Start(const LegacyPool* pool, int semaphore_id, RuntimeDir* dir, std::string* err);

  // Tells it the command's pid, so that in fifo style it knows when the tree
  // has ended.
  void SetCommand(pid_t command);

  // Hands it copies of invocation `id`'s returns read end and token write
  // end (the bridge keeps its own), before the invocation gets its pool: if
  // the bridge dies, the caretaker moves that pool's returned tokens back.
  // Says so once if it cannot (then a kill costs that make a SIGPIPE).
  void Keep(uint64_t id, int returns_read, int token_write);
  // Invocation `id` has ended: the caretaker closes its copies.
  void Forget(uint64_t id);

  // The bridge ends normally: the caretaker exits without touching anything,
  // and is waited for. Does nothing when there is none.
  void Dismiss();

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  UniqueFd life_;  // end of file at the caretaker's end: the bridge died
  bool warned_ = false;
};

}  // namespace jobbridge
