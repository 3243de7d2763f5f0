// What `jobbridge report` draws, read from a trace written by --trace
// (docs/CONTROL.md, "The trace"): the tracks and their slices and waits,
// the counters, the marks, and the figures (utilisation, longest waits, top
// holders). Pure: text in, model out, so it is unit-tested and fuzzable.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace jobbridge {

struct TraceModel {
  struct Span {
    int64_t start_us = 0;
    int64_t end_us = 0;
    int lane = 0;  // slices of one track that overlap go on lanes 0, 1, ...
  };
  struct Track {
    int tid = 0;
    std::string name;
    std::string side;  // of its slices' category
    std::vector<Span> slices;
    std::vector<Span> waits;
    int lanes = 1;
    double slot_seconds = 0;
  };
  struct Sample {
    int64_t ts_us = 0;
    std::map<std::string, int> per_side;
  };
  struct Mark {
    int64_t ts_us = 0;
    std::string name;    // "resize", "reclaimed", "surplus"
    std::string detail;  // its args, as text
  };
  struct Wait {
    std::string track;
    int64_t start_us = 0;
    double seconds = 0;
  };

  int64_t end_us = 0;
  bool cut_short = false;  // the trace ended early (jobbridge killed): what it held
  std::vector<Track> tracks;
  std::vector<Sample> in_use, waiting;
  std::vector<std::pair<int64_t, int>> budget;  // (ts, slots)
  std::vector<Mark> marks;
  size_t slice_count = 0;
  // Slot-seconds in use over slot-seconds of the budget, while work waited;
  // -1 when nothing ever waited. Over the whole run: `utilisation_overall`.
  double utilisation = -1;
  double utilisation_overall = -1;
  double waited_seconds = 0;  // how long work waited, all in all
  int peak_waiting = 0;
  std::vector<Wait> longest_waits;        // the longest first, at most 10
  std::vector<const Track*> top_holders;  // by slot-seconds, at most 10
};

// Reads a trace. False with *err naming the fault (not JSON, not a trace of
// jobbridge's) otherwise. A trace cut short by a SIGKILL is read as far as
// it goes (cut_short).
bool LoadTrace(const std::string& text, TraceModel* model, std::string* err);

}  // namespace jobbridge
