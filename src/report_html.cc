#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "control/sides.h"
#include "log.h"
#include "report.h"

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
  for (size_t i = 0; i < std::size(kSideNames); ++i) {
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
std::string Chart(const TraceModel& model, const Scale& scale, int top) {
  std::ostringstream svg;
  int max = 1;
  for (const auto& [ts, slots] : model.budget) max = std::max(max, slots);
  auto y = [&](int value) { return top + kChartHeight - value * kChartHeight / max; };
  svg << "<text x=\"4\" y=\"" << top + 14 << "\" class=\"label\">slots in use, by side</text>\n";
  std::vector<int> below(model.in_use.size(), 0);
  for (size_t s = 0; s < std::size(kSideNames); ++s) {
    if (model.in_use.empty()) break;
    std::ostringstream upper, lower;
    for (size_t k = 0; k < model.in_use.size(); ++k) {
      const auto& sample = model.in_use[k];
      auto it = sample.per_side.find(kSideNames[s]);
      int value = below[k] + (it == sample.per_side.end() ? 0 : it->second);
      int64_t next = k + 1 < model.in_use.size() ? model.in_use[k + 1].ts_us : model.end_us;
      upper << Fixed(scale.X(sample.ts_us), 1) << "," << y(value) << " " << Fixed(scale.X(next), 1)
            << "," << y(value) << " ";
      below[k] = value;
    }
    // Back along the lower edge: the sides drawn before.
    std::vector<int> base(model.in_use.size(), 0);
    for (size_t k = 0; k < model.in_use.size(); ++k) {
      auto it = model.in_use[k].per_side.find(kSideNames[s]);
      base[k] = below[k] - (it == model.in_use[k].per_side.end() ? 0 : it->second);
    }
    for (size_t k = model.in_use.size(); k-- > 0;) {
      int64_t next = k + 1 < model.in_use.size() ? model.in_use[k + 1].ts_us : model.end_us;
      lower << Fixed(scale.X(next), 1) << "," << y(base[k]) << " "
            << Fixed(scale.X(model.in_use[k].ts_us), 1) << "," << y(base[k]) << " ";
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

std::string Timeline(const TraceModel& model) {
  Scale scale{static_cast<double>(model.end_us)};
  std::ostringstream rows;
  int y = kChartHeight + 30;
  for (const TraceModel::Track& track : model.tracks) {
    int height = track.lanes * kLaneHeight + 4;
    rows << "<g class=\"track\"><text x=\"4\" y=\"" << y + kLaneHeight << "\" class=\"label\">"
         << Escaped(Label(track.name)) << "<title>" << Escaped(track.name) << "</title></text>\n";
    for (const TraceModel::Span& wait : track.waits) {
      rows << "<rect class=\"wait\" x=\"" << Fixed(scale.X(wait.start_us), 2) << "\" y=\"" << y
           << "\" width=\""
           << Fixed(std::max(scale.X(wait.end_us) - scale.X(wait.start_us), 0.5), 2)
           << "\" height=\"" << height - 2 << "\"><title>waited "
           << Fixed(static_cast<double>(wait.end_us - wait.start_us) / 1e3, 1)
           << " ms</title></rect>\n";
    }
    for (const TraceModel::Span& slice : track.slices) {
      rows << "<rect class=\"slice\" data-side=\"" << Escaped(track.side) << "\" fill=\""
           << ColorOf(track.side) << "\" x=\"" << Fixed(scale.X(slice.start_us), 2) << "\" y=\""
           << y + 1 + slice.lane * kLaneHeight << "\" width=\""
           << Fixed(std::max(scale.X(slice.end_us) - scale.X(slice.start_us), 0.5), 2)
           << "\" height=\"" << kLaneHeight - 2 << "\"><title>"
           << Fixed(static_cast<double>(slice.end_us - slice.start_us) / 1e3, 1)
           << " ms</title></rect>\n";
    }
    rows << "</g>\n";
    y += height;
  }
  std::ostringstream svg;
  svg << "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
      << kLabelWidth + kPlotWidth + 10 << "\" height=\"" << y + 20 << "\">\n"
      << Chart(model, scale, 10) << rows.str() << "<text x=\"" << kLabelWidth << "\" y=\"" << y + 15
      << "\" class=\"label\">0 s</text><text x=\"" << kLabelWidth + kPlotWidth - 40 << "\" y=\""
      << y + 15 << "\" class=\"label\">" << Fixed(model.end_us / 1e6, 2) << " s</text>\n</svg>\n";
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
  for (size_t i = 0; i < std::size(kSideNames); ++i) {
    html << "<span style=\"color:" << kColors[i] << "\">&#9632;</span> " << kSideNames[i] << " ";
  }
  html << "<span style=\"color:#bbb\">&#9632;</span> waiting</p>\n"
       << Timeline(model) << Tables(model) << "</body></html>\n";
  return html.str();
}

int ReportMain(const std::vector<std::string>& args) {
  std::string input, output;
  for (size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "-o" || args[i] == "--output") && i + 1 < args.size()) {
      output = args[++i];
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
