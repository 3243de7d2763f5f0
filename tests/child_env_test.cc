// The command's environment: which variables name the pool, in which forms.
// ctest runs each test in a process of its own, so setenv is safe here.
#include "child_env.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

namespace jobbridge {
namespace {

std::map<std::string, std::string> AsMap(const std::vector<std::string>& env) {
  std::map<std::string, std::string> map;
  for (const std::string& entry : env) {
    size_t eq = entry.find('=');
    EXPECT_TRUE(map.emplace(entry.substr(0, eq), entry.substr(eq + 1)).second)
        << "set twice: " << entry;
  }
  return map;
}

const JobserverAuth kPipe{JobserverAuth::Kind::kPipe, 3, 4, ""};
const JobserverAuth kFifo{JobserverAuth::Kind::kFifo, -1, -1, "/run/jb/pool.fifo"};

TEST(ChildEnvironmentTest, PipesAreNamedAsMakeNamesThem) {
  setenv("MAKEFLAGS", "k -j9 --jobserver-auth=7,8 -- CC=clang", 1);
  setenv("CARGO_MAKEFLAGS", "-j9 --jobserver-auth=7,8", 1);  // an outer cargo's
  setenv("JOBBRIDGE_CARGO_MAKEFLAGS", "-j9 --jobserver-auth=7,8", 1);
  auto env = AsMap(ChildEnvironment(3, {kPipe, {}}, "/run/jb/s", "sysvsem:42", "/opt/jb/shims"));
  EXPECT_EQ(env["MAKEFLAGS"], "k -j3 --jobserver-auth=3,4 -- CC=clang");
  EXPECT_EQ(env["MFLAGS"], "-j3 --jobserver-auth=3,4");
  // Cleared: a make below that starts a pool of its own is the nearest pool
  // for jobserver-rs, which would read CARGO_MAKEFLAGS first.
  EXPECT_EQ(env.count("CARGO_MAKEFLAGS"), 0u);
  EXPECT_EQ(env.count(kCargoMakeflagsMark), 0u);
  EXPECT_EQ(env["JOBSERVERV2"], "/run/jb/s");
  EXPECT_EQ(env["ROBUST_JOBSERVER"], "sysvsem:42");
  EXPECT_EQ(env["PATH"].rfind("/opt/jb/shims:", 0), 0u) << env["PATH"];
}

TEST(ChildEnvironmentTest, AFifoIsNamedEveryWayAndCargoGetsThePipeForm) {
  unsetenv("MAKEFLAGS");
  unsetenv("CARGO_MAKEFLAGS");
  auto env = AsMap(ChildEnvironment(2, {kPipe, kFifo}, "/run/jb/s", std::nullopt, ""));
  std::string every =
      "-j2 --jobserver-auth=3,4 --jobserver-auth=fifo:/run/jb/pool.fifo "
      "--jobserver-a=3,4";
  EXPECT_EQ(env["MAKEFLAGS"], every);
  EXPECT_EQ(env["MFLAGS"], every);
  EXPECT_EQ(env["CARGO_MAKEFLAGS"], "-j2 --jobserver-auth=3,4");
  EXPECT_EQ(env[kCargoMakeflagsMark], env["CARGO_MAKEFLAGS"]);
}

// A root names its own semaphore (an outer one is not joined: nesting is
// not served yet), a root without one removes the variable, and a joined
// jobbridge passes it on as it found it, as make does.
TEST(ChildEnvironmentTest, RobustJobserverIsARootsOwnOrPassedOn) {
  unsetenv("MAKEFLAGS");
  setenv("ROBUST_JOBSERVER", "sysvsem:7", 1);
  EXPECT_EQ(AsMap(ChildEnvironment(2, {kPipe, {}}, "/s", "sysvsem:9", ""))["ROBUST_JOBSERVER"],
            "sysvsem:9");
  EXPECT_EQ(AsMap(ChildEnvironment(2, {kPipe, {}}, "/s", "", "")).count("ROBUST_JOBSERVER"), 0u);
  EXPECT_EQ(AsMap(ChildEnvironment(0, {kPipe, {}}, "/s", std::nullopt, ""))["ROBUST_JOBSERVER"],
            "sysvsem:7");
  unsetenv("ROBUST_JOBSERVER");
  EXPECT_EQ(
      AsMap(ChildEnvironment(0, {kPipe, {}}, "/s", std::nullopt, "")).count("ROBUST_JOBSERVER"),
      0u);
}

}  // namespace
}  // namespace jobbridge
