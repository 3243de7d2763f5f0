// What `jobbridge daemon` tells later steps (src/daemon_env.h), its command
// line (src/daemon_cli.h), and the text each shell runs, run by a real sh.
#include "daemon_env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <string>
#include <vector>

#include "daemon_cli.h"

namespace jobbridge {
namespace {

TEST(DaemonEnvTest, FormatsAreNamedOrRefused) {
  EnvFormat format = EnvFormat::kSh;
  std::string err;
  EXPECT_TRUE(ParseEnvFormat("fish", &format, &err));
  EXPECT_EQ(format, EnvFormat::kFish);
  EXPECT_TRUE(ParseEnvFormat("github", &format, &err));
  EXPECT_EQ(format, EnvFormat::kGithub);
  EXPECT_TRUE(ParseEnvFormat("gitlab", &format, &err));
  EXPECT_EQ(format, EnvFormat::kGitlab);
  EXPECT_FALSE(ParseEnvFormat("bash", &format, &err));
  EXPECT_EQ(err, "unknown --format 'bash': use sh, fish, github or gitlab");
}

TEST(DaemonEnvTest, DurationsTakeSecondsOrAUnit) {
  struct Case {
    const char* text;
    int64_t ms;
  };
  for (Case c : std::vector<Case>{{"90", 90000},
                                  {"1.5s", 1500},
                                  {"250ms", 250},
                                  {"10m", 600000},
                                  {"2h", 7200000},
                                  {"0.001", 1}}) {
    int64_t ms = 0;
    std::string err;
    EXPECT_TRUE(ParseDuration(c.text, &ms, &err)) << c.text << ": " << err;
    EXPECT_EQ(ms, c.ms) << c.text;
  }
  for (const char* bad : {"", "s", "abc", "5x", "0", "0ms", "-1", "1e3", ".", "1.2.3", "31d",
                          "9999999999h", "0.5ms"}) {
    int64_t ms = 0;
    std::string err;
    EXPECT_FALSE(ParseDuration(bad, &ms, &err)) << bad;
    EXPECT_NE(err.find("is not a duration: give seconds (90)"), std::string::npos) << err;
  }
}

DaemonPlaces Places() {
  return {3,
          "/run/jb-x/pool.fifo",
          "/run/jb-x/jobserver.sock",
          "sysvsem:42",
          "/run/jb-x/pools.sock",
          "/run/jb-x/control.sock",
          "/run/jb-x",
          "/opt/jb/jobbridge-shims"};
}

TEST(DaemonEnvTest, EveryVariableNamesTheFifoAndTheDaemon) {
  std::vector<std::string> variables = DaemonVariables(Places());
  std::string makeflags = "-j3 --jobserver-auth=fifo:/run/jb-x/pool.fifo";
  EXPECT_EQ(variables, (std::vector<std::string>{
                           "MAKEFLAGS=" + makeflags,
                           "MFLAGS=" + makeflags,
                           "CARGO_MAKEFLAGS=" + makeflags,
                           "JOBBRIDGE_CARGO_MAKEFLAGS=" + makeflags,
                           "JOBSERVERV2=/run/jb-x/jobserver.sock",
                           "ROBUST_JOBSERVER=sysvsem:42",
                           "JOBBRIDGE_POOLS=/run/jb-x/pools.sock",
                           "JOBBRIDGE_CONTROL=/run/jb-x/control.sock",
                           "JOBBRIDGE_DAEMON=/run/jb-x",
                       }));
  DaemonPlaces bare = Places();
  bare.robust = bare.pools = bare.control = "";
  for (const std::string& variable : DaemonVariables(bare)) {
    EXPECT_FALSE(variable.starts_with("ROBUST_JOBSERVER=")) << variable;
    EXPECT_FALSE(variable.starts_with("JOBBRIDGE_POOLS=")) << variable;
    EXPECT_FALSE(variable.starts_with("JOBBRIDGE_CONTROL=")) << variable;
  }
}

TEST(DaemonEnvTest, TheMessageRoundTripsAndACutOneIsRefused) {
  std::vector<std::string> variables = {"A=1", "B=x=y", "C="};
  std::string text = EncodeDaemonEnv("/shims", variables);
  std::string path;
  std::vector<std::string> decoded;
  ASSERT_TRUE(DecodeDaemonEnv(text, &path, &decoded));
  EXPECT_EQ(path, "/shims");
  EXPECT_EQ(decoded, variables);
  for (size_t cut = 0; cut < text.size(); ++cut) {
    EXPECT_FALSE(DecodeDaemonEnv(text.substr(0, cut), &path, &decoded)) << cut;
  }
  EXPECT_FALSE(DecodeDaemonEnv(std::string("ready\0/s\0=no\0end\0", 16), &path, &decoded));
  EXPECT_TRUE(DecodeDaemonEnv(std::string("ready\0/s\0A=\0end\0", 16), &path, &decoded));
}

// Runs `script` in /bin/sh and returns what it printed. The script's file
// is this call's own: ctest runs the tests of this file side by side.
std::string RunSh(const std::string& script) {
  std::string file = testing::TempDir() + "/daemon_env_test-XXXXXX";
  int fd = mkstemp(file.data());
  EXPECT_GE(fd, 0) << file;
  FILE* out = fdopen(fd, "w");
  std::fputs(script.c_str(), out);
  std::fclose(out);
  FILE* sh = popen(("/bin/sh " + file).c_str(), "r");
  std::string printed;
  char buffer[256];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, sh)) > 0;) printed.append(buffer, n);
  pclose(sh);
  std::remove(file.c_str());
  return printed;
}

TEST(DaemonEnvTest, ShTextSetsEveryValueAsItIsAndPathOnce) {
  std::string awkward = "it's a \"$HOME\" `x` \\ and\nnewline";
  std::vector<std::string> variables = {"JB_A=" + awkward, "JB_B=-j3 --x=fifo:/a b"};
  for (EnvFormat format : {EnvFormat::kSh, EnvFormat::kGitlab}) {
    std::string text = ShellText(format, variables, "/opt/my shims");
    std::string printed = RunSh("PATH=/usr/bin:/bin\n" + text + text +
                                "printf '%s|%s|%s' \"$JB_A\" \"$JB_B\" \"$PATH\"\n");
    EXPECT_EQ(printed, awkward + "|-j3 --x=fifo:/a b|/opt/my shims:/usr/bin:/bin");
  }
}

TEST(DaemonEnvTest, WhatADaemonDoesNotSetIsUnset) {
  DaemonPlaces bare = Places();
  bare.robust = bare.pools = "";
  std::vector<std::string> variables = DaemonVariables(bare);
  EXPECT_EQ(NamesNotSet(variables),
            (std::vector<std::string>{"ROBUST_JOBSERVER", "JOBBRIDGE_POOLS"}));
  EXPECT_EQ(NamesNotSet(DaemonVariables(Places())), std::vector<std::string>{});
  std::string printed = RunSh("ROBUST_JOBSERVER=sysvsem:7; export ROBUST_JOBSERVER\n" +
                              ShellText(EnvFormat::kSh, variables, "", NamesNotSet(variables)) +
                              "printf '%s|%s' \"${ROBUST_JOBSERVER-unset}\" \"$JOBSERVERV2\"\n");
  EXPECT_EQ(printed, "unset|/run/jb-x/jobserver.sock");
  EXPECT_EQ(ShellText(EnvFormat::kFish, {}, "", {"A"}), "set -e A;\n");
}

TEST(DaemonEnvTest, FishTextQuotesAsFishDoes) {
  std::string text = ShellText(EnvFormat::kFish, {"JB_A=it's \\ $x"}, "/s");
  EXPECT_EQ(text,
            "set -gx JB_A 'it\\'s \\\\ $x';\n"
            "contains -- '/s' $PATH; or set -gx PATH '/s' $PATH;\n");
}

TEST(DaemonEnvTest, GithubLinesUseADelimiterForANewline) {
  EXPECT_EQ(GithubEnvText({"A=1", "B=two\nlines"}),
            "A=1\nB<<JOBBRIDGE_EOF\ntwo\nlines\nJOBBRIDGE_EOF\n");
  EXPECT_EQ(GithubEnvText({"B=JOBBRIDGE_EOF\nx"}),
            "B<<JOBBRIDGE_EOF_\nJOBBRIDGE_EOF\nx\nJOBBRIDGE_EOF_\n");
  EXPECT_EQ(GithubPathText("/s"), "/s\n");
  EXPECT_EQ(GithubPathText(""), "");
}

TEST(DaemonCommandLineTest, TakesMakeLikeOptions) {
  DaemonCommand command;
  std::string err;
  ASSERT_TRUE(ParseDaemonCommandLine({"-j3", "--idle-timeout", "30s", "--format=fish", "-v"}, 8,
                                     &command, &err))
      << err;
  EXPECT_EQ(command.bridge.jobs, 3);
  EXPECT_TRUE(command.bridge.jobs_given);
  EXPECT_EQ(command.bridge.daemon.idle_timeout_ms, 30000);
  EXPECT_EQ(command.format, EnvFormat::kFish);
  EXPECT_TRUE(command.bridge.verbose);
  EXPECT_TRUE(command.bridge.daemon.on);
  EXPECT_TRUE(command.bridge.root);
  EXPECT_EQ(command.bridge.legacy_style, LegacyStyle::kFifo);
  ASSERT_TRUE(ParseDaemonCommandLine({"-j", "5"}, 8, &command, &err)) << err;
  EXPECT_EQ(command.bridge.jobs, 5);
  ASSERT_TRUE(ParseDaemonCommandLine({"--jobs=6"}, 8, &command, &err)) << err;
  EXPECT_EQ(command.bridge.jobs, 6);
  ASSERT_TRUE(ParseDaemonCommandLine({}, 8, &command, &err)) << err;
  EXPECT_EQ(command.bridge.jobs, 8);
  EXPECT_FALSE(command.bridge.jobs_given);
  EXPECT_EQ(command.bridge.daemon.idle_timeout_ms, 0);
  EXPECT_EQ(command.format, EnvFormat::kSh);
}

TEST(DaemonCommandLineTest, BadOptionsNameTheFault) {
  struct Case {
    std::vector<std::string> args;
    const char* said;
  };
  for (const Case& c : std::vector<Case>{
           {{"-j0"}, "-j needs a whole number of jobs from 1"},
           {{"-j"}, "daemon: -j needs a value"},
           {{"--format", "xml"}, "unknown --format 'xml'"},
           {{"--idle-timeout", "soon"}, "daemon: --idle-timeout: 'soon' is not a duration"},
           {{"--idle-timeout"}, "daemon: --idle-timeout needs a value"},
           {{"--idle-timeout="}, "daemon: --idle-timeout: '' is not a duration"},
           {{"--", "make"}, "daemon: it runs no command ('--')"},
           {{"make"}, "daemon: it runs no command ('make'): eval its output"},
           {{"--jobz=3"}, "daemon: unknown option '--jobz=3'"},
       }) {
    DaemonCommand command;
    std::string err;
    EXPECT_FALSE(ParseDaemonCommandLine(c.args, 8, &command, &err)) << c.args[0];
    EXPECT_NE(err.find(c.said), std::string::npos) << c.args[0] << ": " << err;
  }
}

}  // namespace
}  // namespace jobbridge
