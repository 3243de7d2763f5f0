// jobbridge's entry point: parse the command line, then hand over to the bridge.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "acquire.h"
#include "adapt.h"
#include "bridge.h"
#include "cli.h"
#include "daemon_cli.h"
#include "implicit_slot.h"
#include "log.h"
#include "report.h"
#include "status_cli.h"
#include "util/std_streams.h"

namespace {

int AcquireMain(const std::vector<std::string>& args) {
  jobbridge::AcquireOptions options;
  std::string err;
  if (!jobbridge::ParseAcquireCommandLine(args, &options, &err)) {
    jobbridge::LogError(err);
    return 2;
  }
  if (options.help) {
    std::fputs(jobbridge::AcquireUsageText().c_str(), stdout);
    return 0;
  }
  return jobbridge::RunAcquire(options);
}

}  // namespace

int main(int argc, char** argv) {
  if (!jobbridge::OpenMissingStandardStreams()) {
    // Not a message: stderr may be one of the closed ones.
    return 1;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  // Run as one of the shims (make, gmake, ninja): adapt the jobserver, exec the tool.
  std::string name = argv[0];
  name = name.substr(name.rfind('/') + 1);
  if (jobbridge::IsAdaptedTool(name)) return jobbridge::RunAdapted(name, {argv, argv + argc});
  if (!args.empty() && args[0] == "acquire") return AcquireMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "status")
    return jobbridge::StatusMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "resize")
    return jobbridge::ResizeMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "report")
    return jobbridge::ReportMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "adapt")
    return jobbridge::AdaptMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "daemon")
    return jobbridge::DaemonMain({args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "stop")
    return jobbridge::StopMain({args.begin() + 1, args.end()});
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int default_jobs = cpus > 0 ? static_cast<int>(cpus) : 1;
  jobbridge::Options options;
  std::string err;
  if (!jobbridge::ParseCommandLine(args, default_jobs, &options, &err)) {
    jobbridge::LogError(err);
    return 2;
  }
  if (options.help) {
    std::fputs(jobbridge::UsageText().c_str(), stdout);
    return 0;
  }
  if (options.version) {
    std::puts("jobbridge " JOBBRIDGE_VERSION);
    return 0;
  }
  // Started by a CI step under a daemon: COMMAND's implicit slot is paid for.
  if (!jobbridge::TakeImplicitSlot("jobbridge", &err)) {
    jobbridge::LogError(err);
    return 1;
  }
  return jobbridge::RunBridge(options);
}
