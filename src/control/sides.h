// The sides a slot can be on, as status, the trace, its report and the exit
// summary name them, in one order (the sampler's arrays follow it). A tool
// invocation's own pool counts for the legacy side.
#pragma once

#include <array>

#include "core/ledger.h"

namespace jobbridge {

inline constexpr std::array<const char*, 5> kSideNames = {"command", "legacy", "socket", "sysvsem",
                                                          "upstream"};

// The index in kSideNames of the side `kind`'s slots count for.
constexpr size_t SideIndex(OwnerKind kind) {
  switch (kind) {
    case OwnerKind::kCommand:
      return 0;
    case OwnerKind::kLegacyPool:
    case OwnerKind::kInvocation:
      return 1;
    case OwnerKind::kSocket:
      return 2;
    case OwnerKind::kSemaphore:
      return 3;
    case OwnerKind::kUpstream:
      return 4;
  }
  return 4;
}

inline const char* SideOf(OwnerKind kind) { return kSideNames[SideIndex(kind)]; }

}  // namespace jobbridge
