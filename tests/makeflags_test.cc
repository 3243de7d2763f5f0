// MAKEFLAGS as real makes, cargo and ninja write it: every row below is a
// string one of them produces (or a malformed one a broken parent could pass).
#include "core/makeflags.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace jobbridge {
namespace {

using Kind = JobserverAuth::Kind;

struct ParseCase {
  const char* name;
  const char* text;
  bool ok;
  Kind kind = Kind::kNone;
  int read_fd = -1;
  int write_fd = -1;
  const char* fifo_path = "";
  bool dry_run = false;
  std::optional<int> jobs = std::nullopt;
};

const ParseCase kParseCases[] = {
    {"make43", " -j3 --jobserver-auth=3,4", true, Kind::kPipe, 3, 4, "", false, 3},
    {"cargo", "-j --jobserver-fds=3,4 --jobserver-auth=3,4", true, Kind::kPipe, 3, 4, "", false, 0},
    {"make_before_42", "--jobserver-fds=5,6", true, Kind::kPipe, 5, 6},
    {"make44_fifo", "-j4 --jobserver-auth=fifo:/tmp/GMfifo1234", true, Kind::kFifo, -1, -1,
     "/tmp/GMfifo1234", false, 4},
    {"dry_run", "kn -j2 --jobserver-auth=3,4", true, Kind::kPipe, 3, 4, "", true, 2},
    {"keep_going_only", "k -j2", true, Kind::kNone, -1, -1, "", false, 2},
    {"mflags_dry_run", "-kns -j3 --jobserver-auth=3,4", true, Kind::kPipe, 3, 4, "", true, 3},
    {"mflags_no_dry_run", "-k -j3", true, Kind::kNone, -1, -1, "", false, 3},
    {"bare_j_first_is_not_flags", "-j --jobserver-auth=3,4", true, Kind::kPipe, 3, 4, "", false, 0},
    {"negative_jobs_is_not_a_jobs_word", "-j-3", true},
    {"n_after_dashdash", "-- n=1", true},
    {"n_assignment_after_flags", "k -- n=1", true},
    {"last_wins_disabled", "--jobserver-auth=3,4 --jobserver-auth=-2,-2", true, Kind::kDisabled, -2,
     -2},
    {"last_wins_pipe", "--jobserver-auth=fifo:/a --jobserver-auth=7,8", true, Kind::kPipe, 7, 8},
    {"last_wins_fifo", "--jobserver-fds=3,4 --jobserver-auth=fifo:/b", true, Kind::kFifo, -1, -1,
     "/b"},
    {"empty", "", true},
    {"blank", " \t ", true},
    {"jobs_long", "--jobs=7", true, Kind::kNone, -1, -1, "", false, 7},
    {"escaped_space", "--jobserver-auth=fifo:/tmp/a\\ b", true, Kind::kFifo, -1, -1, "/tmp/a b"},
    {"escaped_backslash", "--jobserver-auth=fifo:/tmp/a\\\\b", true, Kind::kFifo, -1, -1,
     "/tmp/a\\b"},
    {"assignment_first", "CFLAGS=-O2", true},
    {"assignment_with_n_first", "name=n -j2", true, Kind::kNone, -1, -1, "", false, 2},
    {"jobserver_word_after_dashdash", "-j2 -- X=--jobserver-auth=3,4", true, Kind::kNone, -1, -1,
     "", false, 2},
    {"bad_letters", "--jobserver-auth=abc", false},
    {"bad_empty_fifo", "--jobserver-auth=fifo:", false},
    {"bad_missing_write", "--jobserver-auth=3,", false},
    {"bad_missing_read", "--jobserver-auth=,4", false},
    {"bad_empty", "--jobserver-auth=", false},
    {"bad_trailing", "--jobserver-auth=3,4x", false},
    {"bad_fds", "--jobserver-fds=x,y", false},
    {"bad_after_good", "--jobserver-auth=3,4 --jobserver-auth=3", false},
};

// Keeps the test names that ctest shows readable.
void PrintTo(const ParseCase& c, std::ostream* os) { *os << c.name; }

class ParseMakeflagsTest : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseMakeflagsTest, Parses) {
  const ParseCase& c = GetParam();
  Makeflags flags;
  flags.jobs = 99;  // must be replaced on success
  std::string err;
  bool ok = ParseMakeflags(c.text, &flags, &err);
  ASSERT_EQ(ok, c.ok) << "'" << c.text << "': " << err;
  if (!ok) {
    // The message names the bad word so a user can find it.
    EXPECT_FALSE(err.empty());
    EXPECT_NE(err.find("--jobserver-"), std::string::npos) << err;
    return;
  }
  EXPECT_EQ(flags.auth.kind, c.kind);
  EXPECT_EQ(flags.auth.read_fd, c.read_fd);
  EXPECT_EQ(flags.auth.write_fd, c.write_fd);
  EXPECT_EQ(flags.auth.fifo_path, c.fifo_path);
  EXPECT_EQ(flags.dry_run, c.dry_run);
  EXPECT_EQ(flags.jobs, c.jobs);
}

INSTANTIATE_TEST_SUITE_P(RealStrings, ParseMakeflagsTest, ::testing::ValuesIn(kParseCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(MakeflagsTest, WordsKeepTheirEscapes) {
  Makeflags flags;
  std::string err;
  ASSERT_TRUE(ParseMakeflags(" k  -j2\t--jobserver-auth=fifo:/x\\ y -- A=1", &flags, &err)) << err;
  std::vector<std::string> expected = {"k", "-j2", "--jobserver-auth=fifo:/x\\ y", "--", "A=1"};
  EXPECT_EQ(flags.words, expected);
}

TEST(MakeflagsTest, FailedParseLeavesOutputAlone) {
  Makeflags flags;
  flags.jobs = 5;
  flags.words = {"sentinel"};
  std::string err;
  EXPECT_FALSE(ParseMakeflags("-j3 --jobserver-auth=3,", &flags, &err));
  EXPECT_NE(err.find("--jobserver-auth=3,"), std::string::npos) << err;
  EXPECT_EQ(flags.jobs, 5);
  EXPECT_EQ(flags.words, std::vector<std::string>{"sentinel"});
}

// --- SelectMakeflags --------------------------------------------------------

std::optional<MakeflagsSource> SelectFrom(const std::map<std::string, std::string>& env) {
  return SelectMakeflags([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(SelectMakeflagsTest, CargoMakeflagsWinsOverTheOthers) {
  auto source = SelectFrom({{"CARGO_MAKEFLAGS", "-j2"}, {"MAKEFLAGS", "-j3"}, {"MFLAGS", "-j4"}});
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->variable, "CARGO_MAKEFLAGS");
  EXPECT_EQ(source->value, "-j2");
}

TEST(SelectMakeflagsTest, MakeflagsWinsOverMflags) {
  auto source = SelectFrom({{"MAKEFLAGS", "-j3"}, {"MFLAGS", "-j4"}, {"OTHER", "-j5"}});
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->variable, "MAKEFLAGS");
  EXPECT_EQ(source->value, "-j3");
}

TEST(SelectMakeflagsTest, MflagsIsTheLastResort) {
  auto source = SelectFrom({{"MFLAGS", "-j4 --jobserver-auth=3,4"}});
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->variable, "MFLAGS");
  EXPECT_EQ(source->value, "-j4 --jobserver-auth=3,4");
}

TEST(SelectMakeflagsTest, EmptyButSetVariableStillWins) {
  auto source = SelectFrom({{"CARGO_MAKEFLAGS", ""}, {"MAKEFLAGS", "-j3 --jobserver-auth=3,4"}});
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->variable, "CARGO_MAKEFLAGS");
  EXPECT_EQ(source->value, "");
}

TEST(SelectMakeflagsTest, NoneSetGivesNothing) {
  EXPECT_FALSE(SelectFrom({}).has_value());
  EXPECT_FALSE(SelectFrom({{"GNUMAKEFLAGS", "-j2"}, {"MAKELEVEL", "1"}}).has_value());
}

// --- WordsWithoutJobserver --------------------------------------------------

TEST(WordsWithoutJobserverTest, RemovesParallelismKeepsTheRest) {
  std::vector<std::string> words = {"k",
                                    "-j",
                                    "-j8",
                                    "--jobs=3",
                                    "--jobs",
                                    "--jobserver-auth=3,4",
                                    "--jobserver-fds=3,4",
                                    "--jobserver-auth=fifo:/tmp/f",
                                    "-k",
                                    "--no-print-directory",
                                    "-Otarget",
                                    "--",
                                    "CC=gcc",
                                    "-j9",
                                    "X=--jobserver-auth=5,6"};
  std::vector<std::string> expected = {"k",      "-k",  "--no-print-directory",  "-Otarget", "--",
                                       "CC=gcc", "-j9", "X=--jobserver-auth=5,6"};
  EXPECT_EQ(WordsWithoutJobserver(words), expected);
}

TEST(WordsWithoutJobserverTest, KeepsWordsThatOnlyLookAlike) {
  std::vector<std::string> words = {"-jx", "--jobsx", "--jobserver-style=fifo"};
  EXPECT_EQ(WordsWithoutJobserver(words), words);
  EXPECT_TRUE(WordsWithoutJobserver({}).empty());
}

// --- FormatAuth / FormatMakeflags -------------------------------------------

TEST(FormatMakeflagsTest, FormatsAuth) {
  EXPECT_EQ(FormatAuth({Kind::kPipe, 3, 4, ""}), "3,4");
  EXPECT_EQ(FormatAuth({Kind::kDisabled, -2, -2, ""}), "-2,-2");
  EXPECT_EQ(FormatAuth({Kind::kFifo, -1, -1, "/run/jb/pool.fifo"}), "fifo:/run/jb/pool.fifo");
  EXPECT_EQ(FormatAuth({}), "");
}

TEST(FormatMakeflagsTest, ExactOutput) {
  EXPECT_EQ(FormatMakeflags({}, 4, {Kind::kPipe, 3, 4, ""}), "-j4 --jobserver-auth=3,4");
  EXPECT_EQ(FormatMakeflags({"k"}, 8, {Kind::kFifo, -1, -1, "/tmp/jb/pool.fifo"}),
            "k -j8 --jobserver-auth=fifo:/tmp/jb/pool.fifo");
  EXPECT_EQ(FormatMakeflags({"k", "--no-print-directory"}, 2, {}), "k --no-print-directory -j2");
  // A joined budget whose size is not known: a bare -j, as make writes for -j.
  EXPECT_EQ(FormatMakeflags({}, 0, {Kind::kPipe, 3, 4, ""}), "-j --jobserver-auth=3,4");
}

TEST(FormatMakeflagsTest, AssignmentsStayLast) {
  std::vector<std::string> kept = {"k", "--", "CC=gcc", "CFLAGS=-O2\\ -g"};
  EXPECT_EQ(FormatMakeflags(kept, 3, {Kind::kPipe, 5, 6, ""}),
            "k -j3 --jobserver-auth=5,6 -- CC=gcc CFLAGS=-O2\\ -g");
  EXPECT_EQ(FormatMakeflags({"--", "A=1"}, 1, {}), "-j1 -- A=1");
}

TEST(FormatMakeflagsTest, RoundTripKeepsAuthJobsAndAssignments) {
  const JobserverAuth auths[] = {
      {Kind::kPipe, 3, 4, ""},
      {Kind::kPipe, 0, 1023, ""},
      {Kind::kFifo, -1, -1, "/run/user/1000/jobbridge-AbC123/pool.fifo"},
      {Kind::kDisabled, -2, -2, ""},
      {},
  };
  for (const JobserverAuth& auth : auths) {
    for (int jobs : {1, 7, 4096}) {
      // Start from what a parent make passed, replace its jobserver, reparse.
      Makeflags parent;
      std::string err;
      ASSERT_TRUE(ParseMakeflags("kn -j2 --jobserver-auth=8,9 -- V=1", &parent, &err)) << err;
      std::string text = FormatMakeflags(WordsWithoutJobserver(parent.words), jobs, auth);
      SCOPED_TRACE(text);
      Makeflags back;
      ASSERT_TRUE(ParseMakeflags(text, &back, &err)) << err;
      EXPECT_EQ(back.auth, auth);
      EXPECT_EQ(back.jobs, jobs);
      EXPECT_TRUE(back.dry_run);
      ASSERT_GE(back.words.size(), 2u);
      EXPECT_EQ(back.words.back(), "V=1");
      EXPECT_EQ(back.words[back.words.size() - 2], "--");
    }
  }
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

TEST(WithJobserverTest, ReplacesEveryJobserverWordInPlace) {
  Makeflags flags;
  std::string err;
  ASSERT_TRUE(ParseMakeflags(
      "k -j --jobserver-fds=3,4 --jobserver-auth=3,4 -- V=--jobserver-auth=1,2", &flags, &err))
      << err;
  JobserverAuth fifo{JobserverAuth::Kind::kFifo, -1, -1, "/proc/self/fd/3"};
  EXPECT_EQ(WithJobserver(flags.words, fifo),
            "k -j --jobserver-auth=fifo:/proc/self/fd/3 -- V=--jobserver-auth=1,2");
  Makeflags back;
  ASSERT_TRUE(ParseMakeflags(WithJobserver(flags.words, fifo), &back, &err)) << err;
  EXPECT_EQ(back.auth, fifo);
}

TEST(WithJobserverTest, LeavesWordsWithoutAJobserverAlone) {
  JobserverAuth pipe{JobserverAuth::Kind::kPipe, 5, 5, ""};
  EXPECT_EQ(WithJobserver({"k", "-j4"}, pipe), "k -j4");
  EXPECT_EQ(WithJobserver({}, pipe), "");
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

const JobserverAuth kPipe34{JobserverAuth::Kind::kPipe, 3, 4, ""};
const JobserverAuth kFifo{JobserverAuth::Kind::kFifo, -1, -1, "/run/jb/pool.fifo"};

TEST(JobserverWordsTest, OneNameIsOneWord) {
  EXPECT_EQ(JobserverWords({kPipe34, {}}), std::vector<std::string>{"--jobserver-auth=3,4"});
  EXPECT_EQ(JobserverWords({{}, kFifo}),
            std::vector<std::string>{"--jobserver-auth=fifo:/run/jb/pool.fifo"});
  EXPECT_TRUE(JobserverWords({}).empty());
}

// Each client finds its own form in one MAKEFLAGS: gcc the first
// --jobserver-auth=, ninja and jobserver-rs the last, make the last of
// --jobserver-auth/--jobserver-fds/--jobserver-a (its getopt abbreviation).
TEST(JobserverWordsTest, BothNamesServeEveryReader) {
  std::string text = FormatMakeflagsForPool({"k"}, 3, {kPipe34, kFifo});
  EXPECT_EQ(text,
            "k -j3 --jobserver-auth=3,4 --jobserver-auth=fifo:/run/jb/pool.fifo "
            "--jobserver-a=3,4");
  size_t first = text.find("--jobserver-auth=");
  EXPECT_EQ(text.substr(first, 20), "--jobserver-auth=3,4");  // gcc 12's strstr
  Makeflags flags;
  std::string err;
  ASSERT_TRUE(ParseMakeflags(text, &flags, &err)) << err;
  EXPECT_EQ(flags.auth, kFifo);         // ninja, jobserver-rs
  EXPECT_EQ(flags.make_auth, kPipe34);  // make
  EXPECT_EQ(flags.jobs, 3);
  // Rewritten for make alone, every jobserver word goes, R,W stays.
  EXPECT_EQ(WithJobserver(flags.words, kPipe34), "k -j3 --jobserver-auth=3,4");
  EXPECT_EQ(WordsWithoutJobserver(flags.words), std::vector<std::string>{"k"});
}

TEST(JobserverWordsTest, TheMakeOnlyWordIsAJobserverWord) {
  Makeflags flags;
  std::string err;
  ASSERT_TRUE(ParseMakeflags(" -j2 --jobserver-auth=fifo:/x --jobserver-a=5,6", &flags, &err));
  EXPECT_EQ(flags.auth.kind, JobserverAuth::Kind::kFifo);
  EXPECT_EQ(flags.make_auth, (JobserverAuth{JobserverAuth::Kind::kPipe, 5, 6, ""}));
  EXPECT_FALSE(ParseMakeflags("--jobserver-a=5", &flags, &err));
  EXPECT_NE(err.find("--jobserver-a=5"), std::string::npos) << err;
  // Words that only begin alike are not jobserver words.
  ASSERT_TRUE(ParseMakeflags("--jobserver-auth=3,4 --jobserver-ab=1,2", &flags, &err)) << err;
  EXPECT_EQ(flags.make_auth, kPipe34);
}

TEST(WithJobserverTest, PutsEveryNameWhereTheFirstJobserverWordWas) {
  std::vector<std::string> words = {"k", "--jobserver-fds=3,4", "-j3", "--jobserver-auth=3,4"};
  EXPECT_EQ(WithJobserver(words, JobserverWords({kPipe34, kFifo})),
            "k --jobserver-auth=3,4 --jobserver-auth=fifo:/run/jb/pool.fifo --jobserver-a=3,4 -j3");
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// Found by fuzz/makeflags_fuzzer.cc: a user's MAKEFLAGS ending in a lone
// backslash swallowed the space before the words jobbridge wrote after it,
// and with it -jN.
TEST(MakeflagsFuzzRegressionTest, ATrailingBackslashDoesNotSwallowTheNextWord) {
  Makeflags flags;
  std::string err;
  ASSERT_TRUE(ParseMakeflags("k X=a\\", &flags, &err)) << err;
  std::string text = FormatMakeflags(WordsWithoutJobserver(flags.words), 3,
                                     {JobserverAuth::Kind::kPipe, 3, 4, ""});
  Makeflags back;
  ASSERT_TRUE(ParseMakeflags(text, &back, &err)) << err;
  EXPECT_EQ(back.jobs, 3) << text;
  EXPECT_EQ(back.auth, (JobserverAuth{JobserverAuth::Kind::kPipe, 3, 4, ""})) << text;
}

}  // namespace
}  // namespace jobbridge
