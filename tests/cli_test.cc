// The command line: options stop where the command starts, and every mistake
// gets a one-line message that says what was wrong and how to fix it.
#include "cli.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace jobbridge {
namespace {

using Args = std::vector<std::string>;

constexpr int kDefaultJobs = 6;

Options Parse(const Args& args) {
  Options options;
  std::string err;
  EXPECT_TRUE(ParseCommandLine(args, kDefaultJobs, &options, &err)) << err;
  return options;
}

std::string ParseError(const Args& args) {
  Options options;
  options.jobs = -7;  // must stay untouched on failure
  std::string err;
  EXPECT_FALSE(ParseCommandLine(args, kDefaultJobs, &options, &err));
  EXPECT_EQ(options.jobs, -7);
  EXPECT_TRUE(options.command.empty());
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;
  return err;
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(CliTest, AttachedJobsAndDashDash) {
  Options options = Parse({"-j3", "--", "make"});
  EXPECT_EQ(options.jobs, 3);
  EXPECT_EQ(options.command, (Args{"make"}));
  EXPECT_EQ(options.legacy_style, LegacyStyle::kPipe);
  EXPECT_FALSE(options.help);
}

TEST(CliTest, OptionsStopAtTheCommand) {
  Options options = Parse({"-j", "3", "make", "-k", "-j8", "--", "--jobs=2"});
  EXPECT_EQ(options.jobs, 3);
  EXPECT_EQ(options.command, (Args{"make", "-k", "-j8", "--", "--jobs=2"}));
}

TEST(CliTest, LongJobs) {
  Options options = Parse({"--jobs=5", "cmd"});
  EXPECT_EQ(options.jobs, 5);
  EXPECT_EQ(options.command, (Args{"cmd"}));
  EXPECT_EQ(Parse({"--jobs", "12", "cmd"}).jobs, 12);
  EXPECT_EQ(Parse({"-j4096", "cmd"}).jobs, 4096);
  EXPECT_EQ(Parse({"-j1", "cmd"}).jobs, 1);
}

TEST(CliTest, LaterJobsWins) { EXPECT_EQ(Parse({"-j2", "--jobs=9", "cmd"}).jobs, 9); }

TEST(CliTest, LegacyStyle) {
  EXPECT_EQ(Parse({"--legacy-style=fifo", "cmd"}).legacy_style, LegacyStyle::kFifo);
  Options options = Parse({"--legacy-style", "fifo", "cmd", "arg"});
  EXPECT_EQ(options.legacy_style, LegacyStyle::kFifo);
  EXPECT_EQ(options.command, (Args{"cmd", "arg"}));
  EXPECT_EQ(Parse({"--legacy-style=pipe", "cmd"}).legacy_style, LegacyStyle::kPipe);
}

TEST(CliTest, Defaults) {
  Options options = Parse({"cmd"});
  EXPECT_EQ(options.jobs, kDefaultJobs);
  EXPECT_EQ(options.legacy_style, LegacyStyle::kPipe);
  EXPECT_FALSE(options.verbose);
  EXPECT_FALSE(options.help);
  EXPECT_FALSE(options.version);
  EXPECT_FALSE(options.root);
  EXPECT_FALSE(options.jobs_given) << "a default -j must not count as given";
  EXPECT_EQ(options.command, (Args{"cmd"}));

  Options other;
  std::string err;
  ASSERT_TRUE(ParseCommandLine({"cmd"}, 1, &other, &err)) << err;
  EXPECT_EQ(other.jobs, 1);
}

TEST(CliTest, Flags) {
  Options options = Parse({"-v", "--", "-cmd-with-dash"});
  EXPECT_TRUE(options.verbose);
  EXPECT_EQ(options.command, (Args{"-cmd-with-dash"}));
  EXPECT_TRUE(Parse({"--verbose", "cmd"}).verbose);
  EXPECT_EQ(Parse({"-", "x"}).command, (Args{"-", "x"}));
}

TEST(CliTest, RootAndGivenJobs) {
  Options options = Parse({"--root", "-j3", "cmd", "--root"});
  EXPECT_TRUE(options.root);
  EXPECT_TRUE(options.jobs_given);
  EXPECT_EQ(options.command, (Args{"cmd", "--root"})) << "options stop at the command";
  EXPECT_TRUE(Parse({"--jobs=2", "cmd"}).jobs_given);
}

TEST(CliTest, HelpAndVersionNeedNoCommand) {
  Options help = Parse({"--help"});
  EXPECT_TRUE(help.help);
  EXPECT_TRUE(help.command.empty());
  EXPECT_TRUE(Parse({"-h"}).help);
  Options version = Parse({"--version"});
  EXPECT_TRUE(version.version);
  EXPECT_FALSE(version.help);
}

TEST(CliTest, UsageMentionsEveryOption) {
  std::string usage = UsageText();
  for (const char* option : {"-j N", "--jobs", "--legacy-style", "--root", "--no-adapters",
                             "--verbose", "--help", "--version"}) {
    EXPECT_CONTAINS(usage, option);
  }
}

TEST(CliTest, ZeroJobs) {
  std::string err = ParseError({"-j", "0", "x"});
  EXPECT_CONTAINS(err, "'0'");
  EXPECT_CONTAINS(err, "-j8");  // the example of a fix
}

TEST(CliTest, NonNumericJobs) {
  std::string err = ParseError({"-j", "abc", "x"});
  EXPECT_CONTAINS(err, "'abc'");
  EXPECT_CONTAINS(err, "1 to 4096");
  EXPECT_CONTAINS(ParseError({"-j3x", "x"}), "'3x'");
  EXPECT_CONTAINS(ParseError({"--jobs=-2", "x"}), "'-2'");
  EXPECT_CONTAINS(ParseError({"--jobs=", "x"}), "''");
  EXPECT_CONTAINS(ParseError({"-j", "99999999999", "x"}), "'99999999999'");
}

TEST(CliTest, MissingJobsValue) {
  std::string err = ParseError({"-j"});
  EXPECT_CONTAINS(err, "-j needs a value");
  EXPECT_CONTAINS(err, "--help");
  EXPECT_CONTAINS(ParseError({"--legacy-style"}), "--legacy-style needs a value");
}

TEST(CliTest, TooManyJobs) {
  std::string err = ParseError({"-j", "4097", "x"});
  EXPECT_CONTAINS(err, "'4097'");
  EXPECT_CONTAINS(err, "4096");
}

TEST(CliTest, UnknownLegacyStyle) {
  std::string err = ParseError({"--legacy-style=sock", "x"});
  EXPECT_CONTAINS(err, "'sock'");
  EXPECT_CONTAINS(err, "'pipe'");
  EXPECT_CONTAINS(err, "'fifo'");
}

TEST(CliTest, UnknownOption) {
  std::string err = ParseError({"--bogus", "x"});
  EXPECT_CONTAINS(err, "unknown option '--bogus'");
  EXPECT_CONTAINS(err, "--help");
  EXPECT_CONTAINS(ParseError({"--jobsx", "x"}), "unknown option '--jobsx'");
  EXPECT_CONTAINS(ParseError({"--legacy-styles=fifo", "x"}), "unknown option");
}

TEST(CliTest, JobserverAuthIsAnUnknownOptionNotAJobsError) {
  std::string err = ParseError({"--jobserver-auth=1,2", "x"});
  EXPECT_CONTAINS(err, "unknown option '--jobserver-auth=1,2'");
  EXPECT_EQ(err.find("-j needs"), std::string::npos) << err;
}

TEST(CliTest, NoCommand) {
  EXPECT_CONTAINS(ParseError({}), "no command");
  EXPECT_CONTAINS(ParseError({"-j4"}), "no command");
  std::string err = ParseError({"-j4", "--"});
  EXPECT_CONTAINS(err, "no command");
  EXPECT_CONTAINS(err, "usage");
}

}  // namespace
}  // namespace jobbridge
