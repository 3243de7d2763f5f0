// The bridge's private runtime folder: mode 0700, random name, removed at exit.
// It holds the FIFO of a fifo-style pool, the socket, and an "owner" file
// naming the process that made it, so that a later jobbridge can remove the
// folder of one that was killed (SIGKILL leaves no chance to clean up), and
// a "semaphore" file naming the Robust Jobserver's set, which outlives its
// creator, so that the same sweep removes it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace jobbridge {

class RuntimeDir {
 public:
  RuntimeDir() = default;
  RuntimeDir(RuntimeDir&& other) noexcept;
  RuntimeDir& operator=(RuntimeDir&&) = delete;
  RuntimeDir(const RuntimeDir&) = delete;
  ~RuntimeDir();

  // Creates "jobbridge-XXXXXX" under $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp
  // (empty variables count as unset). Returns false and sets *err, naming the
  // folder and the variable to change, when it cannot be created.
  bool Create(std::string* err);

  // What SweepStale removed: a folder, and the semaphore set it named
  // (NoteSemaphore), -1 when none was left.
  struct Swept {
    std::string path;
    int semaphore = -1;
    bool operator==(const Swept&) const = default;
  };

  // Removes the folders in the same parent that Create would use which were
  // made by a jobbridge of this user that no longer runs (its "owner" file
  // names a pid that is gone or was reused since), and the semaphore set
  // each names if it is still there and is still that set (this user's, one
  // semaphore, the same creation time: an id may be reused).
  static std::vector<Swept> SweepStale();

  // The control socket of the jobbridge with pid `pid` (the first owner its
  // folder names), among the folders Create would use; "" when none is found.
  static std::string ControlSocketOf(pid_t pid);

  // Names semaphore set `id` (just created, endpoints/semaphore_endpoint.h)
  // in the folder, with its creation time, for SweepStale. Returns false and
  // sets *err when it cannot be looked at or written down.
  bool NoteSemaphore(int id, std::string* err) const;

  // Names `pid` (the Caretaker) as the folder's owner beside this process,
  // so that SweepStale leaves the folder alone while either lives: from the
  // start, since a sweep may run the moment the bridge is killed.
  void AddOwner(pid_t pid) const;

  // Removes the folder and everything in it. Returns false and sets *err when
  // the folder cannot be removed.
  bool Remove(std::string* err);

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace jobbridge
