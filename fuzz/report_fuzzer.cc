// libFuzzer target for `jobbridge report` (report_model.h, report.h): any
// bytes as a trace file. LoadTrace must refuse with a reason or give a model
// whose figures are in range, and RenderReport must draw it; nothing may
// throw or crash. Run by scripts/fuzz.sh; seeds in fuzz/corpus/report/.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "report.h"
#include "report_model.h"

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "report_fuzzer: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jobbridge;
  std::string text(reinterpret_cast<const char*>(data), size);
  TraceModel model;
  std::string err;
  if (!LoadTrace(text, &model, &err)) {
    Check(!err.empty(), "refused without a reason");
    return 0;
  }
  Check(model.utilisation <= 1e9 && model.utilisation_overall <= 1e9, "a figure out of range");
  Check(model.end_us >= 0, "a negative end");
  for (const TraceModel::Track& track : model.tracks) {
    for (const TraceModel::Span& slice : track.slices) {
      Check(slice.lane >= 0 && slice.lane < track.lanes, "a slice off its track's lanes");
      Check(slice.end_us >= slice.start_us, "a slice that ends before it starts");
    }
  }
  std::string page = RenderReport(model, "fuzz");
  Check(page.find("</html>") != std::string::npos, "a page without its end");
  return 0;
}
