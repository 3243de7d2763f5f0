// The open-file limit jobbridge runs under: raised for its socket clients,
// and checked before anything is made, so that too few free fds is a clear
// error and not a crash or a half-made runtime folder.
#pragma once

#include <sys/resource.h>

#include <string>

namespace jobbridge {

// jobbridge's pipes, sockets (tokens and control), FIFO descriptions, shim
// lookups and libuv's own fds, with room to spare; below this libuv aborts
// or a half-made runtime folder stays behind.
inline constexpr rlim_t kMinFreeFds = 18;

// What serving per-invocation pools (PoolServer) takes beyond that: the
// pools socket and its spare fd, the command's start (its status pipe), and
// one invocation's pool as it is made (the connection, three pipes, a
// private description, a pidfd, the read watchers' inotify instance). With
// fewer free, a root serves none, and its tools share the command's pool.
inline constexpr rlim_t kFdsForPools = 14;

// Raises the soft fd limit to the hard one (every socket client costs an
// fd). Returns the limit jobbridge was started with, for the command.
rlimit RaiseFdLimit();

// How many fds are free under the (raised) open-file limit, which goes to
// *limit: numbers at or above it take no room. RLIM_INFINITY when there is
// no limit, or /proc cannot tell.
rlim_t FreeFds(rlim_t* limit);

// Whether at least kMinFreeFds fds are free under the (raised) open-file
// limit. Returns false and sets *err, naming the limit and the fix, otherwise.
bool EnoughFreeFds(std::string* err);

// Whether kFdsForPools fds are free, once the rest is set up. Returns false
// and sets *err, naming the limit and the fix, otherwise.
bool EnoughFdsForPools(std::string* err);

}  // namespace jobbridge
