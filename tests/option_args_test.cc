// Every command line of jobbridge takes an option's value in every form
// make and the GNU tools take (util/option_args.h): "--name=V", "--name V",
// "-jV", "-j V", and says so when the value is missing.
#include "util/option_args.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "status_cli.h"

namespace jobbridge {
namespace {

TEST(OptionArgsTest, EachFormGivesTheValue) {
  struct Case {
    std::vector<std::string> args;
    std::string name;
    std::string value;
    size_t next;  // where the reader stands after the value
  };
  for (const Case& c : std::vector<Case>{{{"--trace=t.json"}, "--trace", "t.json", 0},
                                         {{"--trace", "t.json"}, "--trace", "t.json", 1},
                                         {{"--trace="}, "--trace", "", 0},
                                         {{"-j8"}, "-j", "8", 0},
                                         {{"-j", "8"}, "-j", "8", 1}}) {
    size_t i = 0;
    std::string value, err;
    ASSERT_TRUE(IsOption(c.args[0], c.name)) << c.args[0];
    ASSERT_TRUE(OptionValue(c.args, &i, c.name, "jobbridge --help", &value, &err)) << err;
    EXPECT_EQ(value, c.value) << c.args[0];
    EXPECT_EQ(i, c.next) << c.args[0];
  }
}

TEST(OptionArgsTest, AMissingValueIsNamed) {
  size_t i = 0;
  std::string value, err;
  EXPECT_FALSE(OptionValue({"--timeout"}, &i, "--timeout", "jobbridge stop --help", &value, &err));
  EXPECT_EQ(err, "--timeout needs a value; see jobbridge stop --help");
  EXPECT_FALSE(IsOption("--timeouts", "--timeout"));
  EXPECT_FALSE(IsOption("--pid", "--pi"));
  EXPECT_TRUE(IsOption("-j4", "-j"));
}

TEST(OptionArgsTest, StatusTakesPidAndSocketInEveryForm) {
  StatusOptions options;
  std::string err;
  ASSERT_TRUE(ParseStatusCommandLine({"--pid=42"}, &options, &err)) << err;
  EXPECT_EQ(options.pid, 42);
  options = {};
  ASSERT_TRUE(ParseStatusCommandLine({"--socket=/run/x/control.sock", "--json"}, &options, &err))
      << err;
  EXPECT_EQ(options.socket, "/run/x/control.sock");
  EXPECT_TRUE(options.json);
  options = {};
  ASSERT_TRUE(ParseStatusCommandLine({"--pid", "7"}, &options, &err)) << err;
  EXPECT_EQ(options.pid, 7);
  EXPECT_FALSE(ParseStatusCommandLine({"--pid"}, &options, &err));
  EXPECT_EQ(err, "status: --pid needs a value; see jobbridge status --help");
  EXPECT_FALSE(ParseStatusCommandLine({"--pid"}, &options, &err, "stop"));
  EXPECT_EQ(err, "stop: --pid needs a value; see jobbridge stop --help");
}

}  // namespace
}  // namespace jobbridge
