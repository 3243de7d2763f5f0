// `jobbridge report TRACE -o report.html`: one self-contained HTML page (no
// script, nothing fetched) that draws a --trace timeline as SVG, with the
// utilisation, the longest waits, the top holders by slot-seconds and the
// leaks (docs/CONTROL.md, "The report").
#pragma once

#include <string>
#include <vector>

#include "report_model.h"

namespace jobbridge {

// The page for `model`; `source` names the trace in its title.
std::string RenderReport(const TraceModel& model, const std::string& source);

// Runs the command: 0, 1 when the trace cannot be read or the page cannot
// be written (the message says which), 2 for a bad command line.
int ReportMain(const std::vector<std::string>& args);

}  // namespace jobbridge
