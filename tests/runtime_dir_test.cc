// The runtime folder: where it goes (XDG_RUNTIME_DIR, TMPDIR, /tmp), that it
// is private, that failures say which variable to change, and that it is gone
// afterwards. Each test runs in its own process (gtest_discover_tests), and
// still puts the environment back as it found it.
#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime_dir-posix.h"

namespace jobbridge {
namespace {

bool Exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

void WriteFile(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
  ASSERT_EQ(write(fd, "x", 1), 1);
  close(fd);
}

class RuntimeDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"XDG_RUNTIME_DIR", "TMPDIR"}) {
      const char* value = std::getenv(name);
      saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
    }
    std::string templ = ::testing::TempDir() + "/jobbridge-rtdir-test-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << templ << ": " << strerror(errno);
    base_ = templ;
    unsetenv("XDG_RUNTIME_DIR");
    setenv("TMPDIR", base_.c_str(), 1);
  }

  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
    // Whatever a test made in its base folder; RuntimeDir must leave none.
    auto remove_one = [](const char* path, const struct stat*, int, FTW*) { return remove(path); };
    EXPECT_EQ(nftw(base_.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS), 0) << base_;
  }

  // A fresh folder inside base_ to serve as a parent.
  std::string MakeParent(const std::string& name) {
    std::string path = base_ + "/" + name;
    EXPECT_EQ(mkdir(path.c_str(), 0700), 0) << path << ": " << strerror(errno);
    return path;
  }

  void ExpectPrivateFolderIn(const RuntimeDir& dir, const std::string& parent) {
    const std::string prefix = parent + "/jobbridge-";
    ASSERT_EQ(dir.path().rfind(prefix, 0), 0u) << dir.path();
    EXPECT_EQ(dir.path().size(), prefix.size() + 6) << dir.path();
    struct stat st {};
    ASSERT_EQ(lstat(dir.path().c_str(), &st), 0) << strerror(errno);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(st.st_uid, geteuid());
    EXPECT_EQ(dir.Join("pool.fifo"), dir.path() + "/pool.fifo");
  }

  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  std::string base_;
};

TEST_F(RuntimeDirTest, CreatesPrivateFolderInTmpdir) {
  RuntimeDir dir;
  EXPECT_TRUE(dir.path().empty());
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  ExpectPrivateFolderIn(dir, base_);
}

TEST_F(RuntimeDirTest, XdgRuntimeDirWinsOverTmpdir) {
  std::string xdg = MakeParent("xdg");
  std::string tmp = MakeParent("tmp");
  setenv("XDG_RUNTIME_DIR", xdg.c_str(), 1);
  setenv("TMPDIR", tmp.c_str(), 1);
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  ExpectPrivateFolderIn(dir, xdg);
}

TEST_F(RuntimeDirTest, EmptyXdgRuntimeDirCountsAsUnset) {
  std::string tmp = MakeParent("tmp");
  setenv("XDG_RUNTIME_DIR", "", 1);
  setenv("TMPDIR", tmp.c_str(), 1);
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  ExpectPrivateFolderIn(dir, tmp);
}

TEST_F(RuntimeDirTest, FallsBackToTmp) {
  setenv("TMPDIR", "", 1);
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  ExpectPrivateFolderIn(dir, "/tmp");
}

TEST_F(RuntimeDirTest, TwoFoldersHaveDifferentNames) {
  RuntimeDir a, b;
  std::string err;
  ASSERT_TRUE(a.Create(&err)) << err;
  ASSERT_TRUE(b.Create(&err)) << err;
  EXPECT_NE(a.path(), b.path());
}

TEST_F(RuntimeDirTest, MissingTmpdirNamesFolderAndVariable) {
  std::string missing = base_ + "/does-not-exist";
  setenv("TMPDIR", missing.c_str(), 1);
  RuntimeDir dir;
  std::string err;
  EXPECT_FALSE(dir.Create(&err));
  EXPECT_TRUE(dir.path().empty());
  EXPECT_NE(err.find(missing), std::string::npos) << err;
  EXPECT_NE(err.find("TMPDIR"), std::string::npos) << err;
  EXPECT_EQ(err.find("XDG_RUNTIME_DIR"), std::string::npos) << err;
}

TEST_F(RuntimeDirTest, UnusableXdgRuntimeDirNamesFolderAndVariable) {
  // A regular file as the parent: refused even for root, unlike chmod 0500.
  std::string file = base_ + "/a-file";
  WriteFile(file);
  setenv("XDG_RUNTIME_DIR", file.c_str(), 1);
  RuntimeDir dir;
  std::string err;
  EXPECT_FALSE(dir.Create(&err));
  EXPECT_TRUE(dir.path().empty());
  EXPECT_NE(err.find(file), std::string::npos) << err;
  EXPECT_NE(err.find("XDG_RUNTIME_DIR"), std::string::npos) << err;
}

TEST_F(RuntimeDirTest, RemoveDeletesNestedFolders) {
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  const std::string path = dir.path();
  ASSERT_EQ(mkdir(dir.Join("sub").c_str(), 0700), 0);
  WriteFile(dir.Join("sub/file"));
  ASSERT_TRUE(dir.Remove(&err)) << err;
  EXPECT_FALSE(Exists(path));
}

TEST_F(RuntimeDirTest, CreateTwiceIsRefusedAndKeepsTheFirstFolder) {
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  const std::string first = dir.path();
  EXPECT_FALSE(dir.Create(&err));
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(dir.path(), first);
}

TEST_F(RuntimeDirTest, RemoveDeletesFolderWithFilesInIt) {
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  const std::string path = dir.path();
  WriteFile(dir.Join("pool.fifo"));
  WriteFile(dir.Join("socket"));
  WriteFile(dir.Join(".hidden"));
  ASSERT_TRUE(dir.Remove(&err)) << err;
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(dir.path().empty());
  EXPECT_TRUE(dir.Remove(&err)) << err;  // a second Remove has nothing to do
}

TEST_F(RuntimeDirTest, RemoveToleratesAFolderAlreadyGone) {
  RuntimeDir dir;
  std::string err;
  ASSERT_TRUE(dir.Create(&err)) << err;
  ASSERT_EQ(unlink(dir.Join("owner").c_str()), 0);
  ASSERT_EQ(rmdir(dir.path().c_str()), 0);
  EXPECT_TRUE(dir.Remove(&err)) << err;
  EXPECT_TRUE(dir.path().empty());
}

TEST_F(RuntimeDirTest, DestructorRemovesTheFolder) {
  std::string path;
  {
    RuntimeDir dir;
    std::string err;
    ASSERT_TRUE(dir.Create(&err)) << err;
    path = dir.path();
    WriteFile(dir.Join("pool.fifo"));
    ASSERT_TRUE(Exists(path));
  }
  EXPECT_FALSE(Exists(path));
}

TEST_F(RuntimeDirTest, MoveHandsOverOwnership) {
  std::string path;
  {
    RuntimeDir from;
    std::string err;
    ASSERT_TRUE(from.Create(&err)) << err;
    path = from.path();
    RuntimeDir to(std::move(from));
    EXPECT_EQ(to.path(), path);
    EXPECT_TRUE(from.path().empty());  // NOLINT(bugprone-use-after-move)
    {
      RuntimeDir moved_out(std::move(to));
      EXPECT_EQ(moved_out.path(), path);
    }
    EXPECT_FALSE(Exists(path));
  }
  EXPECT_FALSE(Exists(path));
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// A pid that named a process a moment ago and names none now.
pid_t DeadPid() {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

class SweepTest : public RuntimeDirTest {
 protected:
  std::string FakeFolder(const std::string& name, const std::string& owner) {
    std::string path = base_ + "/" + name;
    EXPECT_EQ(mkdir(path.c_str(), 0700), 0) << path << ": " << strerror(errno);
    if (!owner.empty()) {
      std::FILE* file = std::fopen((path + "/owner").c_str(), "w");
      std::fputs(owner.c_str(), file);
      std::fclose(file);
    }
    return path;
  }

  static std::vector<std::string> SweptPaths() {
    std::vector<std::string> paths;
    for (const RuntimeDir::Swept& swept : RuntimeDir::SweepStale()) {
      EXPECT_EQ(swept.semaphore, -1) << swept.path;
      paths.push_back(swept.path);
    }
    return paths;
  }
};

TEST_F(SweepTest, RemovesOnlyFoldersWhoseOwnerIsGone) {
  RuntimeDir live;
  std::string err;
  ASSERT_TRUE(live.Create(&err)) << err;  // this process: alive
  std::string dead = FakeFolder("jobbridge-dead01", std::to_string(DeadPid()) + " 12345\n");
  std::string reused = FakeFolder("jobbridge-reuse1", std::to_string(getpid()) + " 1\n");
  std::string making = FakeFolder("jobbridge-new001", "");  // no owner yet: being made
  std::string other = FakeFolder("not-jobbridge-x", std::to_string(DeadPid()) + " 1\n");

  std::vector<std::string> removed = SweptPaths();
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{dead, reused}));
  EXPECT_FALSE(Exists(dead));
  EXPECT_FALSE(Exists(reused));  // the pid lives, but it is another process now
  EXPECT_TRUE(Exists(making));
  EXPECT_TRUE(Exists(other));
  EXPECT_TRUE(Exists(live.path()));
  rmdir(making.c_str());
  unlink((other + "/owner").c_str());
  rmdir(other.c_str());
}

// The caretaker is named beside the bridge from the start: a sweep in the
// moment after the bridge was killed, before the caretaker woke up, removed
// the folder of a build still running (its FIFO with it).
TEST_F(SweepTest, KeepsAFolderWhileEitherOwnerLives) {
  std::string dead = std::to_string(DeadPid()) + " 12345";
  std::string gone_both = FakeFolder("jobbridge-both01", dead + " " + dead + "\n");
  RuntimeDir helper_alive;
  std::string err;
  ASSERT_TRUE(helper_alive.Create(&err)) << err;
  // Made by this process; now this process stands in for the caretaker, and
  // a dead pid for the bridge that made it.
  pid_t self = getpid();
  helper_alive.AddOwner(self);
  std::string line;
  {
    std::ifstream owner(helper_alive.Join("owner"));
    std::getline(owner, line);
  }
  std::string caretaker_half = line.substr(line.find(' ', line.find(' ') + 1) + 1);
  std::FILE* file = std::fopen(helper_alive.Join("owner").c_str(), "w");
  std::fputs((dead + " " + caretaker_half + "\n").c_str(), file);
  std::fclose(file);

  EXPECT_EQ(SweptPaths(), std::vector<std::string>{gone_both});
  EXPECT_TRUE(Exists(helper_alive.path())) << "swept while its caretaker lives";
  EXPECT_FALSE(Exists(gone_both));
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// A set of one semaphore, as SemaphoreEndpoint makes it; removed by the
// destructor if the test left it.
struct TestSet {
  int id = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
  ~TestSet() {
    if (id >= 0) semctl(id, 0, IPC_RMID);
  }
  bool Exists() const { return semctl(id, 0, GETVAL) >= 0; }
};

// A folder made by a jobbridge whose owners are gone: a dead pid as bridge
// and caretaker, and the set `semaphore` noted as the bridge notes its own.
std::string KilledBridgeFolder(RuntimeDir* dir, int semaphore) {
  std::string err;
  EXPECT_TRUE(dir->Create(&err)) << err;
  EXPECT_TRUE(dir->NoteSemaphore(semaphore, &err)) << err;
  std::string dead = std::to_string(DeadPid()) + " 12345";
  std::FILE* file = std::fopen(dir->Join("owner").c_str(), "w");
  std::fputs((dead + " " + dead + "\n").c_str(), file);
  std::fclose(file);
  return dir->path();
}

// Killed with its caretaker, a root left its set: blocked clients waited for
// ever and `ipcs -s` kept it until the next boot.
TEST_F(RuntimeDirTest, SweepRemovesTheSemaphoreSetAKilledBridgeNamed) {
  TestSet set;
  ASSERT_GE(set.id, 0) << strerror(errno);
  RuntimeDir dir;
  std::string path = KilledBridgeFolder(&dir, set.id);
  std::vector<RuntimeDir::Swept> swept = RuntimeDir::SweepStale();
  EXPECT_EQ(swept, (std::vector<RuntimeDir::Swept>{{path, set.id}}));
  EXPECT_FALSE(set.Exists()) << "the set is left";
}

// An id is reused once its set is gone: a set made later under the same id
// is someone else's, and stays.
TEST_F(RuntimeDirTest, SweepLeavesASetThatIsNoLongerTheOneNoted) {
  TestSet set;
  ASSERT_GE(set.id, 0) << strerror(errno);
  RuntimeDir dir;
  std::string path = KilledBridgeFolder(&dir, set.id);
  std::FILE* file = std::fopen(dir.Join("semaphore").c_str(), "w");  // another creation time
  std::fputs((std::to_string(set.id) + " 1\n").c_str(), file);
  std::fclose(file);
  std::vector<RuntimeDir::Swept> swept = RuntimeDir::SweepStale();
  EXPECT_EQ(swept, (std::vector<RuntimeDir::Swept>{{path, -1}}));
  EXPECT_TRUE(set.Exists()) << "removed a set that is not the one noted";
}

}  // namespace
}  // namespace jobbridge
