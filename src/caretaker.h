// The caretaker: a small process a root forks before it starts COMMAND, so
// that the tree outlives a jobbridge killed with SIGKILL (or crashed).
//
// In pipe style the tree writes tokens back into a pipe only the bridge
// reads: with the bridge gone, make's next token return would die of
// SIGPIPE (exit 141, without a word). The caretaker holds a copy of the
// bridge's ends of the pool and waits on a "life" socket whose other end only
// the bridge holds. A normal end tells it to go (Dismiss). End of file
// instead means the bridge died: the caretaker says so on stderr (it is
// named in the runtime folder's owner file from the start, so a later
// jobbridge does not sweep the folder away while it lives), and, in pipe
// style, moves each token written back into the token pipe, as make's own
// jobserver would, until no process of the tree holds the write end any more;
// in fifo style it waits for COMMAND to end. Then it removes the runtime
// folder and exits. Socket clients get no more slots (the socket died with
// the bridge). docs/ARCHITECTURE.md, "When the bridge is killed".
#pragma once

#include <sys/types.h>

#include <string>

#include "legacy_pool.h"
#include "runtime_dir-posix.h"
#include "util/unique_fd.h"

namespace jobbridge {

class Caretaker {
 public:
  Caretaker() = default;
  Caretaker(const Caretaker&) = delete;
  Caretaker& operator=(const Caretaker&) = delete;
  ~Caretaker() { Dismiss(); }

  // Forks the caretaker for `pool` (which must stay open until Dismiss) and
  // `dir`. Call it while the loop has not started and signals are held.
  // Returns false and sets *err when it cannot fork (then there is none).
  bool Start(const LegacyPool& pool, RuntimeDir* dir, std::string* err);

  // Tells it the command's pid, so that in fifo style it knows when the tree
  // has ended.
  void SetCommand(pid_t command);

  // The bridge ends normally: the caretaker exits without touching anything,
  // and is waited for. Does nothing when there is none.
  void Dismiss();

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  UniqueFd life_;  // end of file at the caretaker's end: the bridge died
};

}  // namespace jobbridge
