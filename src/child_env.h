// What the command's environment says about the jobserver.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/makeflags.h"

namespace jobbridge {

// Set beside a CARGO_MAKEFLAGS that jobbridge wrote, to the same value, so
// that the make shim can tell it from one cargo wrote (adapt.h).
inline constexpr const char* kCargoMakeflagsMark = "JOBBRIDGE_CARGO_MAKEFLAGS";

// Our environment with MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS replaced together
// (jobserver-rs reads whichever is set first), and JOBSERVERV2 set to
// `socket_path`. MAKEFLAGS and MFLAGS name the pool by every name in `names`
// (JobserverWords); the user's other make flags are kept. CARGO_MAKEFLAGS is
// set only when `names` has a fifo name, to R,W alone (with
// kCargoMakeflagsMark), so that cargo and rustc take the pipe form that their
// build scripts' older clients read; otherwise it is cleared, so that a make
// below that starts a pool of its own is the nearest pool for jobserver-rs, as
// under plain make. `jobs` 0 writes a bare -j (a joined budget whose size is
// not known). ROBUST_JOBSERVER is set to `robust` ("sysvsem:ID"), removed
// when that is empty, and left as it is without one (a joined jobbridge
// passes it on, as make does). A non-empty `shim_dir` goes first in PATH
// (see adapt.h).
std::vector<std::string> ChildEnvironment(int jobs, const PoolNames& names,
                                          const std::string& socket_path,
                                          const std::optional<std::string>& robust,
                                          const std::string& shim_dir);

}  // namespace jobbridge
