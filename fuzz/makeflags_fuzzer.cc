// libFuzzer target for the MAKEFLAGS codec (src/core/makeflags.cc): any
// bytes parse or fail with a reason, never crash, and what jobbridge writes
// for a pool it reads back as the same pool. Run by scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/makeflags.h"

namespace {

using jobbridge::JobserverAuth;

const JobserverAuth kPipe{JobserverAuth::Kind::kPipe, 3, 4, ""};
const JobserverAuth kFifo{JobserverAuth::Kind::kFifo, -1, -1, "/run/jb/pool.fifo"};

void Check(bool ok) {
  if (!ok) std::abort();  // libFuzzer reports the input that got here
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  jobbridge::Makeflags flags;
  std::string err;
  if (!jobbridge::ParseMakeflags(text, &flags, &err)) {
    Check(!err.empty());  // a refusal always says why
    return 0;
  }
  // The user's words kept beside jobbridge's pool, named every way: every
  // reader finds that pool again (ninja and jobserver-rs the fifo, make R,W).
  auto kept = jobbridge::WordsWithoutJobserver(flags.words);
  std::string written = jobbridge::FormatMakeflagsForPool(kept, 3, {kPipe, kFifo});
  jobbridge::Makeflags back;
  Check(jobbridge::ParseMakeflags(written, &back, &err));
  Check(back.auth == kFifo);
  Check(back.make_auth == kPipe);
  Check(back.jobs == 3);
  // A shim's rewrite for make keeps every other word and reads back as R,W.
  std::string for_make = jobbridge::WithJobserver(flags.words, kPipe);
  jobbridge::Makeflags make_view;
  Check(jobbridge::ParseMakeflags(for_make, &make_view, &err));
  bool had_jobserver = flags.make_auth.kind != JobserverAuth::Kind::kNone;
  Check(!had_jobserver || make_view.make_auth == kPipe);
  return 0;
}
