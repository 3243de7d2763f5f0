// The shim's side of the pools socket (pool_server.h): asks the root for a
// pool of this invocation's own before the shim execs make or ninja.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/unique_fd.h"

namespace jobbridge {

// The variable that names the pools socket to the shims (set by a root that
// serves per-invocation pools: one with its own budget and adapters on).
inline constexpr const char* kPoolsVariable = "JOBBRIDGE_POOLS";

// What the root hands over: R of the token pipe, W of the returns pipe (the
// invocation's `--jobserver-auth=R,W`), W of the life pipe. Close-on-exec,
// as they arrive: the shim clears it on the three before its exec.
struct ReceivedPool {
  UniqueFd token_read;
  UniqueFd returns_write;
  UniqueFd life_write;
};

// How long the shim waits for the root's reply before it gives up (and the
// tool then runs on the pool it inherited).
inline constexpr int kPoolReplyTimeoutMs = 10000;

// Connects to the pools socket at `path`, asks for a pool for `pid` running
// `command`, and waits for the reply. Returns false and sets *err (naming
// the path, or the root's own reason) when there is none to be had.
bool RequestPool(const std::string& path, pid_t pid, const std::string& command, ReceivedPool* pool,
                 std::string* err);

}  // namespace jobbridge
