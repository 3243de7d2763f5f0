// Adapters: every legacy tool gets the jobserver form it understands. make
// 4.3 aborts on fifo:PATH and ninja 1.13 ignores R,W (FACTS.md), so a make
// recipe that runs ninja, or a cargo build script that runs make, would
// otherwise lose the budget. jobbridge puts a folder of shims (make, gmake,
// ninja: links to its own binary) first in the command's PATH; run under one
// of those names it rewrites the inherited MAKEFLAGS, MFLAGS and
// CARGO_MAKEFLAGS to the tool's form, pointing at the same pool, and execs
// the real tool found further down PATH.
#pragma once

#include <string>
#include <vector>

namespace jobbridge {

// The tools the shims stand in for.
inline constexpr const char* kAdaptedTools[] = {"make", "gmake", "ninja"};

// True when `name` (a basename) is one of kAdaptedTools.
bool IsAdaptedTool(const std::string& name);

// Rewrites the jobserver in the environment for `tool` (a basename in
// kAdaptedTools) and execs `argv` with argv[0] looked up in PATH, skipping
// any entry that is jobbridge itself. A jobserver it cannot adapt (closed
// fds, a missing FIFO) is a warning, and the tool runs with it unchanged.
// Returns only on failure: 127 when the real tool is not found, 126 when it
// cannot be run; the reason is on stderr.
int RunAdapted(const std::string& tool, const std::vector<std::string>& argv);

// `jobbridge adapt [--] TOOL [ARGS...]`: the same, with a visible wrapper.
int AdaptMain(const std::vector<std::string>& args);

// Creates the shim folder `dir` (links named kAdaptedTools to jobbridge's
// binary). Returns false and sets *err.
bool CreateShims(const std::string& dir, std::string* err);

}  // namespace jobbridge
