// What the command's environment says about the jobserver.
#pragma once

#include <string>
#include <vector>

#include "core/makeflags.h"

namespace jobbridge {

// Our environment with MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS replaced together
// (jobserver-rs reads whichever is set first) to name `auth`, and
// JOBSERVERV2 set to `socket_path`. The user's other make flags are kept.
// `jobs` 0 writes a bare -j (a joined budget whose size is not known).
// A non-empty `shim_dir` goes first in PATH (see adapt.h).
std::vector<std::string> ChildEnvironment(int jobs, const JobserverAuth& auth,
                                          const std::string& socket_path,
                                          const std::string& shim_dir);

}  // namespace jobbridge
