// What the command's environment says about the jobserver.
#pragma once

#include <string>
#include <vector>

#include "core/makeflags.h"

namespace jobbridge {

// Warns when jobbridge was started inside another jobserver (it does not join
// an outer budget yet) or when a MAKEFLAGS variable holds a malformed one.
void WarnAboutOuterJobserver(int jobs);

// Our environment with MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS replaced together
// (jobserver-rs reads whichever is set first) to name `auth`, and
// JOBSERVERV2 set to `socket_path`. The user's other make flags are kept.
// A non-empty `shim_dir` goes first in PATH (see adapt.h).
std::vector<std::string> ChildEnvironment(int jobs, const JobserverAuth& auth,
                                          const std::string& socket_path,
                                          const std::string& shim_dir);

}  // namespace jobbridge
