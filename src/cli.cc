#include "cli.h"

#include "core/ledger.h"
#include "core/numbers.h"
#include "util/option_args.h"

namespace jobbridge {

bool ParseJobs(const std::string& text, int* jobs, std::string* err) {
  int n = 0;
  if (!ParseWholeNumber(text, &n) || n < 1 || n > Ledger::kMaxBudget) {
    *err = "-j needs a whole number of jobs from 1 to " + std::to_string(Ledger::kMaxBudget) +
           ", not '" + text + "' (for example: jobbridge -j8 -- make)";
    return false;
  }
  *jobs = n;
  return true;
}

namespace {

bool ParseStyle(const std::string& text, Options* options, std::string* err) {
  if (ParseLegacyStyle(text, &options->legacy_style)) return true;
  *err = "--legacy-style must be 'pipe' (make's R,W) or 'fifo' (a FIFO named every way), not '" +
         text + "'";
  return false;
}

}  // namespace

bool ParseCommandLine(const std::vector<std::string>& args, int default_jobs, Options* options,
                      std::string* err) {
  Options parsed;
  size_t i = 0;
  auto value = [&](const std::string& name, std::string* out) {
    return OptionValue(args, &i, name, "jobbridge --help", out, err);
  };
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string v;
    if (arg == "--") {
      ++i;
      break;
    } else if (IsOption(arg, "--jobs")) {
      if (!value("--jobs", &v) || !ParseJobs(v, &parsed.jobs, err)) return false;
    } else if (IsOption(arg, "-j")) {
      if (!value("-j", &v) || !ParseJobs(v, &parsed.jobs, err)) return false;
    } else if (IsOption(arg, "--legacy-style")) {
      if (!value("--legacy-style", &v) || !ParseStyle(v, &parsed, err)) return false;
    } else if (IsOption(arg, "--trace")) {
      if (!value("--trace", &v)) return false;
      if (v.empty()) {
        *err = "--trace needs a file name (for example: --trace build.trace.json)";
        return false;
      }
      parsed.trace = v;
    } else if (arg == "--progress") {
      parsed.progress = true;
    } else if (arg == "--root") {
      parsed.root = true;
    } else if (arg == "--no-adapters") {
      parsed.adapters = false;
    } else if (arg == "-v" || arg == "--verbose") {
      parsed.verbose = true;
    } else if (arg == "-h" || arg == "--help") {
      parsed.help = true;
    } else if (arg == "--version") {
      parsed.version = true;
    } else if (arg.starts_with("-") && arg != "-") {
      *err = "unknown option '" + arg + "'; see jobbridge --help";
      return false;
    } else {
      break;
    }
  }
  parsed.command.assign(args.begin() + static_cast<long>(i), args.end());
  if (parsed.command.empty() && !parsed.help && !parsed.version) {
    *err = "no command given; usage: jobbridge [-j N] [--] COMMAND [ARGS...]";
    return false;
  }
  parsed.jobs_given = parsed.jobs != 0;
  if (parsed.jobs == 0) parsed.jobs = default_jobs;
  *options = std::move(parsed);
  return true;
}

std::string UsageText() {
  return "usage: jobbridge [OPTIONS] [--] COMMAND [ARGS...]\n"
         "\n"
         "Runs COMMAND with a job budget of N slots, served to everything below it both\n"
         "as the GNU make jobserver (MAKEFLAGS, MFLAGS) and as the\n"
         "socket protocol (JOBSERVERV2). Started inside another budget (an outer make,\n"
         "cargo or jobbridge), it joins that budget instead of starting one.\n"
         "\n"
         "options:\n"
         "  -j N, --jobs=N         the budget: at most N jobs at once (default: online CPUs);\n"
         "                         ignored when joining an outer budget\n"
         "  --root                 start a budget of its own even inside another (the two\n"
         "                         budgets then add up: more jobs than either allows)\n"
         "  --legacy-style=STYLE   pipe: --jobserver-auth=R,W, as make gives it (the\n"
         "                         default; ninja gets its form from its shim) or fifo:\n"
         "                         a FIFO named every way at once (R,W, fifo:PATH and\n"
         "                         make's --jobserver-a=R,W), for ninja run by path\n"
         "  --no-adapters          do not put shims for make, gmake and ninja first in\n"
         "                         COMMAND's PATH (they give each tool the jobserver form\n"
         "                         it understands)\n"
         "  --progress             keep a live status line on stderr when it is a terminal\n"
         "  --trace FILE           write a timeline of every slot to FILE (Chrome trace JSON,\n"
         "                         for Perfetto or chrome://tracing; jobbridge report draws it)\n"
         "  -v, --verbose          say which budget it serves and how many tokens came back\n"
         "  -h, --help             print this and exit\n"
         "  --version              print the version and exit\n"
         "\n"
         "Also: jobbridge acquire [-n K] -- COMMAND   (take K slots for COMMAND)\n"
         "      jobbridge adapt -- TOOL [ARGS...]      (run any tool with the form it reads)\n"
         "      jobbridge status [--json] [--watch]    (who holds the slots of a running one)\n"
         "      jobbridge resize N                     (change a running one's budget)\n"
         "      jobbridge report TRACE -o REPORT.html  (draw a --trace timeline)\n"
         "      jobbridge daemon [-j N]                (one budget for a CI job's steps)\n"
         "      jobbridge stop                         (stop that daemon, print its summary)\n"
         "\n"
         "Exit status: COMMAND's; 128+N when it died of signal N; 127 when it cannot be\n"
         "found; 126 when it cannot be run; 2 for a bad command line.\n";
}

}  // namespace jobbridge
