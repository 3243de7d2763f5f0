// Finding the outer budget: real pipes, FIFOs, files and sockets stand in for
// what an outer make, cargo or socket root leaves in the environment, and a
// map stands in for getenv.
#include "outer_budget.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using Kind = OuterBudget::Kind;

class OuterBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jb-outer-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << strerror(errno);
    dir_ = templ;
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    read_.Reset(fds[0]);
    write_.Reset(fds[1]);
  }

  void TearDown() override {
    for (const char* name : {"budget.json", "s", "fifo"}) unlink((dir_ + "/" + name).c_str());
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << strerror(errno);
  }

  OuterBudget Find() {
    warnings_.clear();
    return FindOuterBudget(
        [&](const char* name) -> const char* {
          auto it = env_.find(name);
          return it == env_.end() ? nullptr : it->second.c_str();
        },
        &warnings_);
  }

  std::string PipeFlags(int r, int w) {
    return "-j4 --jobserver-auth=" + std::to_string(r) + "," + std::to_string(w);
  }

  // A socket at dir_/s; listening unless told otherwise.
  std::string MakeSocket(bool listening) {
    std::string path = dir_ + "/s";
    listener_.Reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    if (listening) {
      EXPECT_EQ(listen(listener_.get(), 8), 0);
    }
    return path;
  }

  bool Warned(const std::string& text) {
    for (const std::string& warning : warnings_) {
      if (warning.find(text) != std::string::npos) return true;
    }
    return false;
  }

  std::string dir_;
  UniqueFd read_, write_, listener_;
  std::map<std::string, std::string> env_;
  std::vector<std::string> warnings_;
};

TEST_F(OuterBudgetTest, EveryOpenJobserverPipeInTheEnvironmentIsListed) {
  int other[2];
  ASSERT_EQ(pipe2(other, O_CLOEXEC), 0);
  UniqueFd other_read(other[0]), other_write(other[1]);
  UniqueFd file(open("/dev/null", O_RDWR | O_CLOEXEC));
  env_["CARGO_MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  env_["MAKEFLAGS"] = PipeFlags(other[0], other[1]);  // a make in between, with its own
  env_["MFLAGS"] = PipeFlags(file.get(), 9999);       // not pipes: the user's, left alone
  std::vector<int> fds = JobserverFdsInEnvironment([&](const char* name) -> const char* {
    auto it = env_.find(name);
    return it == env_.end() ? nullptr : it->second.c_str();
  });
  EXPECT_EQ(fds, (std::vector<int>{read_.get(), write_.get(), other[0], other[1]}));
}

TEST_F(OuterBudgetTest, NothingSetMeansNoOuterBudget) {
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(OuterBudgetTest, FindsAnOuterMakesPipe) {
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kLegacy);
  EXPECT_EQ(outer.legacy,
            (JobserverAuth{JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}));
  EXPECT_EQ(outer.legacy_source, "MAKEFLAGS");
  EXPECT_EQ(outer.jobs, 4);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(OuterBudgetTest, FirstVariableWithAJobserverWinsInJobserverRsOrder) {
  env_["CARGO_MAKEFLAGS"] = "";  // set but no jobserver: the next one is looked at
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  env_["MFLAGS"] = "-j2 --jobserver-auth=fifo:/nowhere";
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kLegacy);
  EXPECT_EQ(outer.legacy_source, "MAKEFLAGS");
}

TEST_F(OuterBudgetTest, ClosedFdsAreSkippedWithAWarningThatNamesTheCause) {
  int r = read_.get(), w = write_.get();
  read_.Reset();
  write_.Reset();
  env_["MAKEFLAGS"] = PipeFlags(r, w);
  env_["MFLAGS"] = PipeFlags(r, w);  // make sets both: one fault, one warning
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("is not open: a make recipe without '+'"))
      << testing::PrintToString(warnings_);
  EXPECT_EQ(warnings_.size(), 1u) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, FdsThatNameOtherFilesAreSkipped) {
  UniqueFd file(open("/dev/null", O_RDWR | O_CLOEXEC));
  env_["MAKEFLAGS"] = PipeFlags(file.get(), file.get());
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("is not a pipe")) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, EndsSwappedAreSkipped) {
  env_["MAKEFLAGS"] = PipeFlags(write_.get(), read_.get());
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("open for writing only")) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, MakeFourFoursDisabledJobserverIsNoJobserver) {
  env_["MAKEFLAGS"] = "-j4 --jobserver-auth=-2,-2";
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(OuterBudgetTest, FifoMustExist) {
  std::string fifo = dir_ + "/fifo";
  env_["MAKEFLAGS"] = "-j3 --jobserver-auth=fifo:" + fifo;
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("is missing")) << testing::PrintToString(warnings_);

  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kLegacy);
  EXPECT_EQ(outer.legacy.fifo_path, fifo);
}

TEST_F(OuterBudgetTest, APoolNamedBothWaysIsJoinedByItsFds) {
  // What fifo style and the ninja shim give: R,W, the path, and make's word.
  std::string r = std::to_string(read_.get()), w = std::to_string(write_.get());
  env_["MAKEFLAGS"] = "-j3 --jobserver-auth=" + r + "," + w +
                      " --jobserver-auth=fifo:/proc/self/fd/" + r + " --jobserver-a=" + r + "," + w;
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kLegacy);
  EXPECT_EQ(outer.legacy,
            (JobserverAuth{JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}));
  EXPECT_EQ(JobserverFdsInEnvironment([&](const char* name) -> const char* {
              return std::string(name) == "MAKEFLAGS" ? env_["MAKEFLAGS"].c_str() : nullptr;
            }),
            (std::vector<int>{read_.get(), write_.get()}));
  EXPECT_TRUE(warnings_.empty()) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, APoolNamedBothWaysIsJoinedByItsPathWhenItsFdsWereClosed) {
  // Python's subprocess closes inherited fds: R,W are gone, the FIFO is not.
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  int r = read_.get(), w = write_.get();
  read_.Reset();
  write_.Reset();
  std::string pair = std::to_string(r) + "," + std::to_string(w);
  env_["MAKEFLAGS"] =
      "-j3 --jobserver-auth=" + pair + " --jobserver-auth=fifo:" + fifo + " --jobserver-a=" + pair;
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kLegacy);
  EXPECT_EQ(outer.legacy, (JobserverAuth{JobserverAuth::Kind::kFifo, -1, -1, fifo}));
  EXPECT_TRUE(warnings_.empty()) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, SocketRootComesFirst) {
  env_["JOBSERVERV2"] = MakeSocket(true);
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kSocket);
  EXPECT_EQ(outer.socket_path, dir_ + "/s");
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(OuterBudgetTest, BrokenSocketRootsFallBackToMakeflags) {
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  env_["JOBSERVERV2"] = dir_ + "/s";
  EXPECT_EQ(Find().kind, Kind::kLegacy);
  EXPECT_TRUE(Warned("no socket at")) << testing::PrintToString(warnings_);

  MakeSocket(false);  // bound, nobody listens: a killed root's leftover
  EXPECT_EQ(Find().kind, Kind::kLegacy);
  EXPECT_TRUE(Warned("nothing listens on")) << testing::PrintToString(warnings_);

  env_["JOBSERVERV2"] = "relative/s";
  EXPECT_EQ(Find().kind, Kind::kLegacy);
  EXPECT_TRUE(Warned("is not an absolute path")) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, PoolBesideASocketRootIsSharedOnlyOnItsWord) {
  env_["JOBSERVERV2"] = MakeSocket(true);
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  EXPECT_EQ(Find().legacy.kind, JobserverAuth::Kind::kNone) << "no budget.json: not shared";

  int other[2];
  ASSERT_EQ(pipe2(other, O_CLOEXEC), 0);
  UniqueFd other_read(other[0]), other_write(other[1]);
  std::string err;
  ASSERT_TRUE(WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, other[0], other[1], ""}, &err))
      << err;
  EXPECT_EQ(Find().legacy.kind, JobserverAuth::Kind::kNone) << "budget.json names another pool";

  ASSERT_TRUE(
      WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}, &err))
      << err;
  OuterBudget outer = Find();
  EXPECT_EQ(outer.kind, Kind::kSocket);
  EXPECT_EQ(outer.legacy.kind, JobserverAuth::Kind::kPipe);
  EXPECT_EQ(outer.jobs, 4);
}

TEST_F(OuterBudgetTest, APoolIsRecognizedInTheFormAShimGaveIt) {
  env_["JOBSERVERV2"] = MakeSocket(true);
  std::string err;
  // The root serves a pipe; the ninja shim names it fifo:/proc/self/fd/R.
  ASSERT_TRUE(
      WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}, &err))
      << err;
  env_["MAKEFLAGS"] = "-j3 --jobserver-auth=fifo:/proc/self/fd/" + std::to_string(read_.get());
  EXPECT_EQ(Find().legacy.kind, JobserverAuth::Kind::kFifo);

  // The root serves a FIFO; the make shim names one read-write fd of it as R,W.
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_TRUE(WriteBudgetFile(dir_, {JobserverAuth::Kind::kFifo, -1, -1, fifo}, &err)) << err;
  UniqueFd both(open(fifo.c_str(), O_RDWR | O_CLOEXEC));
  env_["MAKEFLAGS"] = PipeFlags(both.get(), both.get());
  OuterBudget outer = Find();
  EXPECT_EQ(outer.kind, Kind::kSocket);
  EXPECT_EQ(outer.legacy.kind, JobserverAuth::Kind::kPipe);
}

TEST_F(OuterBudgetTest, APoolTheRootGaveAToolInvocationIsSharedWhileListed) {
  // The root's own pool, in budget.json; MAKEFLAGS names the pool it gave
  // the make this jobbridge runs under (its token pipe: R; its returns: W).
  int own[2], returns[2];
  ASSERT_EQ(pipe2(own, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(returns, O_CLOEXEC), 0);
  UniqueFd own_read(own[0]), own_write(own[1]), returns_read(returns[0]), returns_write(returns[1]);
  std::string err;
  ASSERT_TRUE(WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, own[0], own[1], ""}, &err)) << err;
  env_["JOBSERVERV2"] = MakeSocket(true);
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), returns[1]);
  EXPECT_EQ(Find().legacy.kind, JobserverAuth::Kind::kNone) << "not listed: another budget's";

  std::string entry;
  ASSERT_TRUE(ListInvocationPool(dir_, write_.get(), 4242, &entry, &err)) << err;
  EXPECT_EQ(entry.rfind(dir_ + "/invocation-pool-", 0), 0u) << entry;
  OuterBudget outer = Find();
  EXPECT_EQ(outer.kind, Kind::kSocket);
  EXPECT_EQ(outer.legacy, (JobserverAuth{JobserverAuth::Kind::kPipe, read_.get(), returns[1], ""}));
  EXPECT_TRUE(warnings_.empty()) << testing::PrintToString(warnings_);
  // The ninja shim's form of the same pool.
  env_["MAKEFLAGS"] = "-j4 --jobserver-auth=fifo:/proc/self/fd/" + std::to_string(read_.get());
  EXPECT_EQ(Find().legacy.kind, JobserverAuth::Kind::kFifo);

  std::string again;
  EXPECT_FALSE(ListInvocationPool(dir_, read_.get(), 4243, &again, &err)) << "listed twice";
  EXPECT_NE(err.find("cannot list an invocation's pool"), std::string::npos) << err;

  // Its root killed, the listing stays and the pool, which nobody refills, is
  // still recognized as that root's: not joined.
  listener_.Reset();
  unlink(env_["JOBSERVERV2"].c_str());
  MakeSocket(false);
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), returns[1]);
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("it is the pool of that socket root")) << testing::PrintToString(warnings_);

  UnlistInvocationPool(entry);  // the invocation ended
  struct stat info {};
  EXPECT_NE(lstat(entry.c_str(), &info), 0);
  EXPECT_EQ(Find().kind, Kind::kLegacy) << "an unlisted pool is just a pool";
}

TEST_F(OuterBudgetTest, BudgetFileFieldByField) {
  std::string err;
  ASSERT_TRUE(
      WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}, &err))
      << err;
  std::ifstream in(dir_ + "/budget.json");
  std::stringstream text;
  text << in.rdbuf();
  auto doc = nlohmann::json::parse(text.str(), nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << text.str();
  struct stat info {};
  ASSERT_EQ(fstat(read_.get(), &info), 0);
  EXPECT_EQ(doc, (nlohmann::json{
                     {"version", 1},
                     {"legacy", std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino)}}));
}

TEST_F(OuterBudgetTest, ThePoolOfADeadRootIsNotJoined) {
  std::string err;
  ASSERT_TRUE(
      WriteBudgetFile(dir_, {JobserverAuth::Kind::kPipe, read_.get(), write_.get(), ""}, &err))
      << err;
  env_["JOBSERVERV2"] = MakeSocket(false);  // killed: the file stays, nobody listens
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  EXPECT_EQ(Find().kind, Kind::kNone);
  EXPECT_TRUE(Warned("it is the pool of that socket root")) << testing::PrintToString(warnings_);
}

TEST_F(OuterBudgetTest, AJobOfABuildIsToldByItsEnvironment) {
  auto inside = [&] {
    return StartedInsideABuild([&](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    });
  };
  EXPECT_FALSE(inside());
  env_["MAKEFLAGS"] = "-k -- V=1";  // make flags, no jobserver: a user's setting
  EXPECT_FALSE(inside());
  env_["MAKEFLAGS"] = "-j4 --jobserver-auth=3,4";  // even when unusable
  EXPECT_TRUE(inside());
  env_.clear();
  env_["MAKELEVEL"] = "1";  // make -j1 passes no jobserver
  EXPECT_TRUE(inside());
  env_["MAKELEVEL"] = "";
  env_["JOBSERVERV2"] = "/nowhere";
  EXPECT_TRUE(inside());
  env_.clear();
  env_["ROBUST_JOBSERVER"] = "sysvsem:1";
  EXPECT_TRUE(inside());
}

// A set of `count` semaphores of this user's, removed at the end of scope.
class TestSet {
 public:
  explicit TestSet(int count) : id_(semget(IPC_PRIVATE, count, IPC_CREAT | 0600)) {}
  ~TestSet() { Remove(); }
  void Remove() { semctl(id_, 0, IPC_RMID); }
  std::string Name() const { return "sysvsem:" + std::to_string(id_); }
  int id() const { return id_; }

 private:
  int id_;
};

// The order clients use (docs/PROTOCOL.md): the socket, the semaphore, make.
TEST_F(OuterBudgetTest, TheRobustJobserverComesBetweenTheSocketAndMakeflags) {
  TestSet set(1);
  ASSERT_GE(set.id(), 0) << strerror(errno);
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  env_["ROBUST_JOBSERVER"] = set.Name();
  OuterBudget outer = Find();
  ASSERT_EQ(outer.kind, Kind::kSysvsem);
  EXPECT_EQ(outer.semaphore_set, set.id());
  // A semaphore root names no pool: MAKEFLAGS is another budget's.
  EXPECT_EQ(outer.legacy.kind, JobserverAuth::Kind::kNone);
  EXPECT_NE(outer.Describe().find(set.Name()), std::string::npos);
  EXPECT_TRUE(warnings_.empty()) << testing::PrintToString(warnings_);
  env_["ROBUST_JOBSERVER"] = "";  // empty is unset
  EXPECT_EQ(Find().kind, Kind::kLegacy);
  env_["ROBUST_JOBSERVER"] = set.Name();
  env_["JOBSERVERV2"] = MakeSocket(true);
  EXPECT_EQ(Find().kind, Kind::kSocket);
}

// Each fault: one warning naming it, and the next variable is tried.
TEST_F(OuterBudgetTest, AnUnusableRobustJobserverIsOneWarningNamingTheFault) {
  TestSet removed(1), pair(2);
  removed.Remove();
  env_["MAKEFLAGS"] = PipeFlags(read_.get(), write_.get());
  for (auto [value, fault] : std::vector<std::pair<std::string, std::string>>{
           {"sysvsem", "it is 'sysvsem'; it must be METHOD:VALUE, such as sysvsem:ID"},
           {"win32pipe:x", "it names the method 'win32pipe'"},
           {"sysvsem:-3", "it names the semaphore set '-3'; it must be a decimal id"},
           {removed.Name(), "which does not exist (its server is gone)"},
           {pair.Name(), "of 2 semaphores; the Robust Jobserver's set has exactly one"}}) {
    env_["ROBUST_JOBSERVER"] = value;
    EXPECT_EQ(Find().kind, Kind::kLegacy) << value;
    ASSERT_EQ(warnings_.size(), 1u) << testing::PrintToString(warnings_);
    EXPECT_EQ(warnings_[0].rfind("ignoring ROBUST_JOBSERVER: ", 0), 0u) << warnings_[0];
    EXPECT_TRUE(Warned(fault)) << value << ": " << warnings_[0];
  }
}

}  // namespace
}  // namespace jobbridge
