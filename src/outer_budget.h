// The budget jobbridge was started in, if any: a socket root named by
// JOBSERVERV2, a Robust Jobserver semaphore named by ROBUST_JOBSERVER, or a
// legacy jobserver named by CARGO_MAKEFLAGS / MAKEFLAGS / MFLAGS. A nested jobbridge joins it
// instead of starting a second budget (docs/ARCHITECTURE.md, "Joining an outer budget").
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/makeflags.h"

namespace jobbridge {

struct OuterBudget {
  enum class Kind { kNone, kSocket, kSysvsem, kLegacy };
  Kind kind = Kind::kNone;
  std::string socket_path;  // kSocket: the root's JOBSERVERV2
  int semaphore_set = -1;   // kSysvsem: the set ROBUST_JOBSERVER names
  // The legacy pool jobbridge's legacy children share: for kLegacy the outer
  // pool itself; for kSocket a pool of the socket root's, when it says so
  // (SocketRootSharesPool) of the very pool MAKEFLAGS names: the one it gives
  // its tree, or the one it gave the tool that started this jobbridge. Kind
  // kNone when there is none (always for kSysvsem: a semaphore root names no
  // pool of its own).
  JobserverAuth legacy;
  std::string legacy_source;  // the variable `legacy` came from
  std::optional<int> jobs;    // the -jN beside it, when there was one

  // "make's jobserver (MAKEFLAGS, fds 3,4)", "the socket root PATH" or
  // "the Robust Jobserver's semaphore sysvsem:ID".
  std::string Describe() const;
};

// Finds the outer budget in the order the client library uses
// (docs/PROTOCOL.md, "Which jobserver a client uses"): JOBSERVERV2 first,
// then ROBUST_JOBSERVER, then the first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS
// that names a jobserver. One that is set but unusable (closed fds, fds that
// are no longer pipes, a missing FIFO, a socket nobody listens on, a
// malformed word, a semaphore set removed, of another user or of several
// semaphores) is skipped with a warning in *warnings that names the fault;
// the next one is tried.
OuterBudget FindOuterBudget(const GetEnvFn& getenv_fn, std::vector<std::string>* warnings);

// Whether jobbridge runs as a job of a build (a make recipe, a cargo build
// script, a tool under another jobserver): MAKELEVEL, JOBSERVERV2,
// ROBUST_JOBSERVER or a
// jobserver word in the MAKEFLAGS variables is set, usable or not. Such a
// jobbridge leaves the process group and the terminal to that build.
bool StartedInsideABuild(const GetEnvFn& getenv_fn);

// Every open pipe or FIFO fd that a jobserver word in CARGO_MAKEFLAGS,
// MAKEFLAGS or MFLAGS names (R,W forms). Those jobbridge does not hand on to
// its command (another budget's pool: an outer make's under --root, a make
// in between that started its own) must not leak into it.
std::vector<int> JobserverFdsInEnvironment(const GetEnvFn& getenv_fn);

// Whether an inherited R,W names open pipe ends that can be read (R) and
// written (W), or fifo:PATH is a FIFO this user may read and write. Returns
// false and sets *err, naming the fault and its usual cause, otherwise.
bool CheckLegacyJobserver(const JobserverAuth& auth, std::string* err);

// Whether ROBUST_JOBSERVER's `value` names a set this jobbridge can join: a
// sysvsem:ID whose set exists, is this user's to use and holds one
// semaphore. Returns false and sets *err naming the fault otherwise.
bool CheckRobustJobserver(const std::string& value, int* set, std::string* err);

// Whether something listens on the socket at `path`: connects without
// blocking and hangs up at once (a root sees a request withdrawn). Returns
// false and sets *err naming the fault otherwise.
bool CheckSocketRoot(const std::string& path, std::string* err);

// Writes `dir`/budget.json: which legacy pool this jobbridge gives its tree,
// by device and inode, so that a jobbridge nested under its socket can tell
// that MAKEFLAGS names the same budget. Returns false and sets *err on failure.
bool WriteBudgetFile(const std::string& dir, const JobserverAuth& legacy, std::string* err);

// Lists, in `dir` beside budget.json, the pool a root gives one tool
// invocation (PoolServer): the pipe behind `pool_fd`, by device and inode,
// for `pid`. A make started through the root's shims names that pool in
// MAKEFLAGS instead of the root's own, and a jobbridge nested below it must
// still tell it for the root's. Listed, not asked for over a socket: the
// check stays a look at files, as for budget.json, and a pool whose root has
// died is still recognized as that root's (and not joined). The root lists a
// pool before the shim gets it and unlists it (UnlistInvocationPool, with
// *entry) when the invocation's last process has exited. Returns false and
// sets *err when it cannot be listed.
bool ListInvocationPool(const std::string& dir, int pool_fd, pid_t pid, std::string* entry,
                        std::string* err);
void UnlistInvocationPool(const std::string& entry);

// Whether the jobbridge listening at `socket_path` said that `legacy` is a
// pool of its budget: the pool it gives its tree (budget.json), or one it
// gave a tool invocation and still lists (ListInvocationPool).
bool SocketRootSharesPool(const std::string& socket_path, const JobserverAuth& legacy);

}  // namespace jobbridge
