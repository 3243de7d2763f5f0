#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "control/sides.h"
#include "log.h"
#include "report.h"
#include "report_drawing.h"
#include "util/option_args.h"

namespace jobbridge {

namespace {

constexpr int kLabelWidth = 320;
constexpr int kPlotWidth = 760;
constexpr int kChartHeight = 120;
constexpr int kLaneHeight = 10;
constexpr const char* kColors[] = {"#8d99ae", "#2a9d8f", "#e76f51", "#7b2cbf", "#e9c46a"};

std::string Escaped(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\n':
        out += ' ';
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A track's name for its label: each path shortened to its last part
// ("socket: pid 7 python3 client.py"); the whole name is its tooltip.
std::string Label(const std::string& name) {
  std::istringstream words(name);
  std::string word, label;
  while (words >> word) {
    size_t slash = word.rfind('/');
    if (slash != std::string::npos && slash + 1 < word.size()) word = word.substr(slash + 1);
    label += (label.empty() ? "" : " ") + word;
  }
  return label.size() > 52 ? label.substr(0, 52) + "..." : label;
}

std::string Fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

std::string Percent(double fraction) {
  return fraction < 0 ? "n/a" : Fixed(fraction * 100, 1) + "%";
}

const char* ColorOf(const std::string& side) {
  for (size_t i = 0; i < kSideNames.size(); ++i) {
    if (side == kSideNames[i]) return kColors[i];
  }
  return "#999";
}

struct Scale {
  double end_us;
  double X(int64_t ts) const {
    return kLabelWidth + (end_us > 0 ? static_cast<double>(ts) / end_us * kPlotWidth : 0);
  }
};

// The counters as stacked step areas, one polygon per side, and the budget.
std::string Chart(const TraceModel& model, const ReportDrawing& drawing, const Scale& scale,
                  int top) {
  std::ostringstream svg;
  int max = 1;
  for (const auto& [ts, slots] : model.budget) max = std::max(max, slots);
  auto y = [&](double value) { return Fixed(top + kChartHeight - value * kChartHeight / max, 1); };
  svg << "<text x=\"4\" y=\"" << top + 14 << "\" class=\"label\">slots in use, by side"
      << (drawing.averaged ? " (mean per pixel)" : "") << "</text>\n";
  const std::vector<ReportDrawing::Column>& columns = drawing.in_use;
  auto next_ts = [&](size_t k) {
    return k + 1 < columns.size() ? columns[k + 1].ts_us : model.end_us;
  };
  std::vector<double> below(columns.size(), 0);
  for (size_t s = 0; s < kSideNames.size() && !columns.empty(); ++s) {
    std::ostringstream upper, lower;
    std::vector<double> base = below;  // the sides drawn before: its lower edge
    for (size_t k = 0; k < columns.size(); ++k) {
      below[k] += columns[k].per_side[s];
      upper << Fixed(scale.X(columns[k].ts_us), 1) << "," << y(below[k]) << " "
            << Fixed(scale.X(next_ts(k)), 1) << "," << y(below[k]) << " ";
    }
    for (size_t k = columns.size(); k-- > 0;) {
      lower << Fixed(scale.X(next_ts(k)), 1) << "," << y(base[k]) << " "
            << Fixed(scale.X(columns[k].ts_us), 1) << "," << y(base[k]) << " ";
    }
    svg << "<polygon class=\"counter\" data-side=\"" << kSideNames[s] << "\" fill=\"" << kColors[s]
        << "\" points=\"" << upper.str() << lower.str() << "\"/>\n";
  }
  std::ostringstream budget;
  for (size_t k = 0; k < model.budget.size(); ++k) {
    int64_t next = k + 1 < model.budget.size() ? model.budget[k + 1].first : model.end_us;
    budget << Fixed(scale.X(model.budget[k].first), 1) << "," << y(model.budget[k].second) << " "
           << Fixed(scale.X(next), 1) << "," << y(model.budget[k].second) << " ";
  }
  svg << "<polyline class=\"budget\" points=\"" << budget.str() << "\"/>\n";
  svg << "<text x=\"4\" y=\"" << top + 30 << "\" class=\"label\">budget (line): up to " << max
      << "</text>\n";
  return svg.str();
}

// A bar's tooltip: how long it lasted, or for a merged bar what it stands for.
std::string BarTitle(const ReportDrawing::Bar& bar, bool wait) {
  double ms = static_cast<double>(bar.busy_us) / 1e3;
  std::string lasted = ms < 10000 ? Fixed(ms, 1) + " ms" : Fixed(ms / 1e3, 1) + " s";
  if (bar.count == 1) return wait ? "waited " + lasted : lasted;
  return std::to_string(bar.count) + (wait ? " waits, " : " grants, ") + lasted + " in all, from " +
         Fixed(static_cast<double>(bar.start_us) / 1e6, 2) + " s to " +
         Fixed(static_cast<double>(bar.end_us) / 1e6, 2) + " s";
}

// What was thinned (report_drawing.h), or nothing for a trace drawn as it is.
std::string Thinned(const TraceModel& model, const ReportDrawing& drawing) {
  if (drawing.merge_gap_px == 0 && !drawing.averaged && drawing.hidden_tracks == 0) return "";
  std::ostringstream html;
  html << "<p id=\"thinned\">A long trace, thinned so the page opens at once:";
  if (drawing.hidden_tracks > 0) {
    html << " only the " << drawing.rows.size()
         << " holders with the most slot-seconds have a row (with " << drawing.grants_drawn
         << " of the trace's " << model.slice_count << " grants), " << drawing.hidden_tracks
         << " more do not;";
  }
  if (drawing.merge_gap_px > 0) {
    html << " " << drawing.grants_drawn << " grants are drawn as " << drawing.slice_bars
         << " bars (bars less than " << drawing.merge_gap_px
         << " px apart are merged; hover one for what it stands for);";
  }
  if (drawing.averaged) html << " the slots in use are drawn as one mean per pixel;";
  html << " the figures and tables count everything.</p>\n";
  return html.str();
}

std::string Timeline(const TraceModel& model, const ReportDrawing& drawing) {
  Scale scale{static_cast<double>(model.end_us)};
  std::ostringstream rows;
  int y = kChartHeight + 30;
  auto width = [&](const ReportDrawing::Bar& bar) {
    return Fixed(std::max(scale.X(bar.end_us) - scale.X(bar.start_us), 0.5), 2);
  };
  for (const ReportDrawing::Row& row : drawing.rows) {
    const TraceModel::Track& track = *row.track;
    int height = track.lanes * kLaneHeight + 4;
    rows << "<g class=\"track\"><text x=\"4\" y=\"" << y + kLaneHeight << "\" class=\"label\">"
         << Escaped(Label(track.name)) << "<title>" << Escaped(track.name) << "</title></text>\n";
    for (const ReportDrawing::Bar& wait : row.waits) {
      rows << "<rect class=\"wait\" x=\"" << Fixed(scale.X(wait.start_us), 2) << "\" y=\"" << y
           << "\" width=\"" << width(wait) << "\" height=\"" << height - 2 << "\"><title>"
           << BarTitle(wait, true) << "</title></rect>\n";
    }
    for (const ReportDrawing::Bar& slice : row.slices) {
      rows << "<rect class=\"slice\" data-side=\"" << Escaped(track.side) << "\" fill=\""
           << ColorOf(track.side) << "\" x=\"" << Fixed(scale.X(slice.start_us), 2) << "\" y=\""
           << y + 1 + slice.lane * kLaneHeight << "\" width=\"" << width(slice) << "\" height=\""
           << kLaneHeight - 2 << "\"><title>" << BarTitle(slice, false) << "</title></rect>\n";
    }
    rows << "</g>\n";
    y += height;
  }
  if (drawing.hidden_tracks > 0) {
    y += kLaneHeight + 4;
    rows << "<text id=\"hidden-tracks\" x=\"4\" y=\"" << y << "\" class=\"label\">and "
         << drawing.hidden_tracks << " more holders (" << Fixed(drawing.hidden_slot_seconds, 2)
         << " slot-seconds) not drawn here: the trace has them all, and Perfetto opens it</text>\n";
  }
  std::ostringstream svg;
  svg << "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
      << kLabelWidth + kPlotWidth + 10 << "\" height=\"" << y + 20 << "\">\n"
      << Chart(model, drawing, scale, 10) << rows.str() << "<text x=\"" << kLabelWidth << "\" y=\""
      << y + 15 << "\" class=\"label\">0 s</text><text x=\"" << kLabelWidth + kPlotWidth - 40
      << "\" y=\"" << y + 15 << "\" class=\"label\">" << Fixed(model.end_us / 1e6, 2)
      << " s</text>\n</svg>\n";
  return svg.str();
}

std::string Tables(const TraceModel& model) {
  std::ostringstream html;
  html << "<h2>Longest waits</h2>\n<table id=\"waits\"><tr><th>waited</th><th>from</th>"
       << "<th>who</th></tr>\n";
  for (const auto& wait : model.longest_waits) {
    html << "<tr><td>" << Fixed(wait.seconds, 3) << " s</td><td>" << Fixed(wait.start_us / 1e6, 3)
         << " s</td><td>" << Escaped(wait.track) << "</td></tr>\n";
  }
  html << "</table>\n<h2>Top holders by slot-seconds</h2>\n<table id=\"holders\"><tr>"
       << "<th>slot-seconds</th><th>grants</th><th>who</th></tr>\n";
  for (const TraceModel::Track* track : model.top_holders) {
    html << "<tr><td>" << Fixed(track->slot_seconds, 2) << "</td><td>" << track->slices.size()
         << "</td><td>" << Escaped(track->name) << "</td></tr>\n";
  }
  html << "</table>\n<h2>Leaks, surplus and resizes</h2>\n<table id=\"marks\"><tr><th>at</th>"
       << "<th>what</th><th>detail</th></tr>\n";
  for (const auto& mark : model.marks) {
    html << "<tr class=\"mark-" << Escaped(mark.name) << "\"><td>" << Fixed(mark.ts_us / 1e6, 3)
         << " s</td><td>" << Escaped(mark.name) << "</td><td>" << Escaped(mark.detail)
         << "</td></tr>\n";
  }
  html << "</table>\n";
  return html.str();
}

}  // namespace

std::string RenderReport(const TraceModel& model, const std::string& source) {
  ReportDrawing drawing = DrawingOf(model, kPlotWidth);
  std::ostringstream html;
  html << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>jobbridge report: "
       << Escaped(source) << "</title>\n<style>\n"
       << "body{font:13px sans-serif;margin:16px;color:#222}"
       << "table{border-collapse:collapse;margin-bottom:12px}"
       << "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
       << ".label{font:11px sans-serif;fill:#333}.wait{fill:#ddd}"
       << ".budget{fill:none;stroke:#000;stroke-width:1.5}.counter{opacity:.85}"
       << "\n</style></head><body>\n<h1>jobbridge: who held the slots</h1>\n<p>Trace "
       << Escaped(source) << ", " << Fixed(model.end_us / 1e6, 2) << " s"
       << (model.cut_short ? " (cut short: jobbridge was killed; drawn as far as it goes)" : "")
       << ".</p>\n<p class=\"summary\">Utilisation while work waited: <b id=\"utilisation\">"
       << Percent(model.utilisation)
       << "</b> (slot-seconds in use over slot-seconds of the budget, while a request waited: "
       << Fixed(model.waited_seconds, 2)
       << " s). Over the whole run: <b id=\"utilisation-overall\">"
       << Percent(model.utilisation_overall) << "</b>. Peak waiting: <b id=\"peak-waiting\">"
       << model.peak_waiting << "</b>. <b id=\"slice-count\">" << model.slice_count
       << "</b> grants on <b id=\"track-count\">" << model.tracks.size() << "</b> tracks.</p>\n<p>";
  for (size_t i = 0; i < kSideNames.size(); ++i) {
    html << "<span style=\"color:" << kColors[i] << "\">&#9632;</span> " << kSideNames[i] << " ";
  }
  html << "<span style=\"color:#bbb\">&#9632;</span> waiting</p>\n"
       << Thinned(model, drawing) << Timeline(model, drawing) << Tables(model)
       << "</body></html>\n";
  return html.str();
}

int ReportMain(const std::vector<std::string>& args) {
  std::string input, output;
  for (size_t i = 0; i < args.size(); ++i) {
    if (IsOption(args[i], "--output") || IsOption(args[i], "-o")) {
      std::string err;
      if (!OptionValue(args, &i, args[i].starts_with("--") ? "--output" : "-o",
                       "jobbridge report --help", &output, &err)) {
        LogError("report: " + err);
        return 2;
      }
    } else if (args[i] == "-h" || args[i] == "--help") {
      std::fputs(
          "usage: jobbridge report TRACE -o REPORT.html\n"
          "Draws a trace written by jobbridge --trace as one self-contained HTML page.\n",
          stdout);
      return 0;
    } else if (input.empty() && !args[i].starts_with("-")) {
      input = args[i];
    } else {
      LogError("report: unexpected argument " + args[i] +
               " (usage: jobbridge report TRACE -o REPORT.html)");
      return 2;
    }
  }
  if (input.empty() || output.empty()) {
    LogError(
        "report: give the trace and the page to write: jobbridge report TRACE -o "
        "REPORT.html");
    return 2;
  }
  std::ifstream file(input, std::ios::binary);
  if (!file) {
    LogError("report: cannot read " + input);
    return 1;
  }
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  TraceModel model;
  std::string err;
  if (!LoadTrace(text, &model, &err)) {
    LogError("report: " + input + ": " + err);
    return 1;
  }
  if (model.cut_short) LogWarning("report: " + input + " ends early (jobbridge was killed?)");
  std::ofstream page(output, std::ios::binary | std::ios::trunc);
  page << RenderReport(model, input);
  if (!page.flush()) {
    LogError("report: cannot write " + output);
    return 1;
  }
  return 0;
}

}  // namespace jobbridge
