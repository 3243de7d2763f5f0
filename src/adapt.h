// Adapters: every legacy tool gets the jobserver form it understands. make
// 4.3 aborts on fifo:PATH and ninja 1.13 ignores R,W (FACTS.md), so a make
// recipe that runs ninja, or a cargo build script that runs make, would
// otherwise lose the budget. jobbridge puts a folder of shims (make, gmake,
// ninja: links to its own binary) first in the command's PATH; run under one
// of those names (or by the full path of one) it rewrites the inherited
// MAKEFLAGS and MFLAGS to the tool's form, pointing at the same pool, and
// execs the real tool found further down PATH. make gets R,W alone; every
// other tool (ninja) gets every name of the pool, so that the tools it runs
// find the form they read too (JobserverWords).
#pragma once

#include <string>
#include <vector>

namespace jobbridge {

// The tools the shims stand in for. cargo is adapted under `jobbridge
// daemon` only (it takes its implicit slot and gets a pool of its own there);
// elsewhere its shim runs it unchanged.
inline constexpr const char* kAdaptedTools[] = {"make", "gmake", "ninja", "cargo"};

// True when `name` (a basename) is one of kAdaptedTools.
bool IsAdaptedTool(const std::string& name);

// Rewrites the jobserver in the environment for `tool` (a basename: make and
// gmake get R,W, any other name every name of the pool) and execs `argv`.
// argv[0] is the tool itself when it is a path that is not jobbridge;
// otherwise (a shim, by name or by full path) its name is looked up in PATH,
// skipping any entry that is jobbridge itself (gmake falls back to make). A
// CARGO_MAKEFLAGS that jobbridge wrote is cleared for make (make's MAKEFLAGS
// is the nearest pool) and written for other tools when unset (R,W for
// jobserver-rs). A jobserver it cannot adapt (closed fds, a missing FIFO) is
// a warning, and the tool runs with it unchanged. Returns only on failure:
// 127 when the real tool is not found, 126 when it cannot be run; the reason
// is on stderr.
int RunAdapted(const std::string& tool, const std::vector<std::string>& argv);

// `jobbridge adapt [--] TOOL [ARGS...]`: the same, with a visible wrapper,
// for a tool by any name or path (a `#!/usr/bin/make -f` script, a make
// installed under another name, ninja by its absolute path).
int AdaptMain(const std::vector<std::string>& args);

// The folder of shims beside jobbridge's binary, made by the build and by
// `cmake --install`: links named kAdaptedTools to `../jobbridge`.
inline constexpr const char* kShimFolderName = "jobbridge-shims";

// Sets *dir to the shim folder: kShimFolderName beside the binary when it
// holds a link to this binary for every tool (a stable path, so that a path
// a tool caches, such as CMake's CMAKE_MAKE_PROGRAM, still works after this
// run and outside jobbridge, where a shim just runs the tool), else
// `fallback`, created now with links to the binary (removed with the runtime
// folder). Returns false and sets *err when neither can be had.
bool CreateShims(const std::string& fallback, std::string* dir, std::string* err);

}  // namespace jobbridge
